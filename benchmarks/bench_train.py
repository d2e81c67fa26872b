#!/usr/bin/env python
"""DNN training throughput against the machine's own matmul throughput, measured in one run.

For each preset and precision (fp32, bf16 autocast) it times SGD steps on random spliced frames
and reports frames/s, the achieved FLOP rate (6 x parameters per frame: forward + backward) and
its ratio to the peak GEMM rate of the same precision measured just before. It also times:
- the frame pipeline (``FrameSet.splice`` of shuffled frames), which must outrun training;
- soft-target generation: K teachers' forward passes per student batch (distillation's extra cost).

usage: benchmarks/bench_train.py [--presets small cpu paper] [--senones 2000] [--steps 20]
Writes benchmarks/results/train_<device>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr_kd.distill import distillation_loss, ensemble_probs  # noqa: E402
from asr_kd.nnet.data import FrameSet  # noqa: E402
from asr_kd.nnet.model import Dnn, DnnConfig  # noqa: E402
from asr_kd.utils import fast_bf16  # noqa: E402


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def amp(device, dtype):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def gemm_gflops(device, dtype, n=2048, reps=5):
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with amp(device, dtype):
        (a @ b).sum()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            c = a @ b
        sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def train_rate(cfg, device, dtype, batch, steps):
    torch.manual_seed(0)
    model = Dnn(cfg).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, cfg.input_dim, device=device)
    y = torch.randint(0, cfg.num_senones, (batch,), device=device)

    def step():
        with amp(device, dtype):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    frames_per_s = batch * steps / (time.perf_counter() - t0)
    params = model.num_parameters()
    return {"parameters": params, "frames_per_s": round(frames_per_s, 1),
            "gflops": round(6 * params * frames_per_s / 1e9, 1)}


def distill_cost(cfg, device, dtype, batch, steps, k):
    """Student step with K teachers' soft targets, vs a plain student step."""
    torch.manual_seed(0)
    student = Dnn(cfg).to(device)
    teachers = [Dnn(cfg).to(device).eval() for _ in range(k)]
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, cfg.input_dim, device=device)
    y = torch.randint(0, cfg.num_senones, (batch,), device=device)
    t_teacher = t_total = 0.0
    for i in range(steps + 2):
        sync(device)
        t0 = time.perf_counter()
        with amp(device, dtype), torch.no_grad():
            z = torch.stack([t(x) for t in teachers]).float()
        p = ensemble_probs(z, 2.0)
        sync(device)
        t1 = time.perf_counter()
        with amp(device, dtype):
            logits = student(x)
        loss = distillation_loss(logits.float(), p, y, temperature=2.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i >= 2:
            t_teacher += t1 - t0
            t_total += time.perf_counter() - t0
    return {"teachers": k, "student_step_with_soft_targets_frames_per_s": round(batch * steps / t_total, 1),
            "teacher_share_of_step": round(t_teacher / t_total, 3)}


def pipeline_rate(cfg, batch, steps=200):
    n = 500_000
    lengths = torch.full((n // 500,), 500)
    ends = torch.cumsum(lengths, 0)
    fs = FrameSet(torch.randn(n, cfg.feat_dim), torch.zeros(n, dtype=torch.long),
                  torch.repeat_interleave(torch.arange(len(lengths)), lengths), ends - lengths, ends, [], [])
    perm = torch.randperm(n)
    t0 = time.perf_counter()
    for i in range(steps):
        fs.splice(perm[i * batch : (i + 1) * batch], cfg.left_context, cfg.right_context)
    return round(batch * steps / (time.perf_counter() - t0), 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "cpu", "paper"])
    parser.add_argument("--senones", type=int, default=2000, help="senones of the small/cpu presets")
    parser.add_argument("--paper-senones", type=int, default=14000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--teachers", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    out = {
        "device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "fast_bf16": fast_bf16(dev),  # AVX-512 BF16 / AMX / CUDA: without them bf16 is emulated (slow)
        "batch": args.batch,
        "gemm_gflops": {d: round(gemm_gflops(dev, d), 1) for d in ("fp32", "bf16")},
        "presets": {},
    }
    for name in args.presets:
        senones = args.paper_senones if name == "paper" else args.senones
        cfg = DnnConfig.from_preset(name, num_senones=senones)
        steps = max(3, args.steps // 4) if name == "paper" and not dev.startswith("cuda") else args.steps
        row = {"senones": senones, "pipeline_frames_per_s": pipeline_rate(cfg, args.batch)}
        for d in ("fp32", "bf16"):
            if d == "bf16" and not out["fast_bf16"]:
                if name == "paper":  # emulated bf16 at 85M parameters would take many minutes
                    row[d] = {"skipped": "no fast bf16 on this device (emulated)"}
                    continue
                steps_d = max(2, steps // 5)
            else:
                steps_d = steps
            r = train_rate(cfg, dev, d, args.batch, steps_d)
            r["fraction_of_gemm_peak"] = round(r["gflops"] / out["gemm_gflops"][d], 3)
            row[d] = r
        if "frames_per_s" in row["bf16"]:
            row["bf16_speedup"] = round(row["bf16"]["frames_per_s"] / row["fp32"]["frames_per_s"], 2)
        if name != "paper":
            best = "bf16" if row.get("bf16_speedup", 0) > 1 else "fp32"
            row[f"distillation_{best}"] = distill_cost(cfg, dev, best, args.batch, max(3, steps // 2), args.teachers)
        out["presets"][name] = row
        print(name, json.dumps(row), flush=True)
    out["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["command"] = " ".join(["benchmarks/bench_train.py"] + sys.argv[1:])
    path = args.output or REPO / "benchmarks" / "results" / f"train_{'cuda' if dev.startswith('cuda') else 'cpu'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
