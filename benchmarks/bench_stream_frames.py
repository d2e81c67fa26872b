#!/usr/bin/env python
"""Training frames in memory (FrameSet) against frames streamed from shards (StreamFrameSet), in one run.

For each set (speechocean762 train, ~0.94M frames, and the 3-speed train_sp, ~2.8M) it measures,
each in a fresh one-thread child process so that peak memory is that path's alone:

- ``memory``: the frames cache (``FrameSet.load``) and ``frame_batches`` + ``FrameSet.splice``;
- ``stream``: ``StreamFrameSet`` over frame shards, buffer of ``--buffer-frames``;
- ``lhotse``: reading the lilcom archives and senone files through lhotse directly (features,
  CMVN, labels; no shuffle or splice): what a loader on the archives themselves would start from;

frames/s delivered by the loader alone, frames/s of loader + a training step of the ``small``
preset (bf16 where fast, one thread), setup time (loading the cache / opening the shards) and peak
RSS (VmHWM) next to the RSS after imports. The paths are interleaved round by round and
the machine's load average is recorded with each measurement (the CPU may be shared).

usage: benchmarks/bench_stream_frames.py --recipe-dir /path/to/recipes/speechocean762 [--rounds 3]
Writes benchmarks/results/stream_frames.json; shards and caches go to --work-dir. Peak memory is
each child's VmHWM (ru_maxrss would carry the parent's peak across exec).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asr_kd  # noqa: E402,F401  (first: decides MKL's CPU type before torch loads it)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from asr_kd.data.features import Cmvn, compute_cmvn_stats  # noqa: E402
from asr_kd.nnet.steps import load_frames  # noqa: E402
from asr_kd.nnet.data import LABEL_FIELD, FrameSet, frame_batches  # noqa: E402
from asr_kd.nnet.model import Dnn, DnnConfig  # noqa: E402
from asr_kd.nnet.stream import FrameShards, StreamFrameSet, open_frame_shards  # noqa: E402
from asr_kd.utils import autocast, load_cuts, resolve_dtype, write_json  # noqa: E402

PATHS = ("memory", "stream", "lhotse")


def rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cuts_path(recipe_dir: Path, name: str) -> Path:
    return recipe_dir / "data" / "senones" / f"speechocean762_cuts_{name}.jsonl.gz"


def child(args) -> dict:
    """One measurement: ``args.path`` on ``args.set``, with or without a training step."""
    torch.set_num_threads(1)
    os.chdir(args.recipe_dir)  # feature and label paths in the cuts are relative to the recipe
    base = rss_mb()
    cfg = DnnConfig.from_preset("small", num_senones=2000, feat_dim=40)
    left, right, batch = cfg.left_context, cfg.right_context, args.batch
    t0 = time.perf_counter()
    if args.path == "memory":
        fs = FrameSet.load(args.work_dir / "frames" / f"{args.set}.pt")
        order = frame_batches(len(fs), batch, epoch=1, seed=1, labels=fs.labels)
        batches = ((fs.splice(idx, left, right), fs.labels[idx]) for idx in order)
    elif args.path == "stream":
        fs = StreamFrameSet(FrameShards(args.work_dir / "shards" / args.set), buffer_frames=args.buffer_frames)
        batches = fs.epoch_batches(1, batch, 1, left, right)[0]
    else:
        cuts = load_cuts(cuts_path(args.recipe_dir, args.set))
        cmvn = Cmvn(json.loads((args.work_dir / f"cmvn_{args.set}.json").read_text()), mode="speaker")

        def read():
            for cut in cuts:
                x = torch.from_numpy(cmvn.apply_to_cut(cut))
                y = torch.from_numpy(np.asarray(cut.load_custom(LABEL_FIELD)).astype(np.int64))
                yield x, y
        batches = read()
    setup_s = time.perf_counter() - t0
    step = None
    if args.with_step:
        torch.manual_seed(0)
        model = Dnn(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=5e-4)
        dtype = resolve_dtype("auto")

        def step(x, y):
            with autocast("cpu", dtype):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y.clamp(max=1999))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    limit = args.step_frames if args.with_step else args.frames
    frames, load_s = 0, 0.0
    t0 = time.perf_counter()
    t_load = t0
    for x, y in batches:
        load_s += time.perf_counter() - t_load
        if step is not None and args.path != "lhotse":
            step(x, y)
        frames += len(y)
        if frames >= limit:
            break
        t_load = time.perf_counter()
    wall = time.perf_counter() - t0
    return {"path": args.path, "set": args.set, "with_step": bool(args.with_step), "frames": frames,
            "frames_per_s": round(frames / wall, 1), "loader_share": round(load_s / wall, 3),
            "setup_s": round(setup_s, 2), "rss_after_imports_mb": round(base, 1), "peak_rss_mb": round(rss_mb(), 1)}


def prepare(args, name: str) -> dict:
    """The frames cache, the shards and the CMVN statistics of one set (timed; kept in --work-dir)."""
    os.chdir(args.recipe_dir)
    cuts = cuts_path(args.recipe_dir, name)
    t0 = time.perf_counter()
    cache = args.work_dir / "frames" / f"{name}.pt"
    fs = load_frames(cuts, cache)
    cache_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shards = open_frame_shards(cuts, args.work_dir / "shards" / name,
                               lambda c: Cmvn(compute_cmvn_stats(c), mode="speaker"), args.shard_frames,
                               progress=False)
    shards_s = time.perf_counter() - t0
    stats = args.work_dir / f"cmvn_{name}.json"
    if not stats.exists():
        write_json(stats, compute_cmvn_stats(load_cuts(cuts)))
    shard_bytes = sum(p.stat().st_size for p in shards.dir.iterdir())
    n = len(fs)
    return {"frames": n, "utterances": len(fs.cut_ids), "shards": shards.num_shards,
            "cache_bytes_per_frame": round(cache.stat().st_size / n, 1),
            "shard_bytes_per_frame": round(shard_bytes / n, 1),
            "cache_build_or_load_s": round(cache_s, 2), "shards_write_or_open_s": round(shards_s, 2)}


def summarize(rows, sets) -> dict:
    out = {}
    for name in sets:
        for with_step in (False, True):
            key = f"{name}{'_with_step' if with_step else ''}"
            by_path = {p: [r for r in rows if r["set"] == name and r["path"] == p and r["with_step"] == with_step]
                       for p in PATHS}
            by_path = {p: v for p, v in by_path.items() if v}
            s = {p: {"median_frames_per_s": statistics.median(r["frames_per_s"] for r in v),
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in v),
                     "rss_after_imports_mb": min(r["rss_after_imports_mb"] for r in v),
                     "setup_s": statistics.median(r["setup_s"] for r in v)} for p, v in by_path.items()}
            if "memory" in by_path and "stream" in by_path:  # per round: the two ran back to back
                s["stream_over_memory_frames_per_s"] = round(statistics.median(
                    b["frames_per_s"] / a["frames_per_s"] for a, b in zip(by_path["memory"], by_path["stream"])), 3)
            out[key] = s
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe-dir", type=Path, required=True, help="speechocean762 recipe with data/senones")
    parser.add_argument("--sets", nargs="+", default=["train", "train_sp"])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/asr_kd_bench_stream"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=500_000, help="frames timed per loader-alone measurement")
    parser.add_argument("--step-frames", type=int, default=76_800, help="frames timed with a training step")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--buffer-frames", type=int, default=StreamFrameSet.buffer_frames)
    parser.add_argument("--shard-frames", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "stream_frames.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--set", help=argparse.SUPPRESS)
    parser.add_argument("--with-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.recipe_dir, args.work_dir = args.recipe_dir.resolve(), args.work_dir.resolve()
    if args.child:
        print(json.dumps(child(args) if args.path else {n: prepare(args, n) for n in args.sets}))
        return
    common = [sys.executable, __file__, "--child", "--recipe-dir", str(args.recipe_dir), "--work-dir",
              str(args.work_dir), "--frames", str(args.frames), "--step-frames", str(args.step_frames),
              "--batch", str(args.batch), "--buffer-frames", str(args.buffer_frames)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # in a child: the parent's memory would count in its children's peak
    out = subprocess.run(common + ["--shard-frames", str(args.shard_frames), "--sets", *args.sets], env=env,
                         check=True, stdout=subprocess.PIPE, text=True)
    sets = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(sets, indent=2), file=sys.stderr)
    rows = []
    for r in range(args.rounds):
        for name in args.sets:
            for with_step in (False, True):
                for path in PATHS:
                    if with_step and path == "lhotse":
                        continue
                    load_before = os.getloadavg()[0]
                    cmd = common + ["--path", path, "--set", name] + (["--with-step"] if with_step else [])
                    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True)
                    row = {"round": r, **json.loads(out.stdout.strip().splitlines()[-1]),
                           "load_avg_1min_before": round(load_before, 2),
                           "load_avg_1min_after": round(os.getloadavg()[0], 2)}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
                    "threads_per_measurement": 1},
        "settings": {"batch": args.batch, "buffer_frames": args.buffer_frames, "shard_frames": args.shard_frames,
                     "frames_timed": args.frames, "frames_timed_with_step": args.step_frames, "rounds": args.rounds,
                     "context": "small preset's (10 left, 5 right)", "step": "small preset, 2000 senones, Adam, "
                     + resolve_dtype("auto")},
        "sets": sets,
        "summary": summarize(rows, args.sets),
        "measurements": rows,
        "command": " ".join(["benchmarks/bench_stream_frames.py"] + sys.argv[1:]),
    }
    write_json(args.output, result)
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
