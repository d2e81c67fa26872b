#!/usr/bin/env python
"""The cost of scoring every LM weight x word insertion penalty on a batch's lattices, in one run:
the decoder's rescoring (one FsaVec whose scores are reassigned per weight, so k2 keeps the
lattice topology it caches) against the previous way (a fresh clone per weight, which recomputes
that topology each time), on the same lattices, with a check that both give the same words.

Data (read only): a recipe directory after its decoding stages (default: speechocean762; a model
relative to it, its dev features, lang, LM and the tri1 graph). Lattices come from the recipe's
decoder settings (beam 13, max-active 3000) on every K-th dev utterance.

usage: benchmarks/bench_rescore.py [--model exp/dnn_seed1/final.pt] [--subset-every 5]
Writes benchmarks/results/rescore.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import k2  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_gmm_jobs import cpu_model  # noqa: E402
from asr_kd.decode.decoder import (DecodeOpts, Decoder, batches_by_frames, path_words,  # noqa: E402
                                   rescore_lm_weights)
from asr_kd.decode.decoder import _words_per_arc  # noqa: E402
from asr_kd.decode.steps import load_for_decoding  # noqa: E402
from asr_kd.utils import load_cuts, write_json  # noqa: E402

LM_WEIGHTS = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 19, 21, 23]  # local/defaults.sh's grid
PENALTIES = [0.0, 0.5, 1.0]


def rescore_by_clone(lattices, lm_weights, acoustic_scale, word_ins_penalty=0.0):
    """The rescoring as it was before: a clone of the FsaVec per LM weight."""
    kept = [lat for lat in lattices if lat is not None]
    vec = k2.create_fsa_vec(kept)
    am = (vec.scores - vec.graph_scores) / acoustic_scale
    graph = vec.graph_scores - word_ins_penalty * _words_per_arc(vec) if word_ins_penalty else vec.graph_scores
    out = {}
    for w in lm_weights:
        lat = vec.clone()
        lat.scores = am / w + graph
        words = iter(path_words(k2.shortest_path(lat, use_double_scores=True)))
        out[w] = [next(words) if x is not None else None for x in lattices]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe-dir", type=Path, default=REPO / "recipes" / "speechocean762")
    parser.add_argument("--model", default="exp/dnn_seed1/final.pt", help="relative to --recipe-dir")
    parser.add_argument("--cuts", default="data/fbank/speechocean762_cuts_dev.jsonl.gz")
    parser.add_argument("--subset-every", type=int, default=5, help="decode every K-th utterance")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "rescore.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.chdir(args.recipe_dir)
    opts = DecodeOpts(max_active_states=3000)
    scorer, graph = load_for_decoding([args.model], "cpu", Path("data/lang"), Path("data/lm/G_3gram.fst"),
                                      Path("exp/tri1/graph_3gram"))
    cuts = load_cuts(args.cuts)
    ids = sorted(cuts.ids)[:: args.subset_every]
    items = [(c.id, c.supervisions[0].speaker, c.load_features()) for c in cuts.subset(cut_ids=ids)]
    scorer.fit_cmvn(items)
    decoder = Decoder(graph, opts)
    times = {"search": 0.0, "rescore": 0.0, "rescore_by_clone": 0.0}
    same, arcs = True, 0
    for batch in batches_by_frames([len(x) for _, _, x in items], opts.max_batch_frames):
        sub = [items[i] for i in batch]
        scores = scorer.loglikes(sub)
        t0 = time.perf_counter()
        lattices = decoder.decode([scores[u] for u, _, _ in sub], one_best=False).lattices
        times["search"] += time.perf_counter() - t0
        arcs += sum(lat.num_arcs for lat in lattices if lat is not None)
        for p in PENALTIES:  # interleaved, so that a change of load on the machine hits both
            t0 = time.perf_counter()
            new = rescore_lm_weights(lattices, LM_WEIGHTS, opts.acoustic_scale, p)
            t1 = time.perf_counter()
            old = rescore_by_clone(lattices, LM_WEIGHTS, opts.acoustic_scale, p)
            t2 = time.perf_counter()
            times["rescore"] += t1 - t0
            times["rescore_by_clone"] += t2 - t1
            same &= new == old
    result = {
        "what": "dev lattices rescored at every LM weight x word insertion penalty of the recipe's grid, one "
                "thread: reassigning one FsaVec's scores (rescore_lm_weights) vs a clone per weight (before)",
        "machine": f"{cpu_model()}, {os.cpu_count()} cores", "python": platform.python_version(),
        "model": args.model, "utterances": len(items), "lattice_arcs": arcs,
        "pairs": len(LM_WEIGHTS) * len(PENALTIES),
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "rescore_speedup": round(times["rescore_by_clone"] / max(times["rescore"], 1e-9), 2),
        "decode_speedup": round((times["search"] + times["rescore_by_clone"]) / (times["search"] + times["rescore"]), 2),
        "same_words": same,
        "command": "benchmarks/bench_rescore.py " + " ".join(sys.argv[1:]),
    }
    write_json(args.out, result)
    print(result)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
