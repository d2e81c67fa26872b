"""``asr-kd decode``: decode a data set (manifests) or audio files with a GMM or DNN model.

Data set::

    asr-kd decode --model exp/tri1 --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --cuts data/fbank/X_cuts_test.jsonl.gz --out-dir exp/tri1/decode_test --lm-weights 7 9 11 13 15 17

writes ``wer_{lmwt}``, ``per_utt_{lmwt}``, ``errs_{lmwt}``, ``hyp_{lmwt}.txt`` per LM weight (with
``--word-ins-penalties``, Kaldi's score.sh grid, per ``{lmwt}_{penalty}`` for the non-zero penalties)
and ``decode.json`` (scored utterances, empty lattices, real-time factor, the best LM weight and
penalty). Tune both on a dev set and pass the chosen ones to the test set with ``--lm-weights W
--word-ins-penalties P``.

Audio files (wav, flac, ogg/opus; resampled to the model's rate) print one transcript per file::

    asr-kd decode --model exp/dnn_distilled_T2/final.pt --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --audio a.wav b.flac
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List, Optional

from tqdm import tqdm

from asr_kd.utils import write_json, write_text

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", nargs="+", required=True,
                        help="a GMM dir (final.mdl), or DNN final.pt file(s): several make an ensemble")
    parser.add_argument("--lang-dir", type=Path, required=True)
    parser.add_argument("--lm", type=Path, required=True, help="G.fst (from asr-kd lm)")
    parser.add_argument("--graph-dir", type=Path, help="HCLG cache (default: <dir of the GMM that defines the senones>/graph_<LM name without 'G_'>, "
                             "e.g. exp/tri1/graph_3gram for G_3gram.fst, for the GMM and for DNNs trained on its labels)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--cuts", type=Path, help="cuts with fbank features and reference transcripts")
    src.add_argument("--audio", type=Path, nargs="+", help="audio files to transcribe")
    parser.add_argument("--out-dir", type=Path, help="decode directory (required with --cuts)")
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[10.0],
                        help="LM weights to score (lattice rescoring; 1/acoustic scale is the first pass)")
    parser.add_argument("--word-ins-penalties", type=float, nargs="+", default=[0.0],
                        help="word insertion penalties to score with each LM weight (Kaldi's score.sh: 0.0 0.5 1.0)")
    parser.add_argument("--acoustic-scale", type=float, default=0.1)
    parser.add_argument("--search-beam", type=float, default=13.0, help="Kaldi's --beam (decode.sh default)")
    parser.add_argument("--output-beam", type=float, default=6.0, help="Kaldi's --lattice-beam")
    parser.add_argument("--max-active", type=int, default=7000, help="Kaldi's --max-active")
    parser.add_argument("--min-active", type=int, default=30)
    parser.add_argument("--max-batch-frames", type=int, default=10000, help="frames per k2 batch (memory)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--subset-every", type=int, default=1,
                        help="decode only every K-th utterance (sorted by id): a fixed, recorded test subset for "
                             "slow CPU runs; decode.json and the WER line name it")
    parser.add_argument("--force", action="store_true")


def audio_items(paths: List[Path], sampling_rate: int):
    """(id, speaker, fbank) for audio files; each file is its own speaker for CMVN."""
    from lhotse import Fbank, Recording

    from asr_kd.data.features import fbank_config

    extractor = Fbank(fbank_config(sampling_rate))
    items = []
    for p in paths:
        try:
            rec = Recording.from_file(p)
        except Exception as e:
            log.error(f"{p}: cannot read audio ({type(e).__name__}: {e}); skipped")
            continue
        if rec.sampling_rate != sampling_rate:
            rec = rec.resample(sampling_rate)
        samples = rec.load_audio()[:1]
        items.append((str(p), str(p), extractor.extract(samples, sampling_rate)))
    return items


def scoring_key(lm_weight: float, penalty: float = 0.0) -> str:
    """Name of a scoring setting in file names and decode.json: "13", or "13_0.5" with a penalty."""
    return f"{lm_weight:g}" if not penalty else f"{lm_weight:g}_{penalty:g}"


def decode_items(scorer, graph, items, opts, lm_weights, penalties=(0.0,)):
    """Hypotheses (word ids or None) per (LM weight, word insertion penalty), and timing."""
    from asr_kd.decode.decoder import Decoder, batches_by_frames, rescore_lm_weights

    decoder = Decoder(graph, opts)
    # Per-speaker CMVN from the whole set, as in training, not from whichever utterances share a batch.
    scorer.fit_cmvn(items)
    lengths = [len(x) for _, _, x in items]
    found: Dict[tuple, Dict[str, Optional[List[int]]]] = {(w, p): {} for w in lm_weights for p in penalties}
    t_am = t_search = 0.0
    empty = 0
    for batch in tqdm(batches_by_frames(lengths, opts.max_batch_frames), desc="decode", unit="batch", mininterval=10):
        sub = [items[i] for i in batch]
        t0 = time.time()
        scores = scorer.loglikes(sub)
        t1 = time.time()
        ids = [u for u, _, _ in sub if u in scores]
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
    return ids, hyps, {"acoustic_s": round(t_am, 2), "search_s": round(t_search, 2), "empty_lattices": empty}


def run(args) -> int:
    import k2  # noqa: F401  (fail early with a clear message if k2 is missing)
    from lhotse import load_manifest

    from asr_kd.decode.acoustic import load_scorer
    from asr_kd.decode.decoder import DecodeOpts
    from asr_kd.decode.graph import build_graph
    from asr_kd.lang import Lang
    from asr_kd.score import score_wer

    scorer = load_scorer(args.model, args.device)
    graph_dir = args.graph_dir or scorer.gmm_dir / f"graph_{args.lm.stem.removeprefix('G_')}"
    graph = build_graph(args.lang_dir, args.lm, scorer.ctx, scorer.trans, graph_dir, scorer.model_files)
    lang = Lang.load(args.lang_dir)
    id2word = {i: w for w, i in lang.words.items()}
    opts = DecodeOpts(acoustic_scale=args.acoustic_scale, search_beam=args.search_beam, output_beam=args.output_beam,
                      min_active_states=args.min_active, max_active_states=args.max_active,
                      max_batch_frames=args.max_batch_frames, device=args.device)
    words = lambda ws: [] if ws is None else [id2word[w] for w in ws]  # noqa: E731

    if args.audio:
        rate = getattr(scorer, "sampling_rate", None) or 16000
        items = audio_items(args.audio, rate)
        if not items:
            log.error("none of the audio files could be read")
            return 1
        w, p = args.lm_weights[0], args.word_ins_penalties[0]
        ids, hyps, _ = decode_items(scorer, graph, items, opts, [w], [p])
        for u, ws in zip(ids, hyps[w, p]):
            print(f"{u}\t{' '.join(words(ws))}")
        return 0

    if args.out_dir is None:
        raise SystemExit("--out-dir is required with --cuts")
    summary_path = args.out_dir / "decode.json"
    if summary_path.exists() and not args.force:
        log.info(f"{summary_path} exists; skipping (use --force to redo)")
        return 0
    if not args.cuts.is_file():
        raise FileNotFoundError(f"{args.cuts} not found: run the feature stage first")
    cuts = load_manifest(args.cuts)
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
    t0 = time.time()
    ids, hyps, timing = decode_items(scorer, graph, items, opts, args.lm_weights, args.word_ins_penalties)
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
        "cuts": str(args.cuts),
        "graph_dir": str(graph_dir),
        "utterances": len(ids),
        "subset_every": args.subset_every,
        "scored": results[best]["utterances"],
        "empty_lattices": timing["empty_lattices"],
        "oov_reference_words": oov_refs,
        "frames": int(sum(len(x) for _, _, x in items)),
        "audio_s": round(audio_s, 2),
        "wall_s": round(wall, 2),
        "real_time_factor": round(wall / max(audio_s, 1e-9), 4),
        "search_real_time_factor": round(timing["search_s"] / max(audio_s, 1e-9), 4),
        **timing,
        "opts": vars(opts),
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
