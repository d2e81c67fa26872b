"""RESULTS.md and its machine-readable twin results.json, written together by code.

Rows follow ../shared/RESULTS-FORMAT.md: ``system``, ``set`` and metrics (``wer``,
``frame_accuracy``, ``accuracy`` in percent; ``errors`` as a count) plus free fields.
A recipe may hold several tables (one per experiment); rows are merged by (table, system, set)
so that each stage can update its own rows without touching the others. Every read-modify-write
of the two files holds an exclusive lock (``.results.lock`` beside them), so concurrent stages
(parallel ``asr-kd report``s) neither lose rows nor leave the two files disagreeing.
"""
from __future__ import annotations

import datetime
import platform
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from asr_kd.utils import Pathlike, exclusive_lock, read_json, write_json, write_text

_KEY = ("table", "system", "set")
LOCK_NAME = ".results.lock"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def load_results(recipe_dir: Pathlike) -> dict:
    path = Path(recipe_dir) / "results.json"
    if path.exists():
        return read_json(path)
    return {"recipe": Path(recipe_dir).resolve().name, "rows": []}


def paper_note(paper_json: Pathlike, key: str, **values) -> str:
    """The note of table ``key`` in a recipe's ``paper.json``: its template (``notes``) filled in
    with the paper's reference numbers (``reference``) and ``values`` (numbers of this run)."""
    paper = read_json(paper_json)
    if key not in paper.get("notes", {}):
        raise KeyError(f"{paper_json} has no note {key!r} (it has {sorted(paper.get('notes', {}))})")
    return paper["notes"][key].format(**paper.get("reference", {}), **values)


def update_results(
    recipe_dir: Pathlike,
    rows: Iterable[dict],
    table: str,
    notes: Optional[Dict[str, str]] = None,
    columns: Optional[Sequence[str]] = None,
    finalize: Optional[Callable[[List[dict]], None]] = None,
) -> dict:
    """Merge ``rows`` into ``recipe_dir``/results.json under ``table`` and rewrite RESULTS.md.

    ``notes`` maps a table name to free text printed under its heading (e.g. the paper's numbers).
    ``columns`` fixes the column order of that table in RESULTS.md (default: first-seen order).
    ``finalize`` gets the table's merged rows (under the lock) and may change them in place, e.g.
    to fill columns computed across rows.
    """
    recipe_dir = Path(recipe_dir)
    with exclusive_lock(recipe_dir / LOCK_NAME):
        return _update(recipe_dir, rows, table, notes, columns, finalize)


def remove_rows(recipe_dir: Pathlike, table: str, system: str, set_name: Optional[str] = None) -> int:
    """Remove the rows of ``system`` (on ``set_name``, or on every set) from ``table`` (e.g. of a
    configuration the recipe no longer runs) and rewrite RESULTS.md; returns how many went."""
    recipe_dir = Path(recipe_dir)
    with exclusive_lock(recipe_dir / LOCK_NAME):
        results = load_results(recipe_dir)
        keep = [r for r in results["rows"] if not (r.get("table") == table and r.get("system") == system
                                                   and set_name in (None, r.get("set")))]
        removed = len(results["rows"]) - len(keep)
        results["rows"] = keep
        write_json(recipe_dir / "results.json", results)
        write_text(recipe_dir / "RESULTS.md", render_markdown(results))
    return removed


def _update(recipe_dir: Path, rows, table, notes, columns, finalize) -> dict:
    results = load_results(recipe_dir)
    new = []
    for r in rows:
        r = dict(r)
        r["table"] = table
        new.append(r)
    # Replace rows in place (same table, system, set), append the others after their table's rows,
    # so tables keep their order in RESULTS.md however often a stage is re-run.
    pending = {tuple(r.get(k) for k in _KEY): r for r in new}
    rows = [pending.pop(tuple(r.get(k) for k in _KEY), r) for r in results["rows"]]
    for key, r in pending.items():
        last = max((i for i, x in enumerate(rows) if x.get("table") == table), default=len(rows) - 1)
        rows.insert(last + 1, r)
    results["rows"] = rows
    if finalize is not None:
        finalize([r for r in rows if r.get("table") == table])
    meta = results.setdefault("meta", {})
    meta.setdefault("tables", {})
    if notes:
        meta.setdefault("notes", {}).update(notes)
    if columns:
        meta["tables"][table] = list(columns)
    meta["updated"] = datetime.datetime.now().isoformat(timespec="seconds")
    meta["host"] = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    write_json(recipe_dir / "results.json", results)
    write_text(recipe_dir / "RESULTS.md", render_markdown(results))
    return results


def render_markdown(results: dict) -> str:
    meta = results.get("meta", {})
    lines = [
        f"# Results: {results['recipe']}",
        "",
        "Written by code (`asr_kd.results`) together with `results.json`; do not edit by hand.",
        "Each row names the exact command that produced it.",
        "",
    ]
    tables: Dict[str, List[dict]] = {}
    for r in results["rows"]:
        tables.setdefault(r.get("table", "results"), []).append(r)
    for name, rows in tables.items():
        lines += [f"## {name}", ""]
        note = meta.get("notes", {}).get(name)
        if note:
            lines += [note, ""]
        cols = list(meta.get("tables", {}).get(name) or [])
        for r in rows:
            for k in r:
                if k not in cols and k not in ("table", "command"):
                    cols.append(k)
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        commands = []
        for r in rows:
            c = r.get("command")
            if c and c not in commands:
                commands.append(c)
        if commands:
            lines += ["", "Produced by:", ""]
            lines += [f"    {c}" for c in commands]
        lines.append("")
    return "\n".join(lines)
