"""``asr-kd decode``: decode a data set (manifests) or audio files with a GMM or DNN model.

Data set::

    asr-kd decode --model exp/tri1 --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --cuts data/fbank/X_cuts_test.jsonl.gz --out-dir exp/tri1/decode_test --lm-weights 7 9 11 13 15 17

writes ``wer_{lmwt}``, ``per_utt_{lmwt}``, ``errs_{lmwt}``, ``hyp_{lmwt}.txt`` per LM weight (with
``--word-ins-penalties``, Kaldi's score.sh grid, per ``{lmwt}_{penalty}`` for the non-zero penalties)
and ``decode.json`` (scored utterances, empty lattices, real-time factor, the best LM weight and
penalty). Tune both on a dev set and pass the chosen ones to the test set with ``--lm-weights W
--word-ins-penalties P``.

A model exported by ``asr-kd export`` decodes from its directory (or .tar.gz) alone, with the lang,
LM and HCLG it holds (``--lang-dir``/``--lm`` replace them)::

    asr-kd decode --model-dir export/dnn_distilled --cuts data/fbank/X_cuts_test.jsonl.gz --out-dir decode_test

Audio files (wav, flac, ogg/opus) print one transcript per file::

    asr-kd decode --model exp/dnn_distilled_T2/final.pt --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --audio a.wav b.flac

They are featurized as the model's training data was (its recorded sampling rate and fbank
settings: other rates are resampled, several channels mixed down). A file that cannot be decoded
(unreadable, empty, no samples, too short for one frame, non-finite) is named in one warning with
the reason and skipped; the others are still transcribed, and the exit status is then 1. A wav
file shorter than its header declares is decoded as it is, with a warning.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile
import torch
from lhotse import Fbank, Recording
from lhotse.utils import compute_num_frames
from tqdm import tqdm

from asr_kd.decode.acoustic import load_scorer
from asr_kd.decode.decoder import DecodeOpts, Decoder, batches_by_frames, rescore_lm_weights
from asr_kd.decode.graph import build_graph
from asr_kd.export import decode_inputs
from asr_kd.lang import Lang
from asr_kd.model_info import fbank_of
from asr_kd.score import score_wer
from asr_kd.utils import die_with_parent, load_cuts, outputs_fresh, read_json, write_json, write_text

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", nargs="+",
                       help="a GMM dir (final.mdl), or DNN final.pt file(s): several make an ensemble")
    model.add_argument("--model-dir", type=Path,
                       help="a directory (or .tar.gz) written by asr-kd export: its model, and its lang, LM and "
                            "graph where --lang-dir, --lm, --graph-dir are not given")
    parser.add_argument("--lang-dir", type=Path,
                        help="lang directory (words.txt, L_disambig.fst); required with --model")
    parser.add_argument("--lm", type=Path, help="G.fst (from asr-kd lm); required with --model")
    parser.add_argument("--graph-dir", type=Path, help="HCLG cache (default: <dir of the GMM that defines the senones>/graph_<LM name without 'G_'>, "
                             "e.g. exp/tri1/graph_3gram for G_3gram.fst, for the GMM and for DNNs trained on its "
                             "labels; with --model-dir: the export's graph, or <export>/graph_<LM> for a lang or LM "
                             "of your own)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--cuts", type=Path, help="cuts with fbank features and reference transcripts")
    src.add_argument("--audio", type=Path, nargs="+",
                     help="audio files to transcribe (resampled to the model's rate, mixed down to mono); a file that "
                          "cannot be decoded is named in a warning and skipped, and the exit status is then 1")
    parser.add_argument("--out-dir", type=Path, help="decode directory (required with --cuts)")
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[10.0],
                        help="LM weights to score (lattice rescoring; 1/acoustic scale is the first pass)")
    parser.add_argument("--word-ins-penalties", type=float, nargs="+", default=[0.0],
                        help="word insertion penalties to score with each LM weight (Kaldi's score.sh: 0.0 0.5 1.0)")
    parser.add_argument("--acoustic-scale", type=float, default=0.1, help="acoustic scale of the first pass")
    parser.add_argument("--search-beam", type=float, default=13.0, help="Kaldi's --beam (decode.sh default)")
    parser.add_argument("--output-beam", type=float, default=6.0, help="Kaldi's --lattice-beam")
    parser.add_argument("--max-active", type=int, default=7000, help="Kaldi's --max-active")
    parser.add_argument("--min-active", type=int, default=30, help="fewest active states per frame")
    parser.add_argument("--max-batch-frames", type=int, default=10000, help="frames per k2 batch (memory)")
    parser.add_argument("--tuned-on", type=Path, metavar="DEV_DECODE_DIR",
                        help="use the LM weight and word insertion penalty that were best in this decode directory "
                             "(e.g. exp/tri1/decode_dev); replaces --lm-weights and --word-ins-penalties")
    parser.add_argument("--nj", type=int, default=1,
                        help="parallel decoding jobs (processes with one thread each; CMVN is fitted on the whole "
                             "set first, so the words are those of one job)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (acoustic scores and search)")
    parser.add_argument("--subset-every", type=int, default=1,
                        help="decode only every K-th utterance (sorted by id): a fixed, recorded test subset for "
                             "slow CPU runs; decode.json and the WER line name it")
    parser.add_argument("--force", action="store_true", help="decode again even if --out-dir has a decode.json newer than its inputs")


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


def load_for_decoding(model, device, lang_dir, lm, graph_dir=None):
    """The scorer and graph of a model (the graph built once, then from its cache; by default in
    ``graph_<LM>`` beside the GMM that defines the senones)."""
    scorer = load_scorer(model, device)
    graph_dir = graph_dir or scorer.gmm_dir / f"graph_{Path(lm).stem.removeprefix('G_')}"
    graph = build_graph(lang_dir, lm, scorer.ctx, scorer.trans, graph_dir, scorer.model_files,
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
    ctx = multiprocessing.get_context("spawn")  # not fork: the parent has threads (torch, tqdm)
    with ProcessPoolExecutor(len(shards), mp_context=ctx, initializer=_start_job,
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


def run(args) -> int:
    if getattr(args, "model_dir", None) is not None:
        decode_inputs(args)  # the export's model, and its lang, LM and graph where not given
    for flag in ("lang_dir", "lm"):
        if getattr(args, flag) is None:
            raise ValueError(f"--{flag.replace('_', '-')} is required with --model "
                             "(an export's --model-dir may hold it)")
    scorer, graph = load_for_decoding(args.model, args.device, args.lang_dir, args.lm, args.graph_dir)
    graph_dir = args.graph_dir or scorer.gmm_dir / f"graph_{args.lm.stem.removeprefix('G_')}"
    lang = Lang.load(args.lang_dir)
    id2word = {i: w for w, i in lang.words.items()}
    opts = DecodeOpts(acoustic_scale=args.acoustic_scale, search_beam=args.search_beam, output_beam=args.output_beam,
                      min_active_states=args.min_active, max_active_states=args.max_active,
                      max_batch_frames=args.max_batch_frames, device=args.device)
    words = lambda ws: [] if ws is None else [id2word[w] for w in ws]  # noqa: E731

    if args.tuned_on:
        tuned = read_json(args.tuned_on / "decode.json") if (args.tuned_on / "decode.json").is_file() else None
        if tuned is None:
            raise FileNotFoundError(f"{args.tuned_on / 'decode.json'} not found: decode the dev set first")
        args.lm_weights, args.word_ins_penalties = [tuned["best_lm_weight"]], [tuned.get("best_word_ins_penalty", 0.0)]
        log.info(f"LM weight {args.lm_weights[0]:g}, word insertion penalty {args.word_ins_penalties[0]:g} "
                 f"(best in {args.tuned_on})")
    if args.audio:
        return decode_audio(args, scorer, graph, opts, words)

    if args.out_dir is None:
        raise SystemExit("--out-dir is required with --cuts")
    summary_path = args.out_dir / "decode.json"
    models = [Path(m) / "final.mdl" if Path(m).is_dir() else Path(m) for m in args.model]
    inputs = [*models, *scorer.model_files, graph_dir / "HCLG.pt", args.cuts, args.lang_dir / "words.txt", args.lm]
    if not args.force and outputs_fresh([summary_path], inputs):
        log.info(f"{summary_path} exists and is newer than the model, graph and cuts; skipping (use --force to redo)")
        return 0
    if not args.cuts.is_file():
        raise FileNotFoundError(f"{args.cuts} not found: run the feature stage first")
    cuts = load_cuts(args.cuts)
    _check_cuts_rate(scorer, cuts, args.cuts)
    if args.subset_every > 1:
        ids = sorted(cuts.ids)[:: args.subset_every]
        log.info(f"{args.cuts}: decoding every {args.subset_every}th utterance: {len(ids)} of {len(cuts)}")
        cuts = cuts.subset(cut_ids=ids)
    refs, items = {}, []
    oov_refs = 0
    for c in cuts:
        text = " ".join(s.text or "" for s in c.supervisions).split()
        oov_refs += sum(1 for w in text if w not in lang.words)
        refs[c.id] = text
        items.append((c.id, c.supervisions[0].speaker if c.supervisions else c.id, c.load_features()))
    if oov_refs:
        log.warning(f"{oov_refs} reference words are outside the vocabulary (they count as errors)")
    # decode.json is this directory's completion mark: gone until the new one is complete, so a
    # decode killed midway is redone by the next run instead of leaving new hyps beside an old summary.
    summary_path.unlink(missing_ok=True)
    t0 = time.time()
    ids, hyps, timing = decode_parallel(scorer, graph, items, opts, args.lm_weights, args.word_ins_penalties, args.nj,
                                        load_for_decoding, (args.model, args.device, args.lang_dir, args.lm, graph_dir))
    wall = time.time() - t0
    audio_s = sum(c.duration for c in cuts)
    results, setting = {}, {}
    for (w, p), found in hyps.items():
        name = scoring_key(w, p)
        setting[name] = (w, p)
        hyp = {u: words(ws) for u, ws in zip(ids, found) if ws is not None}
        write_text(args.out_dir / f"hyp_{name}.txt", "".join(f"{u} {' '.join(hyp.get(u, []))}\n" for u in ids))
        stats = score_wer(refs, hyp, args.out_dir, name)
        results[name] = stats.as_dict()
    # Ties (common on small dev sets) go to the middle of the tied settings, not to an extreme.
    lowest = min(r["wer"] for r in results.values())
    tied = [k for k in results if results[k]["wer"] == lowest]
    best = tied[len(tied) // 2]
    summary = {
        "model": [str(m) for m in args.model],
        "model_dir": str(args.model_dir) if getattr(args, "model_dir", None) else None,
        "cuts": str(args.cuts),
        "graph_dir": str(graph_dir),
        "utterances": len(ids),
        "subset_every": args.subset_every,
        "scored": results[best]["utterances"],
        "excluded_empty_refs": results[best]["excluded_empty_refs"],
        "empty_lattices": timing["empty_lattices"],
        "oov_reference_words": oov_refs,
        "frames": int(sum(len(x) for _, _, x in items)),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "real_time_factor": round(wall / max(audio_s, 1e-9), 4),
        "nj": args.nj,
        "search_real_time_factor": round(timing["search_s"] / max(audio_s, 1e-9), 4),
        **timing,
        "opts": vars(opts),
        "tuned_on": str(args.tuned_on) if args.tuned_on else None,
        "best": best,
        "best_lm_weight": float(setting[best][0]),
        "best_word_ins_penalty": float(setting[best][1]),
        "wer": results[best]["wer"],
        "by_lm_weight": results,
    }
    write_json(summary_path, summary)
    log.info(f"{args.out_dir}: best LM weight {setting[best][0]:g}, word insertion penalty {setting[best][1]:g}: "
             f"%WER {results[best]['wer']:.2f} over {len(ids)} utterances ({timing['empty_lattices']} empty lattices), "
             f"RTF {summary['real_time_factor']}")
    return 0


def decode_audio(args, scorer, graph, opts, words) -> int:
    """Print ``file<TAB>transcript`` for each usable file; 1 if any file failed, else 0."""
    items, failures = audio_items(args.audio, scorer.features)
    w, p = args.lm_weights[0], args.word_ins_penalties[0]
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
        log.warning(f"{len(failures)} of {len(args.audio)} audio files failed (named above); "
                    f"{len(args.audio) - len(failures)} transcribed")
        return 1
    return 0


def _check_cuts_rate(scorer, cuts, path) -> None:
    """Cuts at another rate than the model's features were made for another model."""
    try:
        rate = scorer.features["sampling_rate"]
    except ValueError:
        return  # an older GMM that records no rate: nothing to check against
    found = {c.sampling_rate for c in cuts.subset(first=1)}
    if found and found != {rate}:
        raise ValueError(f"{path}: cuts at {found.pop()} Hz but {scorer.name} was trained on {rate} Hz features")
