"""Reading the parts of a Kaldi-layout ``data/lang`` directory the GMM system needs.

Kept separate from :mod:`asr_kd.lang` (which builds the directory) so that the GMM code only
depends on the files' format: ``phones.txt``, ``words.txt``, ``lexicon.txt`` and
``phones/{silence,optional_silence}.txt``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional


def read_symbols(path: Path) -> Dict[str, int]:
    table = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'symbol id', got {line!r}")
            table[parts[0]] = int(parts[1])
    return table


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
        lang_dir = Path(lang_dir)
        phones = read_symbols(lang_dir / "phones.txt")
        words = read_symbols(lang_dir / "words.txt")
        lexicon: Dict[str, List[List[int]]] = {}
        lex_path = lang_dir / "lexicon.txt"
        with open(lex_path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                parts = line.split()
                if not parts:
                    continue
                word, prons = parts[0], parts[1:]
                # lexiconp.txt style lines carry a probability after the word
                if prons and _is_float(prons[0]) and prons[0] not in phones:
                    prons = prons[1:]
                try:
                    ids = [phones[p] for p in prons]
                except KeyError as e:
                    raise ValueError(f"{lex_path}:{n}: phone {e.args[0]!r} not in phones.txt") from None
                if not ids:
                    raise ValueError(f"{lex_path}:{n}: word {word!r} has an empty pronunciation")
                lexicon.setdefault(word, []).append(ids)
        sil_names = _read_list(lang_dir / "phones" / "silence.txt")
        opt = _read_list(lang_dir / "phones" / "optional_silence.txt")
        silence = [phones[p] for p in sil_names]
        oov = None
        if (lang_dir / "oov.txt").exists():
            oov = (lang_dir / "oov.txt").read_text().split()[0]
        elif "<UNK>" in lexicon:
            oov = "<UNK>"
        return cls(phones, words, lexicon, silence, phones[opt[0]] if opt else silence[0], oov)


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _read_list(path: Path) -> List[str]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (is this a Kaldi-layout lang directory?)")
    return [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
