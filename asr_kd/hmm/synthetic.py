"""A synthetic corpus with known state segmentations, for tests and demonstrations.

Each (phone, HMM state) emits from its own Gaussian; utterances are random word strings with
silence at the edges and, sometimes, between words; state durations are random. The true
per-frame phone and state are returned so that alignments can be scored.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Tuple

import kaldifst
import numpy as np

from asr_kd.hmm.lang_info import LangInfo


def toy_lang(num_phones: int = 6, num_words: int = 8, seed: int = 0) -> LangInfo:
    """SIL (1), SPN (2) and ``num_phones`` phones P1..; words W1.. of 2-4 random phones (the
    first word has two pronunciations); ``<UNK>`` -> SPN."""
    rng = np.random.RandomState(seed)
    phones = {"<eps>": 0, "SIL": 1, "SPN": 2}
    for i in range(num_phones):
        phones[f"P{i + 1}"] = 3 + i
    nonsil = list(range(3, 3 + num_phones))
    lexicon = {"<UNK>": [[2]]}
    for w in range(num_words):
        lexicon[f"W{w + 1}"] = [list(rng.choice(nonsil, size=rng.randint(2, 5)))]
    lexicon["W1"].append(list(rng.choice(nonsil, size=3)))
    lexicon = {w: [[int(p) for p in pr] for pr in prs] for w, prs in lexicon.items()}
    words = {"<eps>": 0, **{w: i + 1 for i, w in enumerate(sorted(lexicon))}}
    phones["#0"] = len(phones)
    return LangInfo(phones, words, lexicon, [1, 2], 1, "<UNK>")


def toy_corpus(lang: LangInfo, num_utts: int = 60, dim: int = 6, num_states: int = 3, num_sil_states: int = 3,
               sep: float = 3.0, seed: int = 0, between_sil_prob: float = 0.3):
    """Returns ``(feats, texts, truth)``; ``truth[utt] = (phones[T], states[T])``."""
    rng = np.random.RandomState(seed + 1)
    means: Dict[Tuple[int, int], np.ndarray] = {}
    sil = set(lang.silence_phones)
    for p in lang.real_phones:
        for k in range(num_sil_states if p in sil else num_states):
            means[(p, k)] = rng.randn(dim) * sep
    words_all = sorted(w for w in lang.lexicon if w != "<UNK>")
    feats, texts, truth = {}, {}, {}
    for u in range(num_utts):
        words = list(rng.choice(words_all, size=rng.randint(1, 4)))
        seq = [1]
        for j, w in enumerate(words):
            prons = lang.lexicon[w]
            seq += prons[rng.randint(len(prons))]
            if j + 1 < len(words) and rng.rand() < between_sil_prob:
                seq.append(1)
        seq.append(1)
        ph, st = [], []
        for p in seq:
            for k in range(num_sil_states if p in sil else num_states):
                d = rng.randint(2, 7)
                ph += [p] * d
                st += [k] * d
        x = np.stack([means[(p, k)] for p, k in zip(ph, st)]) + rng.randn(len(ph), dim)
        utt = f"utt{u:03d}"
        feats[utt] = x.astype(np.float32)
        texts[utt] = words
        truth[utt] = (np.array(ph), np.array(st))
    return feats, texts, truth


def write_lang_dir(lang: LangInfo, d, sil_prob: float = 0.5, with_L: bool = True) -> None:
    """Write ``lang`` in the Kaldi layout (phones.txt, words.txt, lexicon.txt,
    phones/{silence,optional_silence}.txt and, with ``with_L``, an L.fst with optional silence
    built as Kaldi's ``make_lexicon_fst.py --sil-prob`` does)."""
    d = Path(d)
    (d / "phones").mkdir(parents=True, exist_ok=True)
    (d / "phones.txt").write_text("".join(f"{p} {i}\n" for p, i in sorted(lang.phones.items(), key=lambda x: x[1])))
    (d / "words.txt").write_text("".join(f"{w} {i}\n" for w, i in sorted(lang.words.items(), key=lambda x: x[1])))
    names = {i: p for p, i in lang.phones.items()}
    (d / "lexicon.txt").write_text("".join(
        f"{w} {' '.join(names[p] for p in pr)}\n" for w, prs in sorted(lang.lexicon.items()) for pr in prs))
    (d / "phones" / "silence.txt").write_text("".join(f"{names[p]}\n" for p in lang.silence_phones))
    (d / "phones" / "optional_silence.txt").write_text(f"{names[lang.optional_silence]}\n")
    if not with_L:
        return
    sil, nosil = -math.log(sil_prob), -math.log(1 - sil_prob)
    # 0 = start, 1 = loop (final), 2 = after-silence
    lines = [f"0 1 0 0 {nosil}", f"0 2 0 0 {sil}", f"2 1 {lang.optional_silence} 0 0"]
    n = 3
    for w, prons in sorted(lang.lexicon.items()):
        for pr in prons:
            cur = 1
            for i, p in enumerate(pr[:-1]):
                lines.append(f"{cur} {n} {p} {lang.words[w] if i == 0 else 0} 0")
                cur, n = n, n + 1
            out = lang.words[w] if len(pr) == 1 else 0
            lines.append(f"{cur} 1 {pr[-1]} {out} {nosil}")
            lines.append(f"{cur} 2 {pr[-1]} {out} {sil}")
    lines.append("1 0")
    kaldifst.compile("\n".join(lines) + "\n").write(str(d / "L.fst"))
