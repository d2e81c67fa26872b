"""LM text that is not a transcript, two LMs mixed into one, and perplexity on held-out text.

- :func:`read_text`: plain text files, one sentence a line (no utterance ids), normalized as
  transcripts are (:func:`asr_kd.data.text.normalize_text`); empty lines are skipped.
- :func:`interpolate`: linear interpolation of two back-off n-gram models as one back-off model
  (what SRILM's ``ngram -mix-lm -lambda`` writes). Every n-gram listed in either model is listed,
  with ``p(w | h) = (1 - lam) * p_a(w | h) + lam * p_b(w | h)`` (each model's own back-off where it
  does not list the n-gram); the back-off weight of each history is computed anew, so that every
  distribution of the result sums to one:

      bow(h) = (1 - sum_{w listed after h} p(w | h)) / (1 - sum_{w listed after h} p(w | h'))

  For n-grams that neither model lists, the result backs off where the exact mixture would mix
  two back-offs: the usual approximation of a static mix. The vocabulary is the lang's: n-grams of
  the second model with other words are dropped, and the unigrams renormalized over the vocabulary.
- :func:`perplexity`: over words and ``</s>``; a word the model does not know is scored as
  ``<UNK>`` when the model has it, otherwise left out and counted (``oov_tokens``, as SRILM does).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from asr_kd.data.text import normalize_text
from asr_kd.lang.lm import BOS, EOS, ArpaLM, NgramLM
from asr_kd.utils import Pathlike, UserError

log = logging.getLogger(__name__)

_FLOOR = 1e-12


def read_text(paths: Sequence[Pathlike]) -> List[List[str]]:
    """The sentences of plain text files, one a line, normalized; empty lines are left out."""
    sentences, empty = [], 0
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path} not found (a text file, one sentence a line)")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = normalize_text(line).split()
                if words:
                    sentences.append(words)
                else:
                    empty += 1
    if empty:
        log.info(f"LM text: {empty} empty lines skipped in {', '.join(map(str, paths))}")
    return sentences


def _prob(model: ArpaLM, gram: Sequence[str]) -> float:
    lp = model.log10_prob(gram[:-1], gram[-1])
    return 0.0 if lp == -math.inf else 10.0 ** lp


def interpolate(a: ArpaLM, b: ArpaLM, weight_b: float, vocab: Sequence[str], order: Optional[int] = None) -> NgramLM:
    """``(1 - weight_b) * a + weight_b * b`` over ``vocab`` as a back-off model (see the module
    docstring), of ``order`` (default: the higher of the two)."""
    if not 0.0 <= weight_b <= 1.0:
        raise ValueError(f"mix weight must be in [0, 1], not {weight_b}")
    order = order or max(a.order, b.order)
    mix = NgramLM(order, vocab)
    targets = mix.vocab + [EOS]
    allowed = set(targets) | {BOS}
    lam_a, lam_b = 1.0 - weight_b, weight_b

    def both(gram) -> float:
        return lam_a * _prob(a, gram) + lam_b * _prob(b, gram)

    unigrams = {(w,): both((w,)) for w in targets}
    zero = [g[0] for g, p in unigrams.items() if p <= 0]
    if zero:
        raise ValueError(f"{len(zero)} vocabulary words have no probability in either LM: {' '.join(zero[:10])}")
    total = sum(unigrams.values())
    mix.prob[1] = {g: p / total for g, p in unigrams.items()}
    for n in range(2, order + 1):
        grams = {g for m in (a, b) for g in m.logp
                 if len(g) == n and g[-1] != BOS and all(w in allowed for w in g)}
        followers: Dict[tuple, List[str]] = {}
        for g in sorted(grams):
            mix.prob[n][g] = both(g)
            followers.setdefault(g[:-1], []).append(g[-1])
        for h, ws in followers.items():
            if h not in mix.prob[n - 1] and h != (BOS,):
                # A history listed in neither model (an ARPA without its prefixes): list it at the
                # value back-off gives, which leaves its own history's distribution unchanged.
                mix.prob[n - 1][h] = mix.prob_of(h[:-1], h[-1])
            num = 1.0 - sum(mix.prob[n][h + (w,)] for w in ws)
            den = 1.0 - sum(mix.prob_of(h[1:], w) for w in ws)
            mix.bow[n - 1][h] = max(num, _FLOOR) / max(den, _FLOOR)
    return mix


def restrict_check(other: ArpaLM, vocab: Sequence[str], name: str) -> None:
    """Say how much of the lang's vocabulary a given LM knows; none of it is an error."""
    known = set(other.vocab)
    words = [w for w in vocab if w not in (BOS, EOS)]
    missing = [w for w in words if w not in known]
    if len(missing) == len(words):
        raise UserError(f"{name}: none of the lang's {len(words)} words is in it (words here are upper-case, "
                        "normalized as transcripts)")
    outside = [w for w in other.vocab if w not in set(words) and w not in (BOS, EOS)]
    if missing or outside:
        log.warning(f"{name}: {len(missing)} of the lang's {len(words)} words are not in it; its {len(outside)} "
                    "words outside the lang's vocabulary are dropped")


def perplexity(model: ArpaLM, sentences: Iterable[Sequence[str]], unk: str = "<UNK>") -> dict:
    """Perplexity over words and ``</s>`` (see the module docstring)."""
    known = set(model.vocab)
    has_unk = unk in known
    total, tokens, oov, count = 0.0, 0, 0, 0
    for sent in sentences:
        count += 1
        hist = [BOS]
        for w in list(sent) + [EOS]:
            if w not in known:
                if not has_unk:
                    oov += 1
                    hist.append(w)  # in the context of the next word, which backs off past it
                    continue
                w = unk
            total += model.log10_prob(hist, w)
            hist.append(w)
            tokens += 1
    ppl = 10 ** (-total / tokens) if tokens else math.nan
    return {"perplexity": round(ppl, 2), "tokens": tokens, "sentences": count, "oov_tokens": oov}
