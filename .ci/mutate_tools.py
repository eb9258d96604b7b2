"""Helpers for `bash .ci/dev mutate` (cosmic-ray sessions).

python .ci/mutate_tools.py skip-annotations SESSION   mark mutants inside type
    annotations as skipped: with `from __future__ import annotations` (every module
    of ours) annotations are never evaluated, so `str | None` -> `str + None` is an
    equivalent mutant by construction
python .ci/mutate_tools.py only-functions SESSION NAME,...   mark mutants outside
    the named functions (and what they nest) as skipped: for a module of which only
    one path is mutation-tested (the store's durability path)
python .ci/mutate_tools.py score SESSION              print the score and survivors
python .ci/mutate_tools.py survivors SESSION          the survivors, one per line
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions, (line, column), of every annotation in `source`."""
    tree = ast.parse(source)
    assert any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    ), "annotations are evaluated in this module: mutants in them are not equivalent"
    spans = []
    for node in ast.walk(tree):
        found: list[ast.expr | None] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        elif isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        for ann in found:
            if ann is not None and ann.end_lineno is not None and ann.end_col_offset is not None:
                spans.append(((ann.lineno, ann.col_offset), (ann.end_lineno, ann.end_col_offset)))
    return spans


def skip_annotations(db: WorkDB) -> int:
    spans: dict[Path, list[tuple[tuple[int, int], tuple[int, int]]]] = {}
    skipped = 0
    for item in db.pending_work_items:
        for mutation in item.mutations:
            path = Path(mutation.module_path)
            if path not in spans:
                spans[path] = annotation_spans(path.read_text())
            start = tuple(mutation.start_pos)
            if any(lo <= start < hi for lo, hi in spans[path]):
                db.set_result(
                    item.job_id,
                    WorkResult(output="in a type annotation", worker_outcome=WorkerOutcome.SKIPPED),
                )
                skipped += 1
                break
    return skipped


OUTSIDE = "outside the functions tested"


def function_spans(source: str, names: set[str]) -> list[tuple[int, int]]:
    """(first, last) lines of every function or method called one of `names`."""
    spans = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            spans.append((first, node.end_lineno or node.lineno))
    found = {
        n.name
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    missing = names - found
    assert not missing, f"no such function: {sorted(missing)}"
    return spans


def only_functions(db: WorkDB, names: set[str]) -> int:
    spans: dict[Path, list[tuple[int, int]]] = {}
    skipped = 0
    for item in db.pending_work_items:
        mutation = item.mutations[0]
        path = Path(mutation.module_path)
        if path not in spans:
            spans[path] = function_spans(path.read_text(), names)
        line = mutation.start_pos[0]
        if not any(lo <= line <= hi for lo, hi in spans[path]):
            db.set_result(
                item.job_id, WorkResult(output=OUTSIDE, worker_outcome=WorkerOutcome.SKIPPED)
            )
            skipped += 1
    return skipped


def score(db: WorkDB) -> str:
    killed = survived = skipped = outside = pending = 0
    survivors = []
    results = dict(db.results)
    for item in db.work_items:
        result = results.get(item.job_id)
        if result is None:
            pending += 1
        elif result.worker_outcome == WorkerOutcome.SKIPPED and result.output == OUTSIDE:
            outside += 1
        elif result.worker_outcome == WorkerOutcome.SKIPPED:
            skipped += 1
        elif result.test_outcome == TestOutcome.SURVIVED:
            survived += 1
            m = item.mutations[0]
            survivors.append(f"  line {m.start_pos[0]}: {m.operator_name} #{m.occurrence}")
        else:
            killed += 1
    tried = killed + survived
    pct = 100.0 * killed / tried if tried else 0.0
    lines = [
        f"killed {killed} of {tried} mutants ({pct:.1f}%); survived {survived}; "
        f"skipped {skipped} (in type annotations)"
        + (f", {outside} (outside the functions tested)" if outside else "")
        + f"; pending {pending}",
        *survivors,
    ]
    return "\n".join(lines)


def survivors(db: WorkDB) -> str:
    """One line per surviving mutant: module path, operator, occurrence, line."""
    results = dict(db.results)
    lines = []
    for item in db.work_items:
        result = results.get(item.job_id)
        if result is not None and result.test_outcome == TestOutcome.SURVIVED:
            m = item.mutations[0]
            lines.append(f"{m.module_path} {m.operator_name} {m.occurrence} {m.start_pos[0]}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    command, session, *rest = argv
    with use_db(session, WorkDB.Mode.open) as db:
        if command == "only-functions":
            names = set(rest[0].split(","))
            count = only_functions(db, names)
            print(f"[mutate] {count} mutants outside {len(names)} functions skipped")
        elif command == "skip-annotations":
            print(f"[mutate] {skip_annotations(db)} mutants in type annotations skipped")
        elif command == "score":
            print(score(db))
        elif command == "survivors":
            print(survivors(db))
        else:
            raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
