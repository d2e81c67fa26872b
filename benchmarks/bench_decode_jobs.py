#!/usr/bin/env python
"""Wall time of ``asr-kd decode`` at ``--nj 1`` and ``--nj 2`` (issue 16, part 3), in one run.

Decodes the same utterances with the same model, graph and settings once per ``--nj`` (one thread
per job, as the recipe does), and reports per model the wall time, the CPU time of the command and
its jobs, the speedup over the first ``--nj``, and whether every ``--nj`` gave the same words for
every utterance and the same WER. Also decoded: one job of one thread (as each job of ``--nj N``
runs), and each ``--nj`` at the other ``--max-batch-frames`` of --compare-batch-frames. Records the
load on the machine before and after each run.

Data (read only): the speechocean762 recipe's dev features, lang, LM and tri1 graph (stages 0-8
done); the models named by --models, relative to the recipe directory (a GMM dir, or a DNN
final.pt). Outputs go under --work.

usage: benchmarks/bench_decode_jobs.py [--models exp/tri1 exp/dnn_seed1/final.pt] [--subset-every 2]
Writes benchmarks/results/decode_jobs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_gmm_jobs import cpu_model, machine_load, step  # noqa: E402
from asr_kd.utils import write_json  # noqa: E402

RECIPE = REPO / "recipes" / "speechocean762"


def decode(model: str, nj: int, out: Path, args, threads: int = 0, batch_frames: int = 0) -> dict:
    """One decode; ``threads``: limit torch's threads (0: its default, what a user gets);
    ``batch_frames``: --max-batch-frames (0: the decoder's default)."""
    cmd = ["decode", "--model", model, "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst",
           "--graph-dir", "exp/tri1/graph_3gram", "--cuts", args.cuts, "--out-dir", str(out),
           "--lm-weights", str(args.lm_weight), "--subset-every", str(args.subset_every),
           "--max-active", "3000", "--nj", str(nj), "--force", "--max-batch-frames", str(batch_frames)]
    name = (f"{model} --nj {nj}{f' ({threads} thread)' if threads else ''}"
            f"{f' --max-batch-frames {batch_frames}' if batch_frames else ''}")
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else None
    r = step(name, cmd, RECIPE, out.parent / f"{out.name}.log", env)
    d = json.loads((out / "decode.json").read_text())
    print(f"    WER {d['wer']}", flush=True)
    return {**r, "wer": d["wer"], "utterances": d["scored"], "frames": d["frames"],
            "_hyp": (out / f"hyp_{d['best']}.txt").read_text()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["exp/tri1", "exp/dnn_seed1/final.pt"],
                        help="models to decode with, relative to recipes/speechocean762")
    parser.add_argument("--cuts", default="data/fbank/speechocean762_cuts_dev.jsonl.gz")
    parser.add_argument("--subset-every", type=int, default=2, help="decode every K-th utterance")
    parser.add_argument("--lm-weight", type=float, default=12.0)
    parser.add_argument("--nj", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compare-batch-frames", type=int, nargs="*", default=[10000],
                        help="also decode at these --max-batch-frames (the decoder's default is compared with them)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_decode_jobs"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decode_jobs.json")
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    runs, load = {}, {"before": machine_load()}
    for model in args.models:
        name = model.replace("/", "_")
        runs[model] = {}
        for nj in args.nj:
            runs[model][f"nj{nj}"] = decode(model, nj, args.work / f"{name}_nj{nj}", args)
            load[f"after_{name}_nj{nj}"] = machine_load()
        # Kaldi's baseline: one job of one thread (each --nj job has one thread; --nj 1 has torch's default)
        runs[model]["nj1_1thread"] = decode(model, 1, args.work / f"{name}_nj1_1thread", args, threads=1)
        load[f"after_{name}_nj1_1thread"] = machine_load()
        for bf in args.compare_batch_frames:  # the same at another batch size
            for nj in args.nj:
                runs[model][f"nj{nj}_bf{bf}"] = decode(model, nj, args.work / f"{name}_nj{nj}_bf{bf}", args, batch_frames=bf)
    first = f"nj{args.nj[0]}"
    speedup, identical = {}, {}
    for model, r in runs.items():
        for k in r:
            if k == first:
                continue
            identical[f"{model} {k}_vs_{first}"] = r[k]["_hyp"] == r[first]["_hyp"] and r[k]["wer"] == r[first]["wer"]
            if "_bf" in k:  # the default batch size over this one, at the same --nj
                base = k.split("_bf")[0]
                speedup[f"{model} {base}_over_{k}"] = round(r[k]["wall_s"] / r[base]["wall_s"], 3)
                continue
            speedup[f"{model} {k}_over_{first}"] = round(r[first]["wall_s"] / r[k]["wall_s"], 3)
            if k != "nj1_1thread":
                speedup[f"{model} {k}_over_nj1_1thread"] = round(r["nj1_1thread"]["wall_s"] / r[k]["wall_s"], 3)
        for v in r.values():
            del v["_hyp"]
    out = {
        "what": "asr-kd decode at each --nj (one-thread jobs), same model, graph, utterances and settings",
        "cuts": args.cuts, "subset_every": args.subset_every, "lm_weight": args.lm_weight, "max_active": 3000,
        "runs": runs, "speedup": speedup, "identical_words_and_wer": identical, "load": load,
        "notes": "wall_s: the whole command (start-up, graph loading, CMVN, acoustic scores, search, scoring); "
                 "cpu_s: user+sys of the command and its jobs; cores_used = cpu_s / wall_s. nj1: one job with torch's "
                 "default threads (what a user gets; see its cores_used); nj1_1thread: "
                 "one job of one thread (OMP_NUM_THREADS=1), as each job of --nj N runs and as Kaldi decodes.",
        "machine": {"cpus": os.cpu_count(), "processor": cpu_model(), "python": platform.python_version()},
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "command": " ".join(["benchmarks/bench_decode_jobs.py"] + sys.argv[1:]),
    }
    write_json(args.out, out)
    print(json.dumps({"speedup": speedup, "identical": identical}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
