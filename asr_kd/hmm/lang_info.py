"""Reading the parts of a Kaldi-layout ``data/lang`` directory the GMM system needs.

The files are read by :class:`asr_kd.lang.Lang`; this is the GMM's view of them, with phones
as integer ids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from asr_kd.lang import Lang


@dataclass
class LangInfo:
    """Phone and word tables, lexicon (word -> pronunciations as phone ids), silence phones."""

    phones: Dict[str, int]
    words: Dict[str, int]
    lexicon: Dict[str, List[List[int]]]
    silence_phones: List[int]
    optional_silence: int
    oov_word: Optional[str] = "<UNK>"
    phone_names: Dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.phone_names:
            self.phone_names = {i: p for p, i in self.phones.items()}

    @property
    def real_phones(self) -> List[int]:
        """Phones that have HMMs (no epsilon, no disambiguation symbols)."""
        return sorted(i for p, i in self.phones.items() if i != 0 and not p.startswith("#"))

    @classmethod
    def load(cls, lang_dir) -> "LangInfo":
        """The GMM's view (phone ids) of a lang directory read by :class:`asr_kd.lang.Lang`."""
        lang = Lang.load(lang_dir)
        lexicon: Dict[str, List[List[int]]] = {}
        for word, prons in lang.lexicon.items():
            for pron in prons:
                missing = [p for p in pron if p not in lang.phones]
                if missing:
                    raise ValueError(f"{lang.dir}/lexicon.txt: {word}: phone {missing[0]!r} not in phones.txt")
                lexicon.setdefault(word, []).append([lang.phones[p] for p in pron])
        silence = [lang.phones[p] for p in lang.silence_phones]
        oov = None
        if (lang.dir / "oov.txt").exists():
            oov = (lang.dir / "oov.txt").read_text().split()[0]
        elif "<UNK>" in lexicon:
            oov = "<UNK>"
        return cls(lang.phones, lang.words, lexicon, silence, lang.phones[lang.optional_silence], oov)
