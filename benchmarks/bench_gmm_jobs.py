#!/usr/bin/env python
"""Wall time of the GMM steps at ``--nj 1`` and ``--nj 2`` (issue 16, part 3), in one run.

Runs ``asr-kd gmm mono``, ``gmm tri`` and ``gmm align`` once per ``--nj`` on the same data, as the
recipe does (one command per step, one thread per job), and reports per step the wall time, the
CPU time of the step and its jobs, the wall time of the training iterations alone (from
``history.json``: the realignments and accumulations the jobs share, without loading the features
and building the tree), and the speedups of each ``--nj`` over the first. It checks that every
``--nj`` wrote the same model and alignment (bit for bit), and records the load on the machine
before and after (the 2-core development machine is shared with other jobs).

Data (read only; outputs under --work):
  --corpus speechocean762: the recipe's features and lang in recipes/speechocean762/data (stages
      0-3 done), first --max-utts training and test utterances; the commands run in the recipe
      directory, since its manifests name their feature files relative to it.
  --corpus yesno: prepared from ../shared/corpora/yesno under --work (a small smoke run).

usage: benchmarks/bench_gmm_jobs.py [--corpus speechocean762] [--max-utts 1000] [--nj 1 2]
Writes benchmarks/results/gmm_jobs.json.
"""
from __future__ import annotations

import argparse
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from asr_kd.hmm.alignments import load_alignments  # noqa: E402
from asr_kd.hmm.train import GmmHmm  # noqa: E402
from asr_kd.utils import write_json  # noqa: E402

ASR_KD = [sys.executable, "-m", "asr_kd.cli"]

# A shortened speechocean762 schedule with the recipe's sizes (1000 leaves, 6000 Gaussians) and
# about its share of realigning iterations.
MONO = ["--max-gauss", "1000", "--num-iters", "10", "--realign-iters", "1,2,3,4,6,8", "--max-iter-inc", "8"]
TRI = ["--num-leaves", "1000", "--min-leaf-count", "30", "--max-gauss", "6000", "--num-iters", "10",
       "--realign-iters", "4,8", "--max-iter-inc", "8"]


def _autogroup(pid) -> str:
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().split()[0]
    except OSError:
        return "?"


def machine_load() -> dict:
    """Load average, CPU pressure, and the other busy processes: pid, CPU share over their lifetime,
    scheduler autogroup (Linux shares the cores between autogroups, i.e. sessions, before threads)."""
    procs = subprocess.run(["ps", "-eo", "pid,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True,
                           text=True).stdout.splitlines()[1:8]
    busy = [" ".join(p.split()[:2] + [_autogroup(p.split()[0]), " ".join(p.split()[3:])[:80]]) for p in procs
            if float(p.split()[1]) >= 20 and str(os.getpid()) != p.split()[0]]
    pressure = Path("/proc/pressure/cpu").read_text().split("\n")[0] if Path("/proc/pressure/cpu").exists() else None
    return {"loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()], "cpu_pressure": pressure,
            "this_autogroup": _autogroup(os.getpid()), "busy_processes_pid_pcpu_autogroup_cmd": busy}


def step(name: str, args: list, cwd: Path, log: Path, env: dict = None) -> dict:
    """Run one asr-kd step (``env``: extra environment variables); wall time and the CPU time of it
    and its jobs."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(ASR_KD + args, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                              env=dict(os.environ, **(env or {})))
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{name} failed (exit {proc.returncode}): see {log}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(f"  {name}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cores_used": round(cpu / wall, 2)}


def overlapped(r: dict):
    """Projected wall time with the jobs' tasks side by side on free cores: the measured wall time,
    less the jobs' CPU seconds, plus those of the busiest job of each task (their critical path).
    Only for a run held to about one core (cores_used < 1.2), whose jobs took turns on it; None
    otherwise."""
    if r["cores_used"] >= 1.2:
        return None
    return round(r["wall_s"] - r["jobs_cpu_s"] + r["jobs_critical_cpu_s"], 2)


def iterations_s(model_dir: Path) -> float:
    """Seconds of the EM iterations (realignment, accumulation, update), from history.json."""
    return round(sum(h["seconds"] for h in json.loads((model_dir / "history.json").read_text())), 2)


def same_model(a: Path, b: Path) -> bool:
    ma, mb = GmmHmm.load(a / "final.mdl"), GmmHmm.load(b / "final.mdl")
    return (all(torch.equal(getattr(ma.gmm, k), getattr(mb.gmm, k)) for k in ("means", "vars", "log_weights"))
            and ma.trans.to_dict() == mb.trans.to_dict() and ma.ctx_dep.to_dict() == mb.ctx_dep.to_dict())


def same_alignment(a: Path, b: Path) -> bool:
    x, y = load_alignments(a / "ali.pt"), load_alignments(b / "ali.pt")
    return list(x) == list(y) and all(
        all(np.array_equal(v, y[u].to_arrays()[k]) for k, v in x[u].to_arrays().items()) for u in x)


def prepare_yesno(work: Path) -> tuple:
    corpus = REPO.parent / "shared" / "corpora" / "yesno" / "waves_yesno"
    d = work / "data"
    if not (d / "lang" / "L_disambig.fst").is_file():
        for args in (["prepare", "yesno", str(corpus), str(d / "manifests"), "--dev-fraction", "0.1"],
                     ["fbank", str(d / "manifests"), str(d / "fbank"), "--corpus", "yesno", "--num-jobs", "2"],
                     ["lang", str(d / "lang"), "--vocab-cuts", str(d / "manifests" / "yesno_cuts_train.jsonl.gz")]):
            subprocess.run(ASR_KD + args, check=True, capture_output=True)
    return work, d / "lang", d / "fbank" / "yesno_cuts_train.jsonl.gz", d / "fbank" / "yesno_cuts_test.jsonl.gz"


def snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", choices=["speechocean762", "yesno"], default="speechocean762")
    parser.add_argument("--max-utts", type=int, default=1000, help="training and aligned utterances (0 = all)")
    parser.add_argument("--nj", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_gmm_jobs"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gmm_jobs.json")
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.corpus == "speechocean762":
        cwd = REPO / "recipes" / "speechocean762"
        lang, train, test = cwd / "data/lang", cwd / "data/fbank/speechocean762_cuts_train.jsonl.gz", \
            cwd / "data/fbank/speechocean762_cuts_test.jsonl.gz"
        watched = [cwd / "data" / "fbank", cwd / "data" / "lang"]
    else:
        cwd, lang, train, test = prepare_yesno(args.work)
        watched = []
    before = {str(w): snapshot(w) for w in watched}
    limit = ["--max-utts", str(args.max_utts)] if args.max_utts else []
    runs = {}
    load = {"before": machine_load()}
    for nj in args.nj:
        print(f"--nj {nj}", flush=True)
        out = args.work / f"nj{nj}"
        common = ["--lang-dir", str(lang), "--nj", str(nj), "--force", *limit]
        r = {}
        r["mono"] = step("mono", ["gmm", "mono", *common, "--cuts", str(train), "--exp-dir", str(out / "mono"), *MONO],
                         cwd, args.work / f"mono_nj{nj}.log")
        r["tri"] = step("tri", ["gmm", "tri", *common, "--cuts", str(train), "--ali-dir", str(out / "mono"),
                                "--exp-dir", str(out / "tri1"), *TRI], cwd, args.work / f"tri_nj{nj}.log")
        r["align"] = step("align", ["gmm", "align", *common, "--cuts", str(test), "--model-dir", str(out / "tri1"),
                                    "--out-dir", str(out / "ali_test")], cwd, args.work / f"align_nj{nj}.log")
        for s, d in (("mono", "mono"), ("tri", "tri1")):
            r[s]["iterations_s"] = iterations_s(out / d)
            r[s]["frames"] = json.loads((out / d / "summary.json").read_text())["frames"]
        r["align"]["align_s"] = round(json.loads((out / "ali_test" / "summary.json").read_text())["align_seconds"], 2)
        for s, d in (("mono", "mono"), ("tri", "tri1"), ("align", "ali_test")):
            summ = json.loads((out / d / "summary.json").read_text())
            if "jobs_cpu_s" in summ:
                r[s].update(jobs_cpu_s=summ["jobs_cpu_s"], jobs_critical_cpu_s=summ["jobs_critical_cpu_s"])
                r[s]["overlapped_wall_s"] = overlapped(r[s])
        wall, cpu = (round(sum(r[s][k] for s in ("mono", "tri", "align")), 2) for k in ("wall_s", "cpu_s"))
        r["gmm_pipeline"] = {"wall_s": wall, "cpu_s": cpu, "cores_used": round(cpu / wall, 2)}
        if all(r[s].get("overlapped_wall_s") is not None for s in ("mono", "tri", "align")):
            r["gmm_pipeline"]["overlapped_wall_s"] = round(sum(r[s]["overlapped_wall_s"] for s in ("mono", "tri", "align")), 2)
        runs[nj] = r
        load[f"after_nj{nj}"] = machine_load()
    base = args.nj[0]
    speedup, same = {}, {}
    for nj in args.nj[1:]:
        sp = {}
        for s in ("mono", "tri", "align", "gmm_pipeline"):
            for k in ("wall_s", "iterations_s", "align_s"):
                if k in runs[nj][s]:
                    sp[f"{s}_{k.removesuffix('_s')}"] = round(runs[base][s][k] / runs[nj][s][k], 3)
            if runs[nj][s].get("overlapped_wall_s"):
                sp[f"{s}_wall_projected_free_cores"] = round(runs[base][s]["wall_s"] / runs[nj][s]["overlapped_wall_s"], 3)
        speedup[f"nj{nj}_over_nj{base}"] = sp
        a, b = args.work / f"nj{base}", args.work / f"nj{nj}"
        same[f"nj{nj}_vs_nj{base}"] = {
            "mono_model": same_model(a / "mono", b / "mono"), "mono_alignment": same_alignment(a / "mono", b / "mono"),
            "tri_model": same_model(a / "tri1", b / "tri1"), "tri_alignment": same_alignment(a / "tri1", b / "tri1"),
            "test_alignment": same_alignment(a / "ali_test", b / "ali_test")}
    for w in watched:
        if snapshot(w) != before[str(w)]:
            raise SystemExit(f"{w} changed during the benchmark: it must only be read")
    result = {
        "what": "asr-kd gmm mono, tri and align at each --nj (spawned one-thread jobs), same data and settings",
        "corpus": args.corpus, "max_utts": args.max_utts, "train_frames": runs[base]["mono"]["frames"],
        "mono_args": MONO, "tri_args": TRI, "nj": args.nj, "runs": {f"nj{k}": v for k, v in runs.items()},
        "speedup": speedup, "identical": same,
        "notes": ("wall_s: the whole command (start-up, feature loading, tree building, writing included); "
                  "iterations_s: the EM iterations only (history.json), the work the jobs share; "
                  "align_s: the alignment itself (summary.json); cpu_s: user+sys of the command and its jobs; "
                  "cores_used = cpu_s / wall_s. When other sessions keep the cores busy, Linux's autogroup "
                  "scheduler gives each session (autogroup) an equal share before its threads share it: "
                  "cores_used near 1 at --nj 2 means this run was held to one core. See load. "
                  "overlapped_wall_s (and the *_projected_free_cores speedups): a projection, not a "
                  "measurement, for runs held to one core: wall_s - jobs_cpu_s + jobs_critical_cpu_s, "
                  "the jobs' measured CPU seconds (in all, and of the busiest job of each task) as if "
                  "their tasks had run side by side; the --nj 1 wall time is measured as it is."),
        "load": load,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": cpu_model(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
        "command": " ".join(["benchmarks/bench_gmm_jobs.py", *sys.argv[1:]]),
    }
    write_json(args.out, result)
    print(json.dumps({"speedup": speedup, "identical": same}, indent=1))
    return 0


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
