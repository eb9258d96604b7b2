"""Session files: reading the supported layouts into `Sessions` (data.py), and writing.

Owns: `load_sessions` (and `detect_format`, which sniffs a file's layout),
`write_sessions`, and the parsing helpers they share (`parse_times`, `cut_streams`).
Its ~450 lines are one concern, the layouts of the table below: each reader is a
few dozen lines that share the sniffing, column-picking and time-parsing helpers.

Layouts read by `load_sessions` (`fmt=`; "auto" sniffs the first line):

| fmt | layout | time |
|---|---|---|
| `sessionrec` | TSV with header `SessionId ItemId Time` (session-rec, GRU4Rec) | epoch s |
| `yoochoose` | `clicks.dat`: no header, `session,ISO timestamp,item,category` | ISO -> s |
| `diginetica` | `train-item-views.csv`: `session_id;user_id;item_id;timeframe;eventdate` | below |
| `retailrocket` | `events.csv`: `timestamp,visitorid,event,itemid,transactionid` | ms -> s |
| `lines` | one session per line, item ids separated by spaces, no time | none |
| `liverec` | liverec's event-log export, JSONL `id session_id action item_id ts ...` | epoch s |
| `csv`, `tsv` | any delimited file with a header; columns named by the caller | s or ISO |
| `jsonl` | one JSON object per line; fields named by the caller | s or ISO |

Diginetica has a day (`eventdate`) and `timeframe`, a per-session offset in
milliseconds that orders the events of a session; the event time used here is
`eventdate` (UTC midnight, epoch s) + `timeframe` / 1000. RetailRocket has visitor
streams, not sessions: a visitor's events are cut into sessions wherever two
consecutive events are more than `gap_s` seconds apart (default 30 minutes); the
session id is `<visitorid>:<n>`. Every file may be gzip-compressed.

Sessions are ordered as data.py's `build_sessions` orders them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .data import DataError, Sessions, build_sessions

FORMATS = (
    "auto",
    "sessionrec",
    "yoochoose",
    "diginetica",
    "retailrocket",
    "lines",
    "liverec",
    "csv",
    "tsv",
    "jsonl",
)
DEFAULT_GAP_S = 1800.0

_SESSION_NAMES = ("sessionid", "session_id", "session", "sid")
_ITEM_NAMES = ("itemid", "item_id", "item", "iid", "product_id")
_TIME_NAMES = ("time", "timestamp", "ts", "eventtime", "event_time", "date")
_ACTION_NAMES = ("action", "event", "eventtype", "event_type", "type")


def _open_text(path: Path) -> IO[str]:
    try:
        with path.open("rb") as raw:
            magic = raw.read(2)
        if magic == b"\x1f\x8b":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        return path.open("r", encoding="utf-8", newline="")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _first_line(path: Path) -> str:
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    return line.rstrip("\r\n")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return ""


_YOOCHOOSE = re.compile(r"^[^,]+,\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?Z?,[^,]+(,.*)?$")


def detect_format(path: str | Path) -> str:
    """The layout of a file, from its first non-empty line (see the module docstring)."""
    line = _first_line(Path(path))
    if not line:
        raise DataError(f"{path}: empty file")
    if line.lstrip().startswith("{"):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: first line is not JSON: {exc}") from exc
        if isinstance(obj, dict) and {"session_id", "item_id", "action", "ts"} <= obj.keys():
            return "liverec"
        return "jsonl"
    low = line.strip().lower()
    if low.startswith("session_id;user_id;item_id;timeframe;eventdate"):
        return "diginetica"
    if low.startswith("timestamp,visitorid,event,itemid"):
        return "retailrocket"
    if _YOOCHOOSE.match(line.strip()):
        return "yoochoose"
    cols = [c.strip().lower() for c in line.split("\t")]
    if len(cols) > 1 and "sessionid" in cols and "itemid" in cols:
        return "sessionrec"
    if not any(c in line for c in ",;\t|"):
        _check_item_ids(Path(path))
        return "lines"
    return "csv"


def _check_item_ids(path: Path, sample: int = 1000) -> None:
    """Raise DataError unless the file looks like one session of item ids per line: at
    least half of the words of its first lines carry a digit (ids), unlike prose."""
    words = ids = 0
    with _open_text(path) as f:
        for n, line in enumerate(f):
            if n >= sample:
                break
            for token in line.split():
                words += 1
                ids += any(c.isdigit() for c in token)
    if words and ids < words / 2:
        raise DataError(
            f"{path}: does not look like sessions (one session of item ids per line): "
            f"{100 * ids / words:.0f}% of its words look like ids; give --format lines "
            "to read it that way anyway"
        )


def _sniff_sep(header: str) -> str:
    counts = {s: header.count(s) for s in ("\t", ";", ",", "|")}
    sep = max(counts, key=lambda s: counts[s])
    if counts[sep] == 0:
        raise DataError("cannot tell the column separator (tab, ';', ',' or '|')")
    return sep


def _pick(
    names: Sequence[str], wanted: str | int | None, guesses: Sequence[str], what: str
) -> int | None:
    """Column number of `wanted` (a name or a 0-based number), else the first guess."""
    low = [n.strip().lower() for n in names]
    if wanted is not None:
        if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
            col = int(wanted)
            if col >= len(names):
                raise DataError(f"{what} column {col} out of range ({len(names)} columns)")
            return col
        if wanted.strip().lower() in low:
            return low.index(wanted.strip().lower())
        raise DataError(f"no {what} column {wanted!r} in header {list(names)}")
    for g in guesses:
        if g in low:
            return low.index(g)
    return None


def parse_times(values: Sequence[str], scale: float = 1.0) -> np.ndarray:
    """float64 epoch seconds from numbers (times `scale`) or ISO-8601 strings; NaN
    for empty and NA values."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.float64)
    try:
        return np.array(values, dtype=np.float64) * scale
    except ValueError:
        pass
    out = np.full(len(values), np.nan)
    iso: list[str] = []
    where: list[int] = []
    for i, v in enumerate(values):
        v = v.strip()
        if not v or v.upper() in ("NA", "NAN", "NULL", "NONE"):
            continue
        try:
            out[i] = float(v) * scale
        except ValueError:
            iso.append(v[:-1] if v.endswith("Z") else v.split("+")[0])
            where.append(i)
    if iso:
        try:
            stamps = np.array(iso, dtype="datetime64[us]").astype(np.int64)
        except ValueError as exc:
            raise DataError(f"unreadable time value: {exc}") from exc
        out[np.array(where, dtype=np.int64)] = stamps / 1e6
    return out


def _read_delimited(
    path: Path,
    sep: str | None,
    session_col: str | int | None,
    item_col: str | int | None,
    time_col: str | int | None,
    action_col: str | int | None,
    actions: Collection[str] | None,
) -> tuple[list[str], list[str], list[str] | None]:
    with _open_text(path) as f:
        first = f.readline()
        if not first:
            raise DataError(f"{path}: empty file")
        sep = sep or _sniff_sep(first)
        names = next(csv.reader([first.rstrip("\r\n")], delimiter=sep))
        si = _pick(names, session_col, _SESSION_NAMES, "session")
        ii = _pick(names, item_col, _ITEM_NAMES, "item")
        ti = _pick(names, time_col, _TIME_NAMES, "time")
        ai = _pick(names, action_col, _ACTION_NAMES, "action")
        if si is None or ii is None:
            raise DataError(
                f"{path}: cannot find the session and item columns in {names}; "
                "name them (session_col=, item_col=)"
            )
        sessions: list[str] = []
        items: list[str] = []
        times: list[str] = []
        keep = set(actions) if actions is not None else None
        need = max(c for c in (si, ii, ti, ai) if c is not None)
        for lineno, row in enumerate(csv.reader(f, delimiter=sep), start=2):
            if not row:
                continue
            if len(row) <= need:
                raise DataError(f"{path}:{lineno}: {len(row)} columns, expected {need + 1}")
            if keep is not None and ai is not None and row[ai] not in keep:
                continue
            sessions.append(row[si])
            items.append(row[ii])
            if ti is not None:
                times.append(row[ti])
    return sessions, items, (times if ti is not None else None)


def _read_yoochoose(path: Path) -> Sessions:
    sessions: list[str] = []
    items: list[str] = []
    stamps: list[str] = []
    with _open_text(path) as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) < 3:
                raise DataError(f"{path}:{lineno}: expected session,timestamp,item[,category]")
            sessions.append(row[0])
            stamps.append(row[1])
            items.append(row[2])
    return build_sessions(sessions, items, parse_times(stamps))


def _read_diginetica(path: Path) -> Sessions:
    sessions: list[str] = []
    items: list[str] = []
    frames: list[str] = []
    dates: list[str] = []
    with _open_text(path) as f:
        names = [n.strip().lower() for n in f.readline().rstrip("\r\n").split(";")]
        try:
            si, ii, fi, di = (
                names.index(c) for c in ("session_id", "item_id", "timeframe", "eventdate")
            )
        except ValueError as exc:
            raise DataError(f"{path}: not a Diginetica item-views header: {names}") from exc
        need = max(si, ii, fi, di)
        for lineno, row in enumerate(csv.reader(f, delimiter=";"), start=2):
            if not row:
                continue
            if len(row) <= need:
                raise DataError(f"{path}:{lineno}: {len(row)} columns, expected {need + 1}")
            sessions.append(row[si])
            items.append(row[ii])
            frames.append(row[fi])
            dates.append(row[di])
    try:
        days = np.array(dates, dtype="datetime64[D]").astype(np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: unreadable eventdate: {exc}") from exc
    return build_sessions(sessions, items, days * 86400.0 + parse_times(frames) / 1000.0)


def _read_retailrocket(path: Path, gap_s: float, actions: Collection[str] | None) -> Sessions:
    visitors, items, stamps = _read_delimited(
        path, ",", "visitorid", "itemid", "timestamp", "event", actions
    )
    t = parse_times(stamps or [], scale=1e-3)
    return cut_streams(visitors, items, t, gap_s)


def cut_streams(
    users: Sequence[str], items: Sequence[str], times: np.ndarray, gap_s: float = DEFAULT_GAP_S
) -> Sessions:
    """Sessions from per-user event streams: a new session starts wherever a user's
    consecutive events are more than `gap_s` seconds apart. Ids are `<user>:<n>`."""
    user_arr = np.array(users, dtype=str) if len(users) else np.array([], dtype="<U1")
    order = np.lexsort((times, user_arr))
    u, t = user_arr[order], times[order]
    new = np.ones(len(u), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | ((t[1:] - t[:-1]) > gap_s)
    first_of_user = np.ones(len(u), dtype=bool)
    first_of_user[1:] = u[1:] != u[:-1]
    counter = np.cumsum(new)
    base = np.maximum.accumulate(np.where(first_of_user, counter, 0))
    n = (counter - base + 1).astype(np.int64)
    keys = np.char.add(np.char.add(u, ":"), n.astype(str)) if len(u) else u
    item_arr = np.array(items, dtype=str)[order] if len(u) else np.array([], dtype="<U1")
    return build_sessions(keys.tolist(), item_arr.tolist(), t)


def _read_lines(path: Path) -> Sessions:
    with _open_text(path) as f:
        rows = [line.split() for line in f]
    rows = [r for r in rows if r]
    return Sessions.from_lists(rows)


def _read_jsonl(
    path: Path,
    session_col: str,
    item_col: str,
    time_col: str | None,
    action_col: str | None,
    actions: Collection[str] | None,
    dedupe_col: str | None = None,
) -> Sessions:
    sessions: list[str] = []
    items: list[str] = []
    times: list[str] = []
    seen: set[tuple[str, str]] = set()
    keep = set(actions) if actions is not None else None
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj: Any = json.loads(line)
                s, i = obj[session_col], obj[item_col]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{lineno}: bad record ({exc})") from exc
            if i is None or s is None:
                continue
            if keep is not None and action_col is not None and obj.get(action_col) not in keep:
                continue
            if dedupe_col is not None and obj.get(dedupe_col) is not None:
                key = (str(s), str(obj[dedupe_col]))
                if key in seen:
                    continue
                seen.add(key)
            sessions.append(str(s))
            items.append(str(i))
            if time_col is not None:
                v = obj.get(time_col)
                times.append("" if v is None else str(v))
    t = parse_times(times) if time_col is not None else None
    return build_sessions(sessions, items, t)


def _col(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def load_sessions(
    path: str | Path,
    fmt: str = "auto",
    session_col: str | int | None = None,
    item_col: str | int | None = None,
    time_col: str | int | None = None,
    action_col: str | int | None = None,
    sep: str | None = None,
    *,
    actions: Collection[str] | None = None,
    gap_s: float = DEFAULT_GAP_S,
) -> Sessions:
    """Read a session file in any supported layout (see the module docstring).

    `actions`, when given, keeps only events whose action column holds one of these
    values (RetailRocket: `view`, `addtocart`, `transaction`; liverec: the actions of
    `liverec.types.ACTIONS`); by default every event is kept. `gap_s` is the
    inactivity gap that cuts RetailRocket visitor streams into sessions.
    Raises `DataError` for a missing file or an unreadable layout."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"no such file: {p}")
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(p)
        if session_col is not None and fmt not in ("jsonl", "liverec"):
            fmt = "csv"  # named columns: read the file as a plain delimited table
    try:
        if fmt == "lines":
            return _read_lines(p)
        if fmt == "yoochoose":
            return _read_yoochoose(p)
        if fmt == "diginetica":
            return _read_diginetica(p)
        if fmt == "retailrocket":
            return _read_retailrocket(p, gap_s, actions)
        if fmt == "liverec":
            return _read_jsonl(
                p,
                _col(session_col) or "session_id",
                _col(item_col) or "item_id",
                _col(time_col) or "ts",
                _col(action_col) or "action",
                actions,
                dedupe_col="id",
            )
        if fmt == "jsonl":
            if session_col is None or item_col is None:
                raise DataError(
                    f"{p}: name the session and item fields of these JSON lines: "
                    "--session-col NAME --item-col NAME [--time-col NAME] "
                    "(session_col=, item_col=, time_col= in Python)"
                )
            return _read_jsonl(
                p, str(session_col), str(item_col), _col(time_col), _col(action_col), actions
            )
        if fmt == "sessionrec":
            session_col, item_col = session_col or "SessionId", item_col or "ItemId"
            time_col, sep = time_col or "Time", sep or "\t"
        if fmt == "tsv":
            sep = sep or "\t"
        sessions, items, times = _read_delimited(
            p, sep, session_col, item_col, time_col, action_col, actions
        )
        return build_sessions(sessions, items, None if times is None else parse_times(times))
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, csv.Error) as exc:
        raise DataError(f"{p}: cannot read as {fmt}: {exc}") from exc


def write_sessions(sessions: Sessions, path: str | Path, fmt: str = "tsv") -> None:
    """Write `SessionId\\tItemId\\tTime` ("tsv"; NaN times written as `nan`) or one
    session per line ("lines"). A `.gz` suffix compresses."""
    p = Path(path)
    if fmt not in ("tsv", "lines"):
        raise DataError(f"cannot write format {fmt!r}; one of tsv, lines")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "wt", encoding="utf-8", newline="") as f:
        if fmt == "lines":
            for s in range(sessions.n_sessions):
                f.write(" ".join(sessions.session(s).tolist()) + "\n")
            return
        f.write("SessionId\tItemId\tTime\n")
        sid = np.repeat(sessions.session_ids, sessions.lengths()).tolist()
        for s, i, t in zip(sid, sessions.items.tolist(), sessions.times.tolist(), strict=True):
            f.write(f"{s}\t{i}\t{t!r}\n")
