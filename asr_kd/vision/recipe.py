"""The image recipes' reference numbers and table notes, kept in ``recipes/<name>/paper.json``.
(Their flags come from config dataclasses: :mod:`asr_kd.config`.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd.utils import read_json

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def paper_note(recipe: str, key: str, **values: Any) -> str:
    """The note of table ``key`` in ``recipes/<recipe>/paper.json``: its template filled in with
    the paper's reference numbers (``reference``) and ``values`` (numbers of this run)."""
    paper = read_json(RECIPES_DIR / recipe / "paper.json")
    return paper["notes"][key].format(**paper["reference"], **values)
