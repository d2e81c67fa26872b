"""Scoring: WER in Kaldi's conventions, per-utterance errors, and frame accuracy.

``score_wer`` aligns hypotheses to references with kaldialign and writes, into a decode directory::

    wer_{name}       %WER 10.90 [ 2507 / 23000, 310 ins, 612 del, 1585 sub ]   (+ %SER, scored count)
    per_utt_{name}   ref / hyp / op lines per utterance (Kaldi's align-text style)
    errs_{name}      per-utterance alignments ``(ref->hyp)`` and the most frequent errors (icefall style)

so ``grep WER exp/*/decode*/wer_* | sort -k2 -n`` ranks systems as in Kaldi. Whether one
system's lower WER would hold on other utterances of the same kind is told by
:func:`paired_bootstrap` (Bisani & Ney 2004; Kaldi's ``compute-wer-bootci``) over the
per-utterance errors of two decodes of the same set (:func:`utterance_errors`). An utterance with a
reference but no hypothesis (e.g. an empty lattice) is scored as all deletions and counted; one
with an empty reference (a blank transcript, or a cut without supervision) is not scored, since
every word hypothesised would be an insertion against nothing: it is named in a warning and
counted as excluded. The numbers of scored and excluded utterances are always printed, so a
table is never silently shortened.
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import kaldialign
import numpy as np

from asr_kd.utils import Pathlike, write_text

log = logging.getLogger(__name__)

EPS = "*"


@dataclass
class WerStats:
    ref_words: int = 0
    ins: int = 0
    dels: int = 0
    subs: int = 0
    utterances: int = 0
    utterances_with_errors: int = 0
    missing_hyps: int = 0
    excluded_empty_refs: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / max(self.ref_words, 1)

    @property
    def ser(self) -> float:
        return 100.0 * self.utterances_with_errors / max(self.utterances, 1)

    def kaldi_line(self) -> str:
        return (f"%WER {self.wer:.2f} [ {self.errors} / {self.ref_words}, "
                f"{self.ins} ins, {self.dels} del, {self.subs} sub ]")

    def as_dict(self) -> dict:
        return {"wer": round(self.wer, 2), "errors": self.errors, "ref_words": self.ref_words, "ins": self.ins,
                "del": self.dels, "sub": self.subs, "ser": round(self.ser, 2), "utterances": self.utterances,
                "missing_hyps": self.missing_hyps, "excluded_empty_refs": self.excluded_empty_refs}


@dataclass
class UttAlignment:
    utt_id: str
    ref: List[str]
    hyp: List[str]
    pairs: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def ops(self) -> List[str]:
        return ["C" if r == h else "I" if r == EPS else "D" if h == EPS else "S" for r, h in self.pairs]


def compute_wer(refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]]) -> Tuple[WerStats, List[UttAlignment]]:
    """Score every utterance of ``refs`` with a non-empty reference; hypotheses missing from
    ``hyps`` count as empty."""
    stats = WerStats()
    alignments = []
    empty = sorted(u for u, ref in refs.items() if not ref)
    if empty:
        stats.excluded_empty_refs = len(empty)
        log.warning(f"{len(empty)} utterances have an empty reference transcript (or no supervision) and are left out "
                    f"of the WER: {', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}")
    for utt_id in sorted(set(refs) - set(empty)):
        ref = list(refs[utt_id])
        if utt_id not in hyps:
            stats.missing_hyps += 1
        hyp = list(hyps.get(utt_id, []))
        pairs = kaldialign.align(ref, hyp, EPS)
        a = UttAlignment(utt_id, ref, hyp, pairs)
        ops = Counter(a.ops)
        stats.ref_words += len(ref)
        stats.ins += ops["I"]
        stats.dels += ops["D"]
        stats.subs += ops["S"]
        stats.utterances += 1
        stats.utterances_with_errors += int(ops["I"] + ops["D"] + ops["S"] > 0)
        alignments.append(a)
    extra = set(hyps) - set(refs)
    if extra:
        log.warning(f"{len(extra)} hypotheses have no reference and are not scored, e.g. {sorted(extra)[:3]}")
    if stats.missing_hyps:
        log.warning(f"{stats.missing_hyps} utterances have no hypothesis; scored as all deletions")
    return stats, alignments


SCORING_FILES = ("wer_*", "per_utt_*", "errs_*")  # what score_wer writes into a decode directory, by name


def score_wer(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, Sequence[str]],
    out_dir: Pathlike,
    name: str = "test",
) -> WerStats:
    """Compute WER and write ``wer_{name}``, ``per_utt_{name}``, ``errs_{name}`` into ``out_dir``."""
    out_dir = Path(out_dir)
    stats, alignments = compute_wer(refs, hyps)
    write_text(
        out_dir / f"wer_{name}",
        f"{stats.kaldi_line()}\n"
        f"%SER {stats.ser:.2f} [ {stats.utterances_with_errors} / {stats.utterances} ]\n"
        f"Scored {stats.utterances} sentences, {stats.missing_hyps} not present in hyp.\n"
        + (f"Excluded {stats.excluded_empty_refs} sentences with an empty reference.\n" if stats.excluded_empty_refs else ""),
    )
    per_utt = []
    for a in alignments:
        width = [max(len(r), len(h)) for r, h in a.pairs]
        per_utt.append(f"{a.utt_id} ref  " + " ".join(r.ljust(w) for (r, _), w in zip(a.pairs, width)))
        per_utt.append(f"{a.utt_id} hyp  " + " ".join(h.ljust(w) for (_, h), w in zip(a.pairs, width)))
        per_utt.append(f"{a.utt_id} op   " + " ".join(o.ljust(w) for o, w in zip(a.ops, width)))
        ops = Counter(a.ops)
        per_utt.append(f"{a.utt_id} #csid {ops['C']} {ops['S']} {ops['I']} {ops['D']}")
    write_text(out_dir / f"per_utt_{name}", "\n".join(per_utt) + "\n")
    subs: Counter = Counter()
    ins: Counter = Counter()
    dels: Counter = Counter()
    lines = [stats.kaldi_line(), "", "PER-UTT DETAILS: corr or (ref->hyp)"]
    for a in alignments:
        lines.append(f"{a.utt_id}:\t" + " ".join(r if r == h else f"({r}->{h})" for r, h in a.pairs))
        for r, h in a.pairs:
            if r == EPS:
                ins[h] += 1
            elif h == EPS:
                dels[r] += 1
            elif r != h:
                subs[(r, h)] += 1
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"] + [f"{c}   {r} -> {h}" for (r, h), c in subs.most_common()]
    lines += ["", "DELETIONS: count ref"] + [f"{c}   {w}" for w, c in dels.most_common()]
    lines += ["", "INSERTIONS: count hyp"] + [f"{c}   {w}" for w, c in ins.most_common()]
    write_text(out_dir / f"errs_{name}", "\n".join(lines) + "\n")
    log.info(f"{out_dir}/wer_{name}: {stats.kaldi_line()} over {stats.utterances} utterances"
             + (f" ({stats.excluded_empty_refs} with an empty reference excluded)" if stats.excluded_empty_refs else ""))
    return stats


def frame_accuracy(predictions: Sequence[np.ndarray], labels: Sequence[np.ndarray], ignore: int = -1) -> Tuple[float, int]:
    """Percentage of frames whose predicted senone equals the alignment's, and the frame count.

    ``predictions`` are per-utterance arrays of senone ids (argmax of the posteriors) or of
    posteriors/logits [T, num_senones]; ``labels`` the forced-alignment senones. Frames labelled
    ``ignore`` are not counted; utterances whose lengths differ are an error, never truncated.
    """
    correct = total = 0
    for pred, lab in zip(predictions, labels):
        pred = np.asarray(pred)
        if pred.ndim == 2:
            pred = pred.argmax(-1)
        lab = np.asarray(lab)
        if pred.shape != lab.shape:
            raise ValueError(f"frame accuracy: {pred.shape[0]} predictions for {lab.shape[0]} labelled frames")
        keep = lab != ignore
        correct += int((pred[keep] == lab[keep]).sum())
        total += int(keep.sum())
    return 100.0 * correct / max(total, 1), total



def utterance_errors(per_utt: Pathlike) -> Dict[str, Tuple[int, int]]:
    """``{utterance: (errors, reference words)}`` from a ``per_utt_{name}`` file's ``#csid`` lines."""
    out = {}
    for line in Path(per_utt).read_text().splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[1] == "#csid":
            c, s, i, d = map(int, parts[2:])
            out[parts[0]] = (s + i + d, c + s + d)
    if not out:
        raise ValueError(f"{per_utt}: no '#csid' lines (not a per_utt file of asr-kd's scoring)")
    return out


def utterance_frame_errors(eval_json: Pathlike) -> Tuple[Dict[str, Tuple[int, int]], Dict[str, str]]:
    """``{utterance: (misclassified frames, labelled frames)}`` and ``{utterance: speaker}`` from an
    ``asr-kd nnet eval`` JSON: frame errors in the form :func:`paired_bootstrap` takes word errors."""
    d = json.loads(Path(eval_json).read_text())
    if "per_utterance" not in d:
        raise ValueError(f"{eval_json} has no per-utterance counts (written before they were): "
                         "rerun its asr-kd nnet eval with --force")
    return {u: (n - c, n) for u, (c, n) in d["per_utterance"].items()}, d.get("speakers", {})


BOOTSTRAP_BLOCK = 250  # resampled sets drawn at once by paired_bootstrap


def _resampled_totals(sums: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """``samples`` draws with replacement of the rows of ``sums`` [units, k] (as many rows as it
    has), each draw's rows summed: [samples, k]. Drawn in blocks: memory ~ block x units."""
    rng = np.random.default_rng(seed)
    return np.concatenate([
        sums[rng.integers(0, len(sums), size=(min(BOOTSTRAP_BLOCK, samples - i), len(sums)))].sum(1)
        for i in range(0, samples, BOOTSTRAP_BLOCK)])


def _unit_sums(systems: Sequence[Mapping[str, Tuple[int, int]]], groups: Optional[Mapping[str, str]]):
    """[units, len(systems) + 1]: each unit's (utterance, or speaker with ``groups``) errors under
    each system, and its reference count (words or frames), which must be the same for all."""
    utts = sorted(systems[0])
    for other in systems[1:]:
        if set(other) != set(systems[0]):
            only = sorted(set(other) ^ set(systems[0]))
            raise ValueError(f"the systems scored different utterances ({len(only)} in only one, e.g. {only[:3]})")
    unit_of = {u: (groups.get(u, u) if groups is not None else u) for u in utts}
    units = sorted(set(unit_of.values()))
    index = {k: i for i, k in enumerate(units)}
    sums = np.zeros((len(units), len(systems) + 1), dtype=np.int64)
    for u in utts:
        if any(x[u][1] != systems[0][u][1] for x in systems[1:]):
            raise ValueError(f"the systems were scored against different references ({u})")
        sums[index[unit_of[u]]] += (*(x[u][0] for x in systems), systems[0][u][1])
    return sums


@dataclass
class GainRecovered:
    """How much of the ensemble's gain over the baseline a student recovers, in %: ``pct`` on the
    scored set, ``ci95`` the 2.5th and 97.5th percentile over resampled sets."""

    pct: float
    ci95: Tuple[float, float]
    units: int
    samples: int


def gain_recovered_bootstrap(baseline: Mapping[str, Tuple[int, int]], ensemble: Mapping[str, Tuple[int, int]],
                             student: Mapping[str, Tuple[int, int]], samples: int = 10000, seed: int = 0,
                             groups: Optional[Mapping[str, str]] = None) -> GainRecovered:
    """(errors(baseline) - errors(student)) / (errors(baseline) - errors(ensemble)) in %, the
    paper's measure of distillation, from per-utterance errors (word errors, or misclassified
    frames from :func:`utterance_frame_errors`) of the three systems on the same utterances, with
    its interval over sets drawn as :func:`paired_bootstrap` draws them. A draw on which the
    ensemble is no better than the baseline has no gain to recover and counts as 0% recovered
    (it makes the interval wider, never narrower)."""
    sums = _unit_sums([baseline, ensemble, student], groups)
    total = sums.sum(0)
    if total[0] <= total[1]:
        raise ValueError("the ensemble is no better than the baseline on the scored set: no gain to recover")
    drawn = _resampled_totals(sums, samples, seed).astype(np.float64)
    gain, got = drawn[:, 0] - drawn[:, 1], drawn[:, 0] - drawn[:, 2]
    ratio = np.where(gain > 0, 100.0 * got / np.where(gain > 0, gain, 1.0), 0.0)
    lo, hi = np.percentile(ratio, [2.5, 97.5])
    return GainRecovered(pct=100.0 * (total[0] - total[2]) / (total[0] - total[1]), ci95=(float(lo), float(hi)),
                         units=len(sums), samples=samples)


@dataclass
class BootstrapResult:
    """System B against system A on the same utterances. ``delta_ci95``: the 2.5th and 97.5th
    percentile of WER(B) - WER(A) over the resampled sets; ``p_improvement``: the percentage of
    them on which B has the lower WER (Kaldi's "probability of Set2 improving Set1"); ``units``:
    how many utterances, or speakers with ``groups``, were resampled."""

    wer_a: float
    wer_b: float
    delta_ci95: Tuple[float, float]
    p_improvement: float
    units: int
    samples: int

    @property
    def delta(self) -> float:
        return self.wer_b - self.wer_a


def paired_bootstrap(a: Mapping[str, Tuple[int, int]], b: Mapping[str, Tuple[int, int]], samples: int = 10000,
                     seed: int = 0, groups: Optional[Mapping[str, str]] = None) -> BootstrapResult:
    """Paired bootstrap of two systems' per-utterance errors (:func:`utterance_errors`): draw the
    test set's utterances with replacement ``samples`` times and score both systems on each draw.
    With ``groups`` (utterance -> speaker) whole speakers are drawn instead: a speaker's
    utterances share its voice and accent, so they are not independent draws, and the interval is
    wider and more honest. The two must have scored the same utterances against the same references."""
    sums = _unit_sums([a, b], groups)  # errors of a, errors of b, reference words
    drawn = _resampled_totals(sums, samples, seed)
    words = np.maximum(drawn[:, 2], 1)
    wer_a, wer_b = 100.0 * drawn[:, 0] / words, 100.0 * drawn[:, 1] / words
    lo, hi = np.percentile(wer_b - wer_a, [2.5, 97.5])
    total = sums.sum(0)
    return BootstrapResult(wer_a=100.0 * total[0] / max(total[2], 1), wer_b=100.0 * total[1] / max(total[2], 1),
                           delta_ci95=(float(lo), float(hi)), p_improvement=100.0 * float((wer_b < wer_a).mean()),
                           units=len(sums), samples=samples)
