"""The steps of ``asr-kd nnet`` as functions: the command parses its options and calls one of
them, and a Python user calls them with the same effect.

- :func:`train_step`: one DNN on hard senone labels (a teacher, the baseline), or students
  distilled from teachers (one per temperature, sharing the teachers' pass), into model
  directories (``final.pt``, ``summary.json``, epoch checkpoints: :mod:`asr_kd.nnet.train`).
- :func:`eval_step`: frame accuracy of a model or an ensemble on labelled cuts (a JSON file).
- :func:`priors_step`: senone priors from a model's own mean posterior over training frames (as
  Kaldi's nnet: the hybrid divides the posteriors by them), for ``asr-kd decode --priors``.
- :func:`load_frames`: a labelled cut set's frames in memory, through a cache file.

The dev set for early stopping and learning-rate halving is ``dev_cuts``, or else a fixed set of
training speakers (:class:`SplitOpts`: ``dev_fraction``, ``dev_seed``); ``subset_fraction`` trains
on a random part of the remaining utterances (the paper's 3% experiment). ``stream``
(:class:`StreamOpts`) reads the training frames from shards on disk (:mod:`asr_kd.nnet.stream`)
instead of holding them in memory. ``asr-kd nnet train|eval`` make a flag of each field of both.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from lhotse import load_manifest_lazy

from asr_kd.config import option
from asr_kd.data.features import Cmvn, compute_cmvn_stats
from asr_kd.nnet.data import FrameSet, split_by_speaker, subset_utterances
from asr_kd.nnet.model import DnnConfig, Ensemble, load_model
from asr_kd.nnet.stream import StreamFrameSet, open_frame_shards
from asr_kd.nnet.train import TrainConfig, predict, train_together, utterance_frame_counts
from asr_kd.utils import Pathlike, UserError, error_text, load_cuts, outputs_fresh, read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class StreamOpts:
    """Frames streamed from frame shards in ``dir`` (written there from the cuts first) instead of
    held in memory (the commands pass no StreamOpts when ``dir`` is None)."""

    dir: Optional[Path] = option(None, "stream the frames from frame shards in DIR (written there from --cuts first) "
                                       "instead of holding them in memory: memory bounded by --buffer-frames, not by "
                                       "the corpus", flag="--stream-frames", metavar="DIR")
    buffer_frames: int = option(StreamFrameSet.buffer_frames,
                                "--stream-frames: frames in memory at a time (training: the shuffle buffer; x 176 "
                                "bytes at 40 fbank: the memory bound, ~350 MB at the default; a smaller buffer costs "
                                "dev accuracy: docs/scaling.md)")
    shard_frames: int = option(1_000_000, "--stream-frames: frames per shard written")
    shards_per_window: int = option(0, "--stream-frames: shards whose utterances are shuffled together (0 = all)")
    loader_workers: int = option(0, "--stream-frames: DataLoader processes reading ahead (0 = read in the training "
                                    "process)")
    chunk_frames: int = option(0, "--stream-frames: shuffle pieces of this many frames of each utterance (read with "
                                  "their context) instead of whole utterances, so that an utterance's frames spread over "
                                  "the epoch (0 = whole utterances; 4 recovers most of a small buffer's cost: "
                                  "docs/scaling.md)")


@dataclass(frozen=True)
class SplitOpts:
    """Which utterances a model trains on: whole speakers held out for dev, then a random part of the
    rest. The same for every model of a recipe; ``eval`` selects the utterances such a model trained on."""

    dev_fraction: float = option(0.05, "fraction of the training speakers held out for dev (train: without "
                                       "--dev-cuts; eval: dropped first, to score a training set)")
    dev_seed: int = option(0, "which speakers --dev-fraction holds out")
    subset_fraction: float = option(1.0, "train on this fraction of the remaining utterances (0.03: the paper's "
                                         "3 percent experiment); eval: the subset such a model trained on")
    subset_seed: int = option(0, "which utterances --subset-fraction keeps")


EVAL_SPLIT = SplitOpts(dev_fraction=0.0)  # eval_step: every utterance unless asked


def speaker_cmvn(cuts) -> Cmvn:
    """Per-speaker mean and variance normalization fitted on ``cuts`` (as every DNN of a recipe)."""
    return Cmvn(compute_cmvn_stats(cuts), mode="speaker")


def load_frames(cuts_path: Path, cache: Optional[Path] = None) -> FrameSet:
    """A FrameSet for a cuts manifest, per-speaker CMVN, from the cache when it is fresh."""
    cuts_path = Path(cuts_path)
    if not cuts_path.is_file():
        raise FileNotFoundError(f"{cuts_path} not found: run the alignment (senone labels) stage first")
    source = str(cuts_path.resolve())
    if cache is not None and outputs_fresh([cache], [cuts_path]):
        frames = FrameSet.load(cache, source)
        if frames is not None:
            return frames
        log.info(f"{cache} was made from another manifest than {cuts_path}: rebuilding it")
    cuts = load_cuts(cuts_path)
    try:
        frames, report = FrameSet.from_cuts(cuts, speaker_cmvn(cuts))
    except FileNotFoundError as e:
        raise UserError(f"{error_text(e)} (read through {cuts_path}): redo the stage that wrote it (features: asr-kd "
                        "fbank; senone labels: asr-kd gmm labels)") from e
    log.info(f"{cuts_path}: {report['cuts']} cuts, {report['frames']} frames; skipped "
             f"{len(report['no_labels'])} without labels, {len(report['length_mismatch'])} with a length mismatch")
    if cache is not None:
        frames.save(cache, source)
    return frames


def frame_source(cuts: Path, frames_cache: Optional[Path] = None, stream: Optional[StreamOpts] = None,
                 progress: bool = True):
    """The labelled frames of ``cuts``: with ``stream``, frame shards (written from ``cuts`` first and
    read a part at a time); else a :class:`FrameSet` in memory, through ``frames_cache``."""
    if stream is not None:
        return open_frame_shards(cuts, stream.dir, speaker_cmvn, stream.shard_frames, progress=progress)
    return load_frames(cuts, frames_cache)


def check_not_stale(exp_dirs: Sequence[Pathlike], inputs: Sequence[Pathlike]) -> None:
    """A model directory (final model or checkpoints) older than the labels, priors or teachers it
    was trained from would be kept (or resumed) as if it were current: refuse, naming both. Not
    deleted here: a long training is for the user to remove."""
    for d in map(Path, exp_dirs):
        made = [p for p in (d / "final.pt", *d.glob("epoch-*.pt")) if p.is_file()]
        if not made:
            continue
        oldest = min(made, key=lambda p: p.stat().st_mtime)
        newer = [p for p in map(Path, inputs) if p.is_file() and p.stat().st_mtime > oldest.stat().st_mtime]
        if newer:
            raise UserError(f"{d} was trained from older inputs ({newer[0]} is newer than {oldest}): remove {d} "
                            "to train again on the new ones")


def training_splits(frames, split: SplitOpts):
    """(training utterances, dev utterances) by index: whole speakers held out for dev, then a
    ``subset_fraction`` of the rest kept."""
    train_utts, dev_utts = split_by_speaker(frames, split.dev_fraction, split.dev_seed)
    if split.subset_fraction < 1.0:
        keep = subset_utterances(len(train_utts), split.subset_fraction, split.subset_seed)
        train_utts = [train_utts[i] for i in keep]
    return train_utts, dev_utts


def consecutive_parts(utts: Sequence[int], lengths, max_frames: int) -> List[List[int]]:
    """``utts`` in order, cut into parts of about ``max_frames`` frames (an utterance is never split)."""
    parts: List[List[int]] = [[]]
    size = 0
    for u in utts:
        if size >= max_frames:
            parts.append([])
            size = 0
        parts[-1].append(u)
        size += int(lengths[u])
    return parts


def train_step(
    cuts: Path,
    gmm_dir: Path,
    exp_dirs: Sequence[Path],
    train_cfg: TrainConfig,
    *,
    preset: str = "cpu",
    shape: Optional[Dict[str, Optional[float]]] = None,
    temperatures: Sequence[float] = (1.0,),
    teachers: Sequence[Path] = (),
    dev_cuts: Optional[Path] = None,
    split: SplitOpts = SplitOpts(),
    frames_cache: Optional[Path] = None,
    stream: Optional[StreamOpts] = None,
    device: str = "cpu",
) -> List[dict]:
    """Train one model per temperature (one without teachers) into ``exp_dirs``, resuming any
    checkpoint there; returns their summaries. ``shape`` overrides the preset's sizes
    (``hidden_layers``, ``hidden_dim``, ``left_context``, ``right_context``, ``dropout``). ``split``:
    the dev speakers (unless ``dev_cuts``) and the training subset."""
    exp_dirs = [Path(d) for d in exp_dirs]
    if len(exp_dirs) != len(temperatures):
        raise ValueError(f"{len(exp_dirs)} exp dirs for {len(temperatures)} temperatures: "
                         "give one exp dir per temperature")
    priors_path = Path(gmm_dir) / "priors.json"
    if not priors_path.is_file():
        raise FileNotFoundError(f"{priors_path} not found: train the GMM system first")
    priors = read_json(priors_path)
    frames = frame_source(cuts, frames_cache, stream, progress=train_cfg.progress)
    if dev_cuts:
        cache = frames_cache.with_name(frames_cache.stem + "_dev.pt") if frames_cache else None
        dev_set = load_frames(dev_cuts, cache)
        train_utts, _ = training_splits(frames, dataclasses.replace(split, dev_fraction=0.0, dev_seed=0))
    else:
        train_utts, dev_utts = training_splits(frames, split)
        if not dev_utts:
            raise UserError("the dev split is empty: raise --dev-fraction (needs at least two speakers)")
        dev_set = frames.subset(dev_utts) if isinstance(frames, FrameSet) else frames.frameset(dev_utts)
    if stream is None:
        train_set = frames.subset(train_utts)
        max_label = int(frames.labels.max())
    else:
        train_set = StreamFrameSet(frames, train_utts, stream.buffer_frames, stream.shards_per_window,
                                   stream.loader_workers, stream.chunk_frames)
        max_label = frames.max_label
    model_cfg = DnnConfig.from_preset(preset, num_senones=priors["num_pdfs"], feat_dim=frames.feat_dim,
                                      **(shape or {}))
    if max_label >= model_cfg.num_senones:
        raise ValueError(f"labels go up to {max_label} but {gmm_dir} has {model_cfg.num_senones} senones")
    cfgs = [TrainConfig(**{**vars(train_cfg), "temperature": t}) for t in temperatures]
    ensemble = Ensemble([load_model(p, device) for p in teachers]) if teachers else None
    first = next(iter(load_manifest_lazy(cuts)))
    meta = {"gmm_dir": str(gmm_dir), "log_priors": priors["log_priors"], "cmvn": "speaker",
            "sampling_rate": first.sampling_rate, "feature": "fbank-40", "train_cuts": str(cuts),
            "teachers": [str(p) for p in teachers], "seed": train_cfg.seed}
    check_not_stale(exp_dirs, [cuts, priors_path, *([dev_cuts] if dev_cuts else []), *teachers])
    t0 = time.time()
    summaries = train_together(exp_dirs, model_cfg, cfgs, train_set, dev_set, ensemble, meta)
    for exp_dir, summary in zip(exp_dirs, summaries):
        log.info(f"{exp_dir}: best dev frame accuracy {summary['best_dev_frame_accuracy']:.2f}% "
                 f"(epoch {summary['best_epoch']}) in {time.time() - t0:.0f} s")
    return summaries


def up_to_date(out: Path, models: Sequence[Pathlike], inputs: Sequence[Pathlike], force: bool = False,
               needs: Sequence[str] = ()) -> bool:
    """True (and logged) when ``out`` was written from these ``models`` (its "models" entry) after
    they and ``inputs`` last changed (make's rule), and has the entries ``needs`` (an older version
    of the step may have written it without them), so a step may keep it; a retrained model, other
    models or rebuilt labels make the step run again."""
    if force or not outputs_fresh([out], [*models, *inputs]):
        return False
    done = read_json(out)
    if done.get("models") != [str(p) for p in models] or any(k not in done for k in needs):
        return False
    log.info(f"{out} is newer than its models and cuts; skipping (use --force to redo)")
    return True


def eval_step(
    models: Sequence[Path],
    cuts: Path,
    out: Path,
    *,
    frames_cache: Optional[Path] = None,
    stream: Optional[StreamOpts] = None,
    split: SplitOpts = EVAL_SPLIT,
    dtype: str = "auto",
    device: str = "cpu",
    force: bool = False,
) -> Optional[dict]:
    """Frame accuracy of a model (or of several as an ensemble: the mean of their distributions)
    on ``cuts``, written to ``out`` (kept while :func:`up_to_date`, unless ``force``; then None is
    returned). ``split`` selects the utterances a model with those settings trained on (default:
    every utterance).
    ``stream``: the frames are read from shards (written from ``cuts`` first) a part at a time, so
    that a training set too large for memory can be scored."""
    out = Path(out)
    if up_to_date(out, models, [cuts], force, needs=("per_utterance",)):
        return None
    selected = bool(split.dev_fraction) or split.subset_fraction < 1.0
    source = frame_source(cuts, frames_cache, stream)
    utts = training_splits(source, split)[0] if selected else range(len(source.cut_ids))
    if stream is not None:
        parts = consecutive_parts(utts, source.lengths, stream.buffer_frames)
        sets = (source.frameset(part) for part in parts)  # a buffer's worth in memory at a time
    else:
        sets = [source.subset(utts) if selected else source]
    loaded = [load_model(p, device) for p in models]
    model = loaded[0] if len(loaded) == 1 else Ensemble(loaded)
    per_utt, speakers, num_frames = {}, {}, 0
    for part in sets:
        right, labelled = utterance_frame_counts(model, part, device, dtype)
        per_utt.update((u, [c, n]) for u, c, n in zip(part.cut_ids, right.tolist(), labelled.tolist()))
        speakers.update(zip(part.cut_ids, part.speakers))
        num_frames += len(part)
    correct, scored = (sum(c[i] for c in per_utt.values()) for i in (0, 1))
    acc = 100.0 * correct / max(scored, 1)
    # per utterance: what a paired bootstrap of two systems' frame accuracy draws from (asr-kd report)
    result = {"models": [str(p) for p in models], "cuts": str(cuts), "frame_accuracy": acc, "frames": num_frames,
              "utterances": len(utts), "per_utterance": per_utt, "speakers": speakers}
    write_json(out, result)
    log.info(f"frame accuracy {acc:.2f}% over {num_frames} frames -> {out}")
    return result


def priors_step(models: Sequence[Path], cuts: Path, out: Path, *, frames_cache: Optional[Path] = None,
                stream: Optional[StreamOpts] = None, max_utterances: int = 0, floor: float = 1e-8,
                dtype: str = "auto", device: str = "cpu", force: bool = False) -> Optional[dict]:
    """Senone priors from the models' mean posterior (an ensemble's: the mean of its members'
    distributions) over the frames of ``cuts`` (every utterance, or ``max_utterances`` spread evenly
    over the set), floored at ``floor`` and renormalized, written to ``out`` as ``log_priors`` (kept
    while :func:`up_to_date`, unless ``force``; then None is returned). A model whose average
    posterior has drifted from the alignment's label counts (soft targets, dropout, speed
    perturbation) is then scored by its own. ``stream``: only those utterances are read, from frame
    shards (written from ``cuts`` first), instead of the whole set into memory."""
    out = Path(out)
    if up_to_date(out, models, [cuts], force):
        return None
    source = frame_source(cuts, frames_cache, stream)
    utts = list(range(len(source.cut_ids)))
    if max_utterances and max_utterances < len(utts):
        utts = [utts[i] for i in np.linspace(0, len(utts) - 1, max_utterances).round().astype(int)]
    if stream is not None:
        frames = source.frameset(utts)
    else:
        frames = source.subset(utts) if len(utts) < len(source.cut_ids) else source
    loaded = [load_model(p, device) for p in models]
    model = loaded[0] if len(loaded) == 1 else Ensemble(loaded)
    total = torch.zeros(loaded[0].cfg.num_senones, dtype=torch.float64)
    for start in range(0, len(frames), 65536):
        idx = torch.arange(start, min(start + 65536, len(frames)))
        logits = predict(model, frames, device=device, dtype=dtype, idx=idx).float()
        probs = torch.softmax(logits, -1)
        total += (probs.mean(0) if probs.dim() == 3 else probs).sum(0).double()
    priors = (total / total.sum()).clamp_min(floor)
    priors /= priors.sum()
    result = {"models": [str(p) for p in models], "cuts": str(cuts), "frames": len(frames), "utterances": len(utts),
              "floor": floor, "floored": int((total / total.sum() < floor).sum()), "num_pdfs": len(priors),
              "log_priors": priors.log().tolist()}
    write_json(out, result)
    log.info(f"priors from the mean posterior over {len(frames)} frames ({result['floored']} floored) -> {out}")
    return result
