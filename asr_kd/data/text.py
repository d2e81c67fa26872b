"""Transcript normalization: the one place where text is made uniform for every corpus.

Words are upper-cased, punctuation other than word-internal apostrophes and hyphens is removed,
and whitespace is collapsed, so "Hello, world!" and "HELLO WORLD" are the same transcript.
Lexicon entries go through the same function, so transcripts and lexicons always agree.
"""
from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[^\w'\- ]+")
_EDGE = re.compile(r"(^|\s)['\-]+|['\-]+(?=\s|$)")
_SPACE = re.compile(r"\s+")

# The digit words of FSDD / speechocean762 prompts.
DIGIT_WORDS = ["ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"]


def normalize_text(text: str) -> str:
    """Upper-case words separated by single spaces, without punctuation."""
    text = unicodedata.normalize("NFKC", text).upper()
    text = _PUNCT.sub(" ", text.replace("_", " "))
    text = _EDGE.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def normalize_word(word: str) -> str:
    return normalize_text(word)
