#!/usr/bin/env python
"""Our batched k2 decoder against Kaldi's FasterDecoder (kaldi-decoder) on the same HCLG and scores.

Both search the one graph (``HCLG.pt`` for k2, ``HCLG.fst`` for Kaldi; labels pdf-id + 1) with the
same acoustic scores (scaled log-likelihoods from a GMM or DNN model; Kaldi's ``DecodableCtc``
reads column ``label - 1``), at matched beam / max-active, single-threaded, interleaved in one
process so that machine noise hits both alike. Reported per setting: frames/s of each, their ratio,
the fraction of utterances with the same 1-best word sequence, and each decoder's WER.

usage (from a recipe directory whose stages 0-7 have run):
  ../../benchmarks/bench_decoder.py --model exp/tri1 --cuts data/fbank/speechocean762_cuts_dev.jsonl.gz \\
      --lang-dir data/lang --lm data/lm/G_3gram.fst --graph-dir exp/tri1/graph_3gram --settings 13:3000 16:7000
Writes benchmarks/results/decoder_<name>.json.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kaldi_decoder  # noqa: E402
import kaldifst  # noqa: E402
from lhotse import load_manifest  # noqa: E402

from asr_kd.decode.acoustic import load_scorer  # noqa: E402
from asr_kd.decode.decoder import Decoder, DecodeOpts, batches_by_frames  # noqa: E402
from asr_kd.decode.graph import build_graph  # noqa: E402
from asr_kd.lang import Lang  # noqa: E402
from asr_kd.score import compute_wer  # noqa: E402
from asr_kd.utils import write_json  # noqa: E402


def decode_k2(graph, scores, ids, beam, max_active, acoustic_scale):
    decoder = Decoder(graph, DecodeOpts(acoustic_scale=acoustic_scale, search_beam=beam, max_active_states=max_active))
    hyps = {}
    for batch in batches_by_frames([len(scores[u]) for u in ids], decoder.opts.max_batch_frames):
        result = decoder.decode([scores[ids[i]] for i in batch])
        hyps.update({ids[i]: words for i, words in zip(batch, result.words)})
    return hyps


def decode_kaldi(fst, scores, ids, beam, max_active, acoustic_scale):
    decoder = kaldi_decoder.FasterDecoder(fst, kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active,
                                                                                  min_active=30))
    hyps = {}
    for u in ids:
        decoder.decode(kaldi_decoder.DecodableCtc(np.ascontiguousarray(acoustic_scale * scores[u].numpy(), np.float32)))
        ok, best = decoder.get_best_path()
        hyps[u] = list(kaldifst.get_linear_symbol_sequence(best)[2]) if ok else None
    return hyps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", required=True, help="a GMM dir or DNN final.pt file(s)")
    ap.add_argument("--cuts", type=Path, required=True)
    ap.add_argument("--lang-dir", type=Path, required=True)
    ap.add_argument("--lm", type=Path, required=True)
    ap.add_argument("--graph-dir", type=Path, required=True)
    ap.add_argument("--num-utts", type=int, default=0, help="first N utterances (0 = all)")
    ap.add_argument("--settings", nargs="+", default=["13:3000", "16:7000"], help="beam:max_active pairs")
    ap.add_argument("--acoustic-scale", type=float, default=0.1)
    ap.add_argument("--name", help="result file suffix (default: <cuts name>_<model name>)")
    ap.add_argument("--recipe-dir", type=Path, help="also write the rows into this recipe's RESULTS.md")
    ap.add_argument("--system", default="gmm-tri", help="system name for the RESULTS rows")
    ap.add_argument("--set", default="dev", dest="set_name")
    args = ap.parse_args()
    torch.set_num_threads(1)  # both decoders single-threaded

    scorer = load_scorer(args.model)
    graph = build_graph(args.lang_dir, args.lm, scorer.ctx_dep, scorer.trans, args.graph_dir, scorer.model_files,
                        phones=scorer.phones, model_name=scorer.name)
    fst = kaldifst.StdVectorFst.read(str(args.graph_dir / "HCLG.fst"))
    cuts = load_manifest(args.cuts)
    if args.num_utts:
        cuts = cuts.subset(first=args.num_utts)
    items = [(c.id, c.supervisions[0].speaker, c.load_features()) for c in cuts]
    refs = {c.id: " ".join(s.text or "" for s in c.supervisions).split() for c in cuts}
    scores = scorer.loglikes(items)
    ids = [u for u, _, _ in items if u in scores]
    frames = sum(len(scores[u]) for u in ids)
    id2word = {i: w for w, i in Lang.load(args.lang_dir).words.items()}

    rows = []
    for setting in args.settings:
        beam, max_active = float(setting.split(":")[0]), int(setting.split(":")[1])
        times, hyps = {}, {}
        for name, fn, g in (("k2", decode_k2, graph), ("kaldi", decode_kaldi, fst)):
            t0 = time.perf_counter()
            hyps[name] = fn(g, scores, ids, beam, max_active, args.acoustic_scale)
            times[name] = time.perf_counter() - t0
        same = sum(1 for u in ids if hyps["k2"][u] == hyps["kaldi"][u])
        wer = {}
        for name in hyps:
            words = {u: [id2word[w] for w in h] for u, h in hyps[name].items() if h is not None}
            wer[name] = round(compute_wer({u: refs[u] for u in ids}, words)[0].wer, 2)
        row = {"beam": beam, "max_active": max_active, "utterances": len(ids), "frames": frames,
               "same_1best_pct": round(100 * same / len(ids), 2),
               "k2_frames_per_s": round(frames / times["k2"]), "kaldi_frames_per_s": round(frames / times["kaldi"]),
               "k2_over_kaldi_speed": round(times["kaldi"] / times["k2"], 3), "wer_k2": wer["k2"], "wer_kaldi": wer["kaldi"]}
        print(json.dumps(row), flush=True)
        rows.append(row)

    name = args.name or f"{args.cuts.name.split('.')[0]}_{Path(args.model[0]).parent.name if args.model[0].endswith('.pt') else Path(args.model[0]).name}"
    out = REPO / "benchmarks" / "results" / f"decoder_{name}.json"
    write_json(out, {
        "command": " ".join(sys.argv), "cwd": str(Path.cwd()), "model": args.model, "cuts": str(args.cuts),
        "graph": json.loads((args.graph_dir / "HCLG.json").read_text()), "acoustic_scale": args.acoustic_scale,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                    "torch": torch.__version__, "k2": importlib.metadata.version("k2")},
        "results": rows,
    })
    print(f"-> {out}")
    if args.recipe_dir:
        from asr_kd.results import update_results

        table = "Decoder: k2 (batched) vs kaldi-decoder's FasterDecoder"
        note = ("The same HCLG and acoustic scores, single-threaded, interleaved in one process "
                "(benchmarks/bench_decoder.py); same_1best_pct = utterances with identical 1-best words.")
        update_results(args.recipe_dir, [{"system": f"{args.system}-beam{r['beam']:g}-active{r['max_active']}",
                                          "set": args.set_name, **r, "command": " ".join(sys.argv)} for r in rows],
                       table, notes={table: note})


if __name__ == "__main__":
    main()
