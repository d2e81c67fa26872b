"""The decoding step of ``asr-kd decode`` as functions, callable from Python with the same effect.

- :func:`decode_cuts_step`: decode a data set (cuts with fbank features and reference transcripts)
  with a GMM or DNN model over HCLG, at every LM weight and word insertion penalty given; writes
  ``wer_{key}``, ``per_utt_{key}``, ``errs_{key}``, ``hyp_{key}.txt`` (:func:`scoring_key`) and
  ``decode.json`` (scored utterances, empty lattices, real-time factor, the best LM weight and
  penalty) into the decode directory.
- :func:`transcribe_audio_step`: print one transcript per audio file (featurized as the model's
  training data was); a file that cannot be decoded is named in a warning and skipped.
- :func:`tuned_setting`: the LM weight and penalty that were best in a (dev) decode directory.
- :func:`load_for_decoding`, :func:`decode_items`, :func:`decode_parallel` (``nj`` jobs),
  :func:`audio_items`: the parts they are made of.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile
import torch
from lhotse import Fbank, Recording
from lhotse.utils import compute_num_frames
from tqdm import tqdm

from asr_kd.decode.acoustic import load_scorer
from asr_kd.decode.decoder import DecodeOpts, Decoder, batches_by_frames, rescore_lm_weights
from asr_kd.decode.graph import build_graph
from asr_kd.lang import Lang
from asr_kd.model_info import fbank_of
from asr_kd.score import SCORING_FILES, score_wer
from asr_kd.utils import Pathlike, UserError, die_with_parent, load_cuts, outputs_fresh, read_json, write_json, write_text

log = logging.getLogger(__name__)


def _one_line(e: Exception) -> str:
    """An exception as one line. lhotse's audio errors list every backend's failure over several
    lines; the first backend's (libsndfile) message is the telling one."""
    text = str(e)
    m = re.search(r"Exception #0 \(.*?\): <class '[\w.]+'>: (.*)", text)
    return " ".join((m.group(1) if m else f"{type(e).__name__}: {text}").split())[:300]


def _declared_samples(path: Path) -> Optional[int]:
    """Samples per channel a wav header declares when the file holds fewer (a truncated file),
    from libsndfile's parse log ("data : <declared bytes> (should be <bytes present>)")."""
    try:
        log_text = soundfile.info(str(path)).extra_info
    except Exception:
        return None
    data = re.search(r"^data\s*:\s*(\d+) \(should be \d+\)", log_text, re.M)
    block = re.search(r"Block Align\s*:\s*(\d+)", log_text)
    return int(data.group(1)) // int(block.group(1)) if data and block and int(block.group(1)) else None


def load_audio_file(path: Path, sampling_rate: int, resampled: set) -> np.ndarray:
    """[1, N] samples at ``sampling_rate`` (resampled, mixed down to mono), or ValueError with the
    reason the file cannot be used. ``resampled`` holds the source rates already logged."""
    if not path.is_file():
        raise ValueError("no such file")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        rec = Recording.from_file(path)
    except Exception as e:
        raise ValueError(f"unreadable audio ({_one_line(e)})") from e
    if rec.num_samples == 0:
        raise ValueError("no audio samples (header only)")
    declared = _declared_samples(path)
    if declared and declared > rec.num_samples:
        log.warning(f"{path}: truncated: its header declares {declared / rec.sampling_rate:.2f} s ({declared} samples) "
                    f"but it holds {rec.duration:.2f} s ({rec.num_samples}); decoding what is there")
    if rec.sampling_rate != sampling_rate:
        if rec.sampling_rate not in resampled:
            resampled.add(rec.sampling_rate)
            log.info(f"resampling audio from {rec.sampling_rate} Hz to the model's {sampling_rate} Hz (first: {path})")
        rec = rec.resample(sampling_rate)
    cut = rec.to_cut()
    if len(rec.channel_ids) > 1:
        log.info(f"{path}: {len(rec.channel_ids)} channels mixed down to mono")
        cut = cut.to_mono(mono_downmix=True)
    try:
        samples = cut.load_audio()
    except Exception as e:
        raise ValueError(f"cannot load audio ({_one_line(e)})") from e
    if not np.isfinite(samples).all():
        raise ValueError("audio has NaN/inf samples")
    return samples


def audio_items(paths: List[Path], features: dict) -> Tuple[list, Dict[str, str]]:
    """(id, speaker, fbank) for audio files, featurized with the model's settings (``features``:
    sampling rate and fbank config), each file its own speaker for CMVN; and the files that
    could not be used, with the reason (each logged as one warning)."""
    rate = features["sampling_rate"]
    extractor = Fbank(fbank_of(features))
    items, failures, resampled = [], {}, set()
    for p in paths:
        try:
            samples = load_audio_file(Path(p), rate, resampled)
            if compute_num_frames(samples.shape[1] / rate, extractor.frame_shift, rate) == 0:
                raise ValueError(f"too short for one frame ({samples.shape[1]} samples at {rate} Hz)")
            try:
                feats = extractor.extract(samples, rate)
            except Exception as e:
                raise ValueError(f"feature extraction failed ({_one_line(e)})") from e
            if not np.isfinite(feats).all():
                raise ValueError("non-finite features")
        except ValueError as e:
            failures[str(p)] = str(e)
            log.warning(f"{p}: skipped: {e}")
            continue
        items.append((str(p), str(p), feats))
    return items, failures


class CutFbank:
    """Fbank of a cut without features (e.g. ``asr-kd prepare kaldi`` manifests) from its audio,
    as the model's training data was featurized (its rate and fbank settings; other rates are
    resampled). A cut that cannot be used gives None and is named in one warning with the reason;
    :meth:`report` counts them."""

    def __init__(self, features: dict):
        self.rate = features["sampling_rate"]
        self.extractor = Fbank(fbank_of(features))
        self.failures: Dict[str, str] = {}
        self.resampled = 0

    def __call__(self, cut) -> Optional[np.ndarray]:
        try:
            if cut.sampling_rate != self.rate:
                self.resampled += 1
                cut = cut.resample(self.rate)
            if compute_num_frames(cut.duration, self.extractor.frame_shift, self.rate) == 0:
                raise ValueError(f"too short for one frame ({cut.duration:.4f} s)")
            try:
                samples = cut.load_audio()
            except Exception as e:
                raise ValueError(f"unreadable audio ({_one_line(e)})") from e
            if not np.isfinite(samples).all():
                raise ValueError("audio has NaN/inf samples")
            feats = self.extractor.extract(samples, self.rate)
            if not np.isfinite(feats).all():
                raise ValueError("non-finite features")
            return feats
        except ValueError as e:
            self.failures[cut.id] = str(e)
            log.warning(f"{cut.id}: skipped: {e}")
            return None

    def report(self, where) -> None:
        if self.resampled:
            log.info(f"{where}: {self.resampled} cuts resampled to {self.rate} Hz for the model")
        if self.failures:
            log.warning(f"{where}: {len(self.failures)} cuts could not be featurized (named above); decoding the rest")


def scoring_key(lm_weight: float, penalty: float = 0.0) -> str:
    """Name of a scoring setting in file names and decode.json: "13", or "13_0.5" with a penalty."""
    return f"{lm_weight:g}" if not penalty else f"{lm_weight:g}_{penalty:g}"


def frame_shards(items, nj: int) -> List[List[int]]:
    """Indices of ``items`` in at most ``nj`` contiguous parts of about equal frames."""
    total = sum(len(x) for _, _, x in items)
    shards, acc = [[] for _ in range(max(1, nj))], 0
    for i, (_, _, x) in enumerate(items):
        shards[min(len(shards) - 1, acc * len(shards) // max(total, 1))].append(i)
        acc += len(x)
    return [s for s in shards if s]


def load_for_decoding(model, device, lang_dir, lm, graph_dir=None, priors=None):
    """The scorer and graph of a model (the graph built once, then from its cache; by default in
    ``graph_<LM>`` beside the GMM that defines the senones); ``priors``: :func:`load_scorer`'s."""
    scorer = load_scorer(model, device, priors)
    graph_dir = graph_dir or scorer.gmm_dir / f"graph_{Path(lm).stem.removeprefix('G_')}"
    graph = build_graph(lang_dir, lm, scorer.ctx_dep, scorer.trans, graph_dir, scorer.model_files,
                        phones=scorer.phones, model_name=scorer.name)
    return scorer, graph


_JOB: dict = {}  # a decoding job's scorer and graph, loaded once per process


def _start_job(parent_pid: int, loader, loader_args, cmvn) -> None:
    die_with_parent(parent_pid)
    torch.set_num_threads(1)
    logging.getLogger("asr_kd").setLevel(logging.WARNING)
    scorer, graph = loader(*loader_args)
    scorer.cmvn = cmvn
    _JOB.update(scorer=scorer, graph=graph)


def _decode_job(items, opts, lm_weights, penalties):
    return decode_items(_JOB["scorer"], _JOB["graph"], items, opts, lm_weights, penalties, fit_cmvn=False,
                        progress=False)


def decode_parallel(scorer, graph, items, opts, lm_weights, penalties=(0.0,), nj: int = 1, loader=None,
                    loader_args=()):
    """:func:`decode_items` split over ``nj`` processes (Kaldi's ``--nj``): each job loads the
    scorer and graph with ``loader(*loader_args)`` (:func:`load_for_decoding`) and decodes a part
    of ``items`` with one thread. CMVN is fitted here on the whole set and given to every job, so
    the words are those of one job; the results come back in the order of ``items`` (timing:
    summed over the jobs)."""
    shards = frame_shards(items, nj)
    if nj <= 1 or len(shards) <= 1 or loader is None:
        return decode_items(scorer, graph, items, opts, lm_weights, penalties)
    scorer.fit_cmvn(items)
    spawn = multiprocessing.get_context("spawn")  # not fork: the parent has threads (torch, tqdm)
    with ProcessPoolExecutor(len(shards), mp_context=spawn, initializer=_start_job,
                             initargs=(os.getpid(), loader, loader_args, scorer.cmvn)) as pool:
        futures = [pool.submit(_decode_job, [items[i] for i in s], opts, lm_weights, penalties) for s in shards]
        parts = [f.result() for f in tqdm(futures, desc=f"decode ({len(shards)} jobs)", unit="job")]
    found: Dict[tuple, Dict[str, Optional[List[int]]]] = {}
    timing = {"acoustic_s": 0.0, "search_s": 0.0, "empty_lattices": 0, "unscored": []}
    for ids, hyps, t in parts:
        for k, v in hyps.items():
            found.setdefault(k, {}).update(zip(ids, v))
        for key in timing:
            timing[key] += t[key]
    ids = [u for u, _, _ in items]
    timing["acoustic_s"], timing["search_s"] = round(timing["acoustic_s"], 2), round(timing["search_s"], 2)
    return ids, {k: [v[u] for u in ids] for k, v in found.items()}, timing


def decode_items(scorer, graph, items, opts, lm_weights, penalties=(0.0,), fit_cmvn: bool = True,
                 progress: bool = True):
    """Hypotheses (word ids or None) per (LM weight, word insertion penalty), and timing.
    ``fit_cmvn=False``: the scorer's CMVN was fitted on the whole set already (a parallel job)."""
    decoder = Decoder(graph, opts)
    # Per-speaker CMVN from the whole set, as in training, not from whichever utterances share a batch.
    if fit_cmvn:
        scorer.fit_cmvn(items)
    lengths = [len(x) for _, _, x in items]
    found: Dict[tuple, Dict[str, Optional[List[int]]]] = {(w, p): {} for w in lm_weights for p in penalties}
    t_am = t_search = 0.0
    empty = 0
    unscored: List[str] = []
    for batch in tqdm(batches_by_frames(lengths, opts.max_batch_frames), desc="decode", unit="batch", mininterval=10,
                      disable=not progress):
        sub = [items[i] for i in batch]
        t0 = time.time()
        scores = scorer.loglikes(sub)
        t1 = time.time()
        ids = [u for u, _, _ in sub if u in scores]
        unscored += [u for u, _, _ in sub if u not in scores]
        if not ids:
            continue
        result = decoder.decode([scores[u] for u in ids], one_best=False)
        # One-best for every LM weight now, so that no lattice outlives its batch (memory).
        for p in penalties:
            for w, words in rescore_lm_weights(result.lattices, lm_weights, opts.acoustic_scale, p).items():
                found[w, p].update(zip(ids, words))
        empty += sum(1 for lat in result.lattices if lat is None)
        t_search += time.time() - t1
        t_am += t1 - t0
    ids = [u for u, _, _ in items]
    hyps = {k: [v.get(u) for u in ids] for k, v in found.items()}
    return ids, hyps, {"acoustic_s": round(t_am, 2), "search_s": round(t_search, 2), "empty_lattices": empty,
                       "unscored": unscored}


def tuned_setting(tuned_on: Path) -> Tuple[float, float]:
    """``(LM weight, word insertion penalty)`` that were best in the decode directory ``tuned_on``
    (e.g. ``exp/tri1/decode_dev``)."""
    tuned = read_json(tuned_on / "decode.json") if (tuned_on / "decode.json").is_file() else None
    if tuned is None:
        raise FileNotFoundError(f"{tuned_on / 'decode.json'} not found: decode the dev set first")
    return tuned["best_lm_weight"], tuned.get("best_word_ins_penalty", 0.0)


def _prepare(models, lang_dir: Path, lm: Path, graph_dir: Optional[Path], opts: DecodeOpts, tuned_on: Optional[Path],
             lm_weights: Sequence[float], penalties: Sequence[float], priors: Optional[Path] = None):
    """Scorer, graph (built once, then cached), its directory, word ids -> words, and the LM
    weights and penalties to score (those best in ``tuned_on`` when given)."""
    scorer, graph = load_for_decoding(models, opts.device, lang_dir, lm, graph_dir, priors)
    graph_dir = graph_dir or scorer.gmm_dir / f"graph_{lm.stem.removeprefix('G_')}"
    lang = Lang.load(lang_dir)
    id2word = {i: w for w, i in lang.words.items()}
    words = lambda ws: [] if ws is None else [id2word[w] for w in ws]  # noqa: E731
    if tuned_on:
        w, p = tuned_setting(tuned_on)
        lm_weights, penalties = [w], [p]
        log.info(f"LM weight {lm_weights[0]:g}, word insertion penalty {penalties[0]:g} (best in {tuned_on})")
    return scorer, graph, graph_dir, lang, words, list(lm_weights), list(penalties)


def decode_is_current(summary_path: Path, inputs: Sequence[Pathlike], models: Sequence[Pathlike],
                      priors: Optional[str]) -> bool:
    """A decode directory to keep: its ``decode.json`` is newer than every input (make's rule) and
    was written for these models and these senone priors (another ``--priors``, or none, redoes it)."""
    if not outputs_fresh([summary_path], inputs):
        return False
    done = read_json(summary_path)
    # decode.json files written before it recorded the priors had a DNN's own ("model"), or none (GMM)
    recorded = done.get("priors", None if priors is None else "model")
    return done.get("model") == [str(m) for m in models] and recorded == priors


def decode_cuts_step(models: Sequence[Pathlike], lang_dir: Path, lm: Path, cuts: Path, out_dir: Path,
                     opts: DecodeOpts, lm_weights: Sequence[float] = (10.0,), word_ins_penalties: Sequence[float] = (0.0,),
                     *, graph_dir: Optional[Path] = None, tuned_on: Optional[Path] = None, nj: int = 1,
                     subset_every: int = 1, force: bool = False, model_dir: Optional[Path] = None,
                     priors: Optional[Path] = None) -> Optional[dict]:
    """``asr-kd decode --cuts``: decode ``cuts`` with ``models`` (a GMM directory or DNN ``.pt``
    files) over the HCLG of ``lang_dir`` and the LM ``lm`` (cached in ``graph_dir``, by default
    ``graph_<LM>`` beside the GMM that defines the senones), score every LM weight and penalty
    (or the ones best in ``tuned_on``) into ``out_dir``; ``nj`` parallel jobs, every
    ``subset_every``-th utterance. ``model_dir`` (an export the models came from) is recorded;
    ``priors``: senone log-priors of DNNs other than their own (:func:`load_scorer`).
    Returns the ``decode.json`` summary, or None when it was newer than its inputs (skipped)."""
    scorer, graph, graph_dir, lang, words, lm_weights, word_ins_penalties = _prepare(
        models, lang_dir, lm, graph_dir, opts, tuned_on, lm_weights, word_ins_penalties, priors)
    summary_path = out_dir / "decode.json"
    model_paths = [Path(m) / "final.mdl" if Path(m).is_dir() else Path(m) for m in models]
    inputs = [*model_paths, *scorer.model_files, graph_dir / "HCLG.pt", cuts, lang_dir / "words.txt", lm,
              *([priors] if priors else [])]
    if not force and decode_is_current(summary_path, inputs, models, getattr(scorer, "priors", None)):
        log.info(f"{summary_path} exists, is newer than the model, graph and cuts and was decoded with the same "
                 "models and priors; skipping (use --force to redo)")
        return None
    if not cuts.is_file():
        raise FileNotFoundError(f"{cuts} not found: run the feature stage first")
    cut_set = load_cuts(cuts)
    if subset_every > 1:
        ids = sorted(cut_set.ids)[::subset_every]
        log.info(f"{cuts}: decoding every {subset_every}th utterance: {len(ids)} of {len(cut_set)}")
        cut_set = cut_set.subset(cut_ids=ids)
    items, refs, featurize = cut_items(cut_set, scorer, cuts)
    oov_refs = sum(1 for text in refs.values() for w in text if w not in lang.words)
    if oov_refs:
        log.warning(f"{oov_refs} reference words are outside the vocabulary (they count as errors)")
    # decode.json is this directory's completion mark: gone until the new one is complete, so a
    # decode killed midway is redone by the next run instead of leaving new hyps beside an old summary.
    summary_path.unlink(missing_ok=True)
    # The scoring files of an earlier decode go too: one at other LM weights (e.g. tuned on another
    # dev decode) would otherwise stay beside the new ones, looking as current.
    for pattern in ("hyp_*.txt", *SCORING_FILES):
        for old in out_dir.glob(pattern):
            old.unlink()
    t0 = time.time()
    ids, hyps, timing = decode_parallel(scorer, graph, items, opts, lm_weights, word_ins_penalties, nj,
                                        load_for_decoding, (models, opts.device, lang_dir, lm, graph_dir, priors))
    wall = time.time() - t0
    audio_s = sum(c.duration for c in cut_set)
    results, setting = {}, {}
    for (w, p), found in hyps.items():
        name = scoring_key(w, p)
        setting[name] = (w, p)
        hyp = {u: words(ws) for u, ws in zip(ids, found) if ws is not None}
        write_text(out_dir / f"hyp_{name}.txt", "".join(f"{u} {' '.join(hyp.get(u, []))}\n" for u in ids))
        stats = score_wer(refs, hyp, out_dir, name)
        results[name] = stats.as_dict()
    # Ties (common on small dev sets) go to the middle of the tied settings, not to an extreme.
    lowest = min(r["wer"] for r in results.values())
    tied = [k for k in results if results[k]["wer"] == lowest]
    best = tied[len(tied) // 2]
    summary = {
        "model": [str(m) for m in models],
        "model_dir": str(model_dir) if model_dir else None,
        "priors": getattr(scorer, "priors", None),
        "cuts": str(cuts),
        "graph_dir": str(graph_dir),
        "utterances": len(ids),
        "subset_every": subset_every,
        "scored": results[best]["utterances"],
        "excluded_empty_refs": results[best]["excluded_empty_refs"],
        "empty_lattices": timing["empty_lattices"],
        "oov_reference_words": oov_refs,
        "skipped_cuts": dict(featurize.failures) if featurize is not None else {},
        "frames": int(sum(len(x) for _, _, x in items)),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "real_time_factor": round(wall / max(audio_s, 1e-9), 4),
        "nj": nj,
        "threads": torch.get_num_threads(),  # of each job (--nj > 1: one each)
        "parameters": scorer.parameters,
        "acoustic_real_time_factor": round(timing["acoustic_s"] / max(audio_s, 1e-9), 4),
        "search_real_time_factor": round(timing["search_s"] / max(audio_s, 1e-9), 4),
        **timing,
        "opts": vars(opts),
        "tuned_on": str(tuned_on) if tuned_on else None,
        "best": best,
        "best_lm_weight": float(setting[best][0]),
        "best_word_ins_penalty": float(setting[best][1]),
        "wer": results[best]["wer"],
        "by_lm_weight": results,
    }
    write_json(summary_path, summary)
    log.info(f"{out_dir}: best LM weight {setting[best][0]:g}, word insertion penalty {setting[best][1]:g}: "
             f"%WER {results[best]['wer']:.2f} over {results[best]['utterances']} scored utterances of {len(ids)} "
             f"({timing['empty_lattices']} empty lattices), "
             f"RTF {summary['real_time_factor']}")
    return summary


def transcribe_audio_step(models: Sequence[Pathlike], lang_dir: Path, lm: Path, audio: Sequence[Path],
                          opts: DecodeOpts, lm_weight: float = 10.0, word_ins_penalty: float = 0.0, *,
                          graph_dir: Optional[Path] = None, tuned_on: Optional[Path] = None,
                          priors: Optional[Path] = None) -> int:
    """``asr-kd decode --audio``: print ``file<TAB>transcript`` for each usable file (at
    ``lm_weight`` and ``word_ins_penalty``, or those best in ``tuned_on``); 1 if any file failed,
    else 0."""
    scorer, graph, _, _, words, lm_weights, penalties = _prepare(models, lang_dir, lm, graph_dir, opts, tuned_on,
                                                                 [lm_weight], [word_ins_penalty], priors)
    items, failures = audio_items(audio, scorer.features)
    w, p = lm_weights[0], penalties[0]
    if items:
        ids, hyps, timing = decode_items(scorer, graph, items, opts, [w], [p])
        frames = {u: len(x) for u, _, x in items}
        for u in timing["unscored"]:
            failures[u] = "no usable features"
            log.warning(f"{u}: skipped: no usable features")
        for u, ws in zip(ids, hyps[w, p]):
            if u in failures:
                continue
            if ws is None:
                log.warning(f"{u}: no path through the graph in {frames[u]} frames (empty lattice): empty transcript")
            print(f"{u}\t{' '.join(words(ws))}", flush=True)
    if failures:
        log.warning(f"{len(failures)} of {len(audio)} audio files failed (named above); "
                    f"{len(audio) - len(failures)} transcribed")
        return 1
    return 0


def cut_items(cut_set, scorer, path: Path) -> Tuple[list, Dict[str, List[str]], Optional[CutFbank]]:
    """The ``(utt_id, speaker, fbank)`` items of ``cut_set`` (read from ``path``) for ``scorer``, their
    transcripts (words) and, for cuts without features, the :class:`CutFbank` that made their fbank
    from the audio (its ``failures``: the cuts left out, each named in a warning)."""
    with_features = next(iter(cut_set.subset(first=1))).has_features if len(cut_set) else True
    if with_features:
        _check_cuts_rate(scorer, cut_set, path)
    else:
        log.info(f"{path}: cuts without features: fbank from their audio with {scorer.name}'s settings "
                 f"({scorer.features['sampling_rate']} Hz)")
    items, texts = [], {}
    featurize = None if with_features else CutFbank(scorer.features)
    for c in cut_set:
        feats = c.load_features() if featurize is None else featurize(c)
        if feats is None:
            continue
        texts[c.id] = " ".join(s.text or "" for s in c.supervisions).split()
        items.append((c.id, c.supervisions[0].speaker if c.supervisions else c.id, feats))
    if featurize is not None:
        featurize.report(path)
        if not items:
            raise UserError(f"{path}: no cut could be featurized (named above)")
    return items, texts, featurize


def _check_cuts_rate(scorer, cuts, path) -> None:
    """Cuts at another rate than the model's features were made for another model."""
    try:
        rate = scorer.features["sampling_rate"]
    except ValueError:
        return  # an older GMM that records no rate: nothing to check against
    found = {c.sampling_rate for c in cuts.subset(first=1)}
    if found and found != {rate}:
        raise ValueError(f"{path}: cuts at {found.pop()} Hz but {scorer.name} was trained on {rate} Hz features")
