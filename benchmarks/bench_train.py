#!/usr/bin/env python
"""DNN training throughput against the machine's real fp32 limit, measured in one run.

For each preset and precision (fp32, bf16 autocast) it times SGD steps on random spliced frames
and reports frames/s, the achieved FLOP rate (6 x parameters per frame: forward + backward) and
its ratio to two limits measured or read in the same run:
- ``best_sgemm``: the best matrix-product rate of that precision over a few square sizes, on the
  MKL path this process runs (``asr_kd.cpu``: AVX2 kernels forced on non-Intel x86 CPUs);
- ``fma_peak`` (fp32 on CPU): threads x clock x FMA flops per cycle (32 with AVX2, 64 with AVX-512:
  2 FMA units x lanes x 2), the ceiling no kernel can pass.
It also times the frame pipeline (``FrameSet.splice`` of shuffled frames, which must outrun
training) and a student step with K teachers' soft targets (distillation's extra cost).

``--compare-mkl`` reruns the fp32 measurements in a child process with the other MKL setting
(override off where it is on; forced on where it is off) so the two paths are compared in one run.

usage: benchmarks/bench_train.py [--presets small cpu paper] [--senones 2000] [--steps 20] [--compare-mkl]
Writes benchmarks/results/train_<device>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asr_kd  # noqa: E402,F401  (first: decides MKL's CPU type before torch loads it)
import torch  # noqa: E402

from asr_kd import cpu  # noqa: E402
from asr_kd.distill import distillation_loss, ensemble_probs  # noqa: E402
from asr_kd.nnet.data import FrameSet  # noqa: E402
from asr_kd.nnet.model import Dnn, DnnConfig  # noqa: E402
from asr_kd.utils import fast_bf16  # noqa: E402


def cpu_clock_ghz() -> float:
    """The CPU's maximum clock (cpufreq when the kernel exposes it, else /proc/cpuinfo's MHz)."""
    f = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if f.is_file():
        return int(f.read_text()) / 1e6
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
           if line.startswith("cpu MHz")]
    return max(mhz) / 1e3 if mhz else float("nan")


def fma_peak_gflops(threads: int) -> dict:
    vendor, flags = cpu.cpu_vendor_and_flags(Path("/proc/cpuinfo").read_text())
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16
    ghz = cpu_clock_ghz()
    return {"vendor": vendor, "clock_ghz": round(ghz, 3), "flops_per_cycle": per_cycle, "threads": threads,
            "gflops": round(threads * ghz * per_cycle, 1)}


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def amp(device, dtype):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def best_gemm_gflops(device, dtype, sizes=(1024, 2048, 4096)):
    return max(gemm_gflops(device, dtype, n, reps=max(2, int(2 * (2048 / n) ** 3))) for n in sizes)


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


def other_mkl_env() -> dict:
    """The environment of a child that takes the other MKL path than this process."""
    env = dict(os.environ)
    if env.get(cpu.MKL_VAR) == cpu.AVX2_TYPE:
        env.pop(cpu.MKL_VAR)
        env[cpu.OPT_OUT] = "0"
    else:
        env[cpu.MKL_VAR] = cpu.AVX2_TYPE
    return env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "cpu", "paper"])
    parser.add_argument("--senones", type=int, default=2000, help="senones of the small/cpu presets")
    parser.add_argument("--paper-senones", type=int, default=14000, help="senones of the paper preset")
    parser.add_argument("--batch", type=int, default=256, help="frames per training step")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--teachers", type=int, default=4, help="teachers of the distillation measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compare-mkl", action="store_true",
                        help="also measure fp32 in a child process on the other MKL path (see asr_kd.cpu)")
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/train_<device>.json")
    parser.add_argument("--stdout-only", action="store_true", help=argparse.SUPPRESS)  # the --compare-mkl child
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    on_cpu = not dev.startswith("cuda")
    threads = torch.get_num_threads()
    out = {
        "device": torch.cuda.get_device_name(0) if not on_cpu else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": threads,
        "mkl_path": cpu.describe(),
        "fast_bf16": fast_bf16(dev),  # AVX-512 BF16 / AMX / CUDA: without them bf16 is emulated (slow)
        "batch": args.batch,
        "best_sgemm_gflops": {d: round(best_gemm_gflops(dev, d), 1) for d in args.precisions},
        "presets": {},
    }
    if on_cpu:
        out["fma_peak"] = fma_peak_gflops(threads)
    for name in args.presets:
        senones = args.paper_senones if name == "paper" else args.senones
        cfg = DnnConfig.from_preset(name, num_senones=senones)
        steps = max(3, args.steps // 4) if name == "paper" and on_cpu else args.steps
        row = {"senones": senones, "pipeline_frames_per_s": pipeline_rate(cfg, args.batch)}
        for d in args.precisions:
            if d == "bf16" and not out["fast_bf16"]:
                if name == "paper":  # emulated bf16 at 85M parameters would take many minutes
                    row[d] = {"skipped": "no fast bf16 on this device (emulated)"}
                    continue
                steps_d = max(2, steps // 5)
            else:
                steps_d = steps
            r = train_rate(cfg, dev, d, args.batch, steps_d)
            r["fraction_of_best_sgemm"] = round(r["gflops"] / out["best_sgemm_gflops"][d], 3)
            if d == "fp32" and on_cpu:
                r["fraction_of_fma_peak"] = round(r["gflops"] / out["fma_peak"]["gflops"], 3)
            row[d] = r
        if "frames_per_s" in row.get("bf16", {}) and "frames_per_s" in row.get("fp32", {}):
            row["bf16_speedup"] = round(row["bf16"]["frames_per_s"] / row["fp32"]["frames_per_s"], 2)
        if name != "paper":
            best = "bf16" if row.get("bf16_speedup", 0) > 1 or "fp32" not in row else "fp32"
            row[f"distillation_{best}"] = distill_cost(cfg, dev, best, args.batch, max(3, steps // 2), args.teachers)
        out["presets"][name] = row
        print(name, json.dumps(row), flush=True, file=sys.stderr)
    out["peak_memory_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.stdout_only:
        print(json.dumps(out))
        return
    if args.compare_mkl and on_cpu:
        child = [sys.executable, __file__, "--stdout-only", "--precisions", "fp32", "--presets", *args.presets,
                 "--senones", str(args.senones), "--paper-senones", str(args.paper_senones), "--batch",
                 str(args.batch), "--steps", str(args.steps), "--teachers", str(args.teachers)]
        if args.threads:
            child += ["--threads", str(args.threads)]
        other = json.loads(subprocess.run(child, env=other_mkl_env(), check=True, capture_output=True,
                                          text=True).stdout)
        out["other_mkl_path"] = {
            "mkl_path": other["mkl_path"], "best_sgemm_gflops": other["best_sgemm_gflops"]["fp32"],
            "fp32_frames_per_s": {n: r["fp32"]["frames_per_s"] for n, r in other["presets"].items()},
            "this_over_other_fp32": {n: round(out["presets"][n]["fp32"]["frames_per_s"] / r["fp32"]["frames_per_s"], 2)
                                     for n, r in other["presets"].items() if "fp32" in out["presets"][n]},
        }
    out["command"] = " ".join(["benchmarks/bench_train.py"] + sys.argv[1:])
    path = args.output or REPO / "benchmarks" / "results" / f"train_{'cpu' if on_cpu else 'cuda'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
