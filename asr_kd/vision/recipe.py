"""The image recipes' reference numbers and table notes, kept in ``recipes/<name>/paper.json``.
(Their flags come from config dataclasses: :mod:`asr_kd.config`.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from asr_kd import results

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def paper_note(recipe: str, key: str, **values: Any) -> str:
    """The note of table ``key`` in ``recipes/<recipe>/paper.json`` (:func:`asr_kd.results.paper_note`)."""
    return results.paper_note(RECIPES_DIR / recipe / "paper.json", key, **values)
