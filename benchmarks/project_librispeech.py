#!/usr/bin/env python
"""What a LibriSpeech run needs (disk, memory, hours), projected from the per-frame costs measured
on this machine and kept in benchmarks/results/ (fbank.json, gmm_jobs.json, train_cpu.json,
stream_frames.json, decode_jobs.json). Writes librispeech_projection.{json,md} there.

Every cost is a measured one scaled by frames, and for the GMMs by Gaussians (E-M and alignment
cost grows with frames x Gaussians per frame evaluated); the DNNs by the FLOPs of a training frame
(6 x weights: forward, backward, update) at the rate measured for the nearest preset. Nothing
here was run on LibriSpeech: the GPU figure in particular is FLOPs over an assumed sustained rate
(--gpu-tflops), labelled as such, until a device run measures it.

    benchmarks/project_librispeech.py [--hours 100 960] [--gpus 1 8] [--gpu-tflops 100]
"""
import argparse
import json
from pathlib import Path

from asr_kd.nnet.model import Dnn, DnnConfig

RESULTS = Path(__file__).resolve().parent / "results"
FRAMES_PER_HOUR = 360_000  # 10 ms shift
# LibriSpeech dev-clean + dev-other + test-clean + test-other: 5.4 + 5.3 + 5.4 + 5.1 h
DEV_TEST_HOURS = 21.2


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def training_flops_per_frame(preset: str, senones: int) -> float:
    weights = Dnn(DnnConfig.from_preset(preset, feat_dim=40, num_senones=senones)).num_parameters()
    return 6.0 * weights, weights


def project(hours: float, gpus, gpu_tflops: float, args) -> dict:
    gmm, train, stream, dec = (load(n) for n in ("gmm_jobs.json", "train_cpu.json", "stream_frames.json",
                                                 "decode_jobs.json"))
    frames = hours * FRAMES_PER_HOUR
    # features: a recipe's stage 2 (its frames, wall time and jobs; the lilcom archives beside it)
    fbank = json.loads(args.fbank_stats.read_text())
    fbank_core_s = frames / fbank["frames"] * fbank["wall_s"] * fbank["num_jobs"]
    split = args.fbank_stats.stem.rsplit("_fbank_", 1)[1]
    feats = args.fbank_stats.parent / f"feats_{split}"
    lilcom_bytes = sum(f.stat().st_size for f in feats.rglob("*") if f.is_file()) / fbank["frames"]
    # GMMs: one-job CPU seconds per frame at the benchmark's Gaussians, scaled to the run's
    g = gmm["runs"]["nj1"]
    mono_gauss_bench = int(gmm["mono_args"][gmm["mono_args"].index("--max-gauss") + 1])
    tri_gauss_bench = int(gmm["tri_args"][gmm["tri_args"].index("--max-gauss") + 1])
    per_frame = {k: g[k]["cpu_s"] / gmm["train_frames"] for k in ("mono", "tri", "align")}
    gmm_core_s = frames * (per_frame["mono"] * args.mono_gauss / mono_gauss_bench
                           + per_frame["tri"] * args.tri_gauss / tri_gauss_bench
                           + per_frame["align"] * args.tri_gauss / tri_gauss_bench)
    # DNNs: teachers + students (a student step also runs every teacher forward: 1/3 of a training step each)
    flops, weights = training_flops_per_frame(args.preset, args.senones)
    passes = args.epochs * (args.teachers + args.students * (1 + args.teachers / 3))
    cpu_rate = train["presets"]["cpu"]["bf16"]["gflops"] * 1e9  # one core, the nearest measured preset
    dnn_core_s = frames * passes * flops / cpu_rate
    dnn_gpu_s = {n: frames * passes * flops / (gpu_tflops * 1e12 * n) for n in gpus}
    # decoding: one-thread CPU seconds per frame (DNN scoring + search) at the recipe's beam, dev and test
    d = dec["runs"]["exp/dnn_seed1/final.pt"]["nj1_1thread"]
    decode_core_s = DEV_TEST_HOURS * FRAMES_PER_HOUR * d["cpu_s"] / d["frames"] * args.decodes
    s = stream["sets"]["train_sp"]
    return {
        "hours": hours,
        "train_frames": frames,
        "fbank_bytes_per_frame": lilcom_bytes,
        "disk_gb": {
            "fbank_lilcom": frames * lilcom_bytes / 1e9,
            "frame_shards": frames * s["shard_bytes_per_frame"] / 1e9,
            "frames_cache_in_memory_path": frames * s["cache_bytes_per_frame"] / 1e9,
        },
        "ram_gb_per_process": {
            "frames_in_memory": frames * s["cache_bytes_per_frame"] / 1e9,
            "streamed": stream["summary"]["train_sp"]["stream"]["peak_rss_mb"] / 1e3,
        },
        "core_hours": {
            "fbank": fbank_core_s / 3600,
            "gmm_mono_tri_align": gmm_core_s / 3600,
            "dnn_training_cpu": dnn_core_s / 3600,
            "decoding": decode_core_s / 3600,
        },
        "dnn": {"preset": args.preset, "senones": args.senones, "weights": weights, "flops_per_frame": flops,
                "frame_passes": passes, "cpu_gflops_measured": cpu_rate / 1e9},
        "dnn_gpu_hours_assumed": {str(n): v / 3600 for n, v in dnn_gpu_s.items()},
    }


def markdown(rows, args) -> str:
    def fmt(x):
        return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"
    out = [f"| hours of audio | train frames | disk: fbank / shards (GB) | RAM per DNN process: in memory / "
           f"streamed (GB) | core-hours: fbank / GMMs / decoding | DNNs: CPU core-hours | DNNs: GPU hours at "
           f"{args.gpu_tflops:g} TFLOP/s (assumed), " + " / ".join(f"{n} GPU" for n in args.gpus) + " |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        c, dk, rm = r["core_hours"], r["disk_gb"], r["ram_gb_per_process"]
        out.append(f"| {r['hours']:g} | {r['train_frames'] / 1e6:.0f}M | {fmt(dk['fbank_lilcom'])} / "
                   f"{fmt(dk['frame_shards'])} | {fmt(rm['frames_in_memory'])} / {rm['streamed']:.2f} | "
                   f"{fmt(c['fbank'])} / {fmt(c['gmm_mono_tri_align'])} / {fmt(c['decoding'])} | "
                   f"{fmt(c['dnn_training_cpu'])} | "
                   + " / ".join(fmt(v) for v in r["dnn_gpu_hours_assumed"].values()) + " |")
    d = rows[0]["dnn"]
    out.append("")
    out.append(f"DNNs: the `{d['preset']}` preset at {d['senones']} senones ({d['weights'] / 1e6:.0f}M weights, "
               f"{d['flops_per_frame'] / 1e9:.2f} GFLOP a training frame), {args.epochs} epochs of "
               f"{args.teachers} teachers and {args.students} student(s) (a student's step also runs every "
               f"teacher forward): {d['frame_passes']:.1f} training passes' worth of FLOPs over the frames; CPU "
               f"at the {d['cpu_gflops_measured']:.0f} GFLOP/s measured for the `cpu` preset on one core (bf16). "
               f"GMMs at {args.mono_gauss} / {args.tri_gauss} Gaussians; decoding of dev and test "
               f"({DEV_TEST_HOURS:g} h) {args.decodes} times (LM-weight grid is scored on lattices, not "
               f"re-decoded) at the one-thread rate measured for the small DNN on speechocean762's HCLG: a "
               f"200k-word HCLG searches more.")
    return "\n".join(out) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hours", type=float, nargs="+", default=[100, 960], help="hours of training audio")
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="GPU counts to project DNN training for")
    p.add_argument("--gpu-tflops", type=float, default=100.0,
                   help="sustained training TFLOP/s of one GPU (an assumption, not a measurement)")
    p.add_argument("--preset", default="paper", help="DNN preset of the teachers and students")
    p.add_argument("--senones", type=int, default=4200, help="tied states (Kaldi's tri4b on train-clean-100)")
    p.add_argument("--epochs", type=int, default=8, help="passes over the training frames of each DNN")
    p.add_argument("--teachers", type=int, default=4, help="ensemble size")
    p.add_argument("--students", type=int, default=1, help="distilled students")
    p.add_argument("--mono-gauss", type=int, default=2000, help="Gaussians of the monophone system")
    p.add_argument("--tri-gauss", type=int, default=40000, help="Gaussians of the triphone system")
    p.add_argument("--decodes", type=int, default=3 * 2, help="decodings of dev+test (GMM, baseline, ensemble, "
                                                              "students ...)")
    p.add_argument("--fbank-stats", type=Path,
                   default=Path("recipes/speechocean762/data/fbank/speechocean762_fbank_train.json"),
                   help="a recipe's stage-2 statistics (frames, wall time, jobs); its feats_<split>/ archives "
                        "give the bytes a frame on disk")
    args = p.parse_args()
    rows = [project(h, args.gpus, args.gpu_tflops, args) for h in args.hours]
    command = "benchmarks/project_librispeech.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items())
    (RESULTS / "librispeech_projection.json").write_text(json.dumps({"command": command, "rows": rows}, indent=2))
    md = markdown(rows, args) + f"\nProduced by `{command}` from benchmarks/results/*.json.\n"
    (RESULTS / "librispeech_projection.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
