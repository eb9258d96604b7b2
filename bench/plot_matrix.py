"""Plots of the benchmark matrix (bench/matrix.py --out FILE) as PNG files.

Owns: two figures drawn from the JSON lines, one bar group per cell, the echo floor
measured in the same run beside each:

* ``matrix-latency.png``: event -> recs p50, p99 and max (log scale), the floor's p99,
  and issue 14's limit (10 ms at 1,000 events/s); a cell that lost events is drawn
  at the top of the axis and marked "lost";
* ``matrix-cpu.png``: server CPU ms per event, liverec and the floor; below it, the
  server's RSS per idle socket, liverec and the floor;

and, on stdout, the table of docs/benchmarks.md (Markdown).

When a cell appears more than once in the file, its last line is drawn. Needs
matplotlib (`pip install -e '.[bench]'`).

    python bench/plot_matrix.py results.jsonl                  # writes docs/matrix-*.png
    python bench/plot_matrix.py results.jsonl --out-dir /somewhere --title "quiet machine"
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

DOCS = Path(__file__).resolve().parent.parent / "docs"
LIMIT_MS = 10.0  # issue 14: p99 at 1,000 events/s


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The last line of each cell, in the order cells first appear."""
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            if "p99_ms" in row:  # lines written before matrix.py reported it at the top
                row.setdefault("runq_wait", row["liverec"].get("server_runq_wait_share"))
            rows[row["cell"]] = row
    return list(rows.values())


def finite(value: Any, cap: float) -> float:
    """A value to draw: missing -> nan, infinite (lost events) -> the axis cap."""
    if value is None:
        return math.nan
    return cap if math.isinf(value) else float(value)


def plot_latency(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    rows = [r for r in rows if "p99_ms" in r]
    if not rows:
        return
    seen = [v for r in rows for v in (r["max_ms"], r["echo_p99_ms"]) if math.isfinite(v)]
    cap = max([LIMIT_MS * 10, *seen]) * 2
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(9.0, 0.7 * len(rows) + 4), 4.8))
    w = 0.2
    series = [
        ("p50_ms", "liverec p50", "#9ecae1"),
        ("p99_ms", "liverec p99", "#3182bd"),
        ("max_ms", "liverec max", "#08519c"),
        ("echo_p99_ms", "echo floor p99", "#bdbdbd"),
    ]
    for j, (key, label, color) in enumerate(series):
        values = [finite(r[key], cap) for r in rows]
        ax.bar([i + (j - 1.5) * w for i in x], values, w, label=label, color=color)
    for i, r in enumerate(rows):
        if r.get("lost"):
            ax.text(
                i, cap * 1.1, f"lost {r['lost']}", ha="center", va="bottom", fontsize=7, color="red"
            )
    ax.axhline(LIMIT_MS, color="red", linestyle="--", linewidth=1, label="limit: p99 10 ms")
    ax.set_yscale("log")
    ax.set_ylabel("event → recs, ms (log)")
    ax.set_xticks(list(x), [r["cell"] for r in rows], rotation=40, ha="right", fontsize=8)
    ax.set_title(f"Event → recs latency per cell{title}")
    ax.set_ylim(top=cap * 3)  # room for the "lost" marks
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_cpu(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    if not rows:
        return
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(9.0, 0.7 * len(rows) + 4), 7.0))
    x = list(range(len(rows)))
    names = [r["cell"] for r in rows]
    w = 0.38
    for ax, key, echo_key, label in (
        (top, "server_cpu_ms_per_event", "echo_cpu_ms_per_event", "server CPU ms per event"),
        (bottom, "kib_per_socket", "echo_kib_per_socket", "server RSS KiB per idle socket"),
    ):
        mine = [finite(r.get(key), math.nan) for r in rows]
        floor = [finite(r.get(echo_key), math.nan) for r in rows]
        ax.bar([i - w / 2 for i in x], mine, w, label="liverec", color="#3182bd")
        ax.bar([i + w / 2 for i in x], floor, w, label="echo floor", color="#bdbdbd")
        ax.set_ylabel(label)
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    top.set_title(f"Server CPU and memory per cell{title}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def fmt(value: Any, spec: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return spec.format(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The current-figures table of docs/benchmarks.md."""
    cols = [  # (header, key, format)
        ("p50 / p99 / max ms", ("p50_ms", "p99_ms", "max_ms"), "{:.1f}"),
        ("echo p99 ms", ("echo_p99_ms",), "{:.1f}"),
        ("p99 / echo", ("p99_vs_echo",), "{:.1f}x"),
        ("CPU ms/event (echo)", ("server_cpu_ms_per_event", "echo_cpu_ms_per_event"), "{:.3f}"),
        ("CPU / echo", ("cpu_vs_echo",), "{:.1f}x"),
        ("KiB/socket (echo)", ("kib_per_socket", "echo_kib_per_socket"), "{:.1f}"),
        ("lost", ("lost",), "{:.0f}"),
        ("loop runq wait", ("runq_wait",), "{:.0%}"),
        ("done", ("done",), "{}"),
    ]
    lines = ["| cell | " + " | ".join(h for h, _, _ in cols) + " |"]
    lines.append("|---" * (len(cols) + 1) + "|")
    for r in rows:
        cells = []
        for _, keys, spec in cols:
            values = [fmt(r.get(k), spec) for k in keys]
            if len(keys) == 2 and "echo" in keys[1]:
                cells.append(f"{values[0]} ({values[1]})")
            else:
                cells.append(" / ".join(values))
        if "error" in r:  # the cell's server did not start or a phase timed out
            cells = [*(["–"] * (len(cols) - 1)), f"failed: {r['error']}"]
        lines.append(f"| {r['cell']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="PNG plots of bench/matrix.py's JSON lines")
    parser.add_argument("results", help="the --out file of bench/matrix.py")
    parser.add_argument("--out-dir", default=str(DOCS), help="where the PNG files go")
    parser.add_argument("--title", default="", help="added to each figure's title")
    args = parser.parse_args()
    rows = read_rows(Path(args.results))
    if not rows:
        raise SystemExit(f"{args.results}: no cells")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = f" ({args.title})" if args.title else ""
    plot_latency(rows, out / "matrix-latency.png", title)
    plot_cpu(rows, out / "matrix-cpu.png", title)
    print(f"wrote {out / 'matrix-latency.png'} and {out / 'matrix-cpu.png'} ({len(rows)} cells)")
    print(markdown(rows))


if __name__ == "__main__":
    main()
