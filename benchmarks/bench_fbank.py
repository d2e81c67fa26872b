#!/usr/bin/env python
"""Feature-extraction throughput: lhotse ``Fbank`` vs kaldi-native-fbank, side by side.

Both extractors see the same decoded samples of the same utterances, interleaved utterance by
utterance on one thread, so machine noise hits both alike. Audio decoding is timed separately
(speechocean762 here is Ogg/Opus). Then the real feature stage (``compute_fbank``, 2 jobs,
lilcom storage) runs in a child process to measure its wall time and peak memory.

usage: benchmarks/bench_fbank.py [--corpus-dir ../shared/corpora/speechocean762] [--limit 500]
Writes benchmarks/results/fbank.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def knf_extractor(cfg):
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.dither = cfg.dither
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.frame_opts.samp_freq = cfg.sampling_rate
    opts.mel_opts.num_bins = cfg.num_filters
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq

    def extract(samples: np.ndarray) -> np.ndarray:
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(cfg.sampling_rate, samples)
        fb.input_finished()
        return np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])

    return extract


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-dir", type=Path, default=REPO.parent / "shared" / "corpora" / "speechocean762")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=500, help="utterances (0 = the whole split)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "fbank.json")
    args = parser.parse_args()

    import torch
    from lhotse import Fbank

    from asr_kd.data.corpora import build_manifests, list_speechocean762
    from asr_kd.data.features import fbank_config
    from asr_kd.utils import write_json

    torch.set_num_threads(1)
    utts = list_speechocean762(args.corpus_dir)[args.split]
    if args.limit:
        utts = utts[: args.limit]
    recordings, _, _ = build_manifests(utts, 16000)
    cfg = fbank_config(16000)
    lhotse_fbank = Fbank(cfg)
    knf_fbank = knf_extractor(cfg)

    t_decode = t_lhotse = t_knf = 0.0
    frames = 0
    audio_s = 0.0
    max_diff = 0.0
    for rec in recordings:
        t0 = time.perf_counter()
        samples = rec.load_audio()[0]
        t1 = time.perf_counter()
        a = lhotse_fbank.extract(samples, 16000)
        t2 = time.perf_counter()
        b = knf_fbank(samples)
        t3 = time.perf_counter()
        t_decode += t1 - t0
        t_lhotse += t2 - t1
        t_knf += t3 - t2
        frames += a.shape[0]
        audio_s += rec.duration
        max_diff = max(max_diff, float(np.abs(a - b).max()))

    # The real stage in a child process: wall time and peak memory (max RSS of children).
    with tempfile.TemporaryDirectory() as tmp:
        code = (
            "import sys, logging; from lhotse import CutSet;"
            "from asr_kd.data.corpora import build_manifests, list_speechocean762;"
            "from asr_kd.data.features import compute_fbank;"
            f"utts = list_speechocean762({str(args.corpus_dir)!r})[{args.split!r}];"
            f"utts = utts[:{args.limit}] if {args.limit} else utts;"
            "r, s, _ = build_manifests(utts, 16000);"
            "cuts = CutSet.from_manifests(recordings=r, supervisions=s);"
            f"compute_fbank(cuts, {tmp!r} + '/cuts.jsonl.gz', {tmp!r} + '/feats', num_jobs=2)"
        )
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL)
        stage_wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    result = {
        "corpus": "speechocean762",
        "split": args.split,
        "utterances": len(recordings),
        "audio_hours": round(audio_s / 3600, 4),
        "frames": frames,
        "host": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
        "single_thread": {
            "decode_opus": {"seconds": round(t_decode, 3), "real_time_factor": round(t_decode / audio_s, 5)},
            "lhotse_fbank": {"seconds": round(t_lhotse, 3), "frames_per_s": round(frames / t_lhotse),
                             "real_time_factor": round(t_lhotse / audio_s, 5)},
            "kaldi_native_fbank": {"seconds": round(t_knf, 3), "frames_per_s": round(frames / t_knf),
                                   "real_time_factor": round(t_knf / audio_s, 5)},
            "knf_over_lhotse_speed": round(t_lhotse / t_knf, 3),
            "max_abs_difference": round(max_diff, 6),
            "note": "kaldi-native-fbank 1.23 has no batched frame getter: its time includes one Python "
                    "get_frame() call per frame, as any Python user of it pays",
        },
        "feature_stage_2_jobs": {
            "wall_s": round(stage_wall, 2),
            "frames_per_s": round(frames / stage_wall),
            "real_time_factor": round(stage_wall / audio_s, 5),
            "peak_memory_mb": round(peak_mb, 1),
            "note": "includes process start-up, manifest checks, audio decoding and lilcom storage",
        },
        "command": " ".join(["benchmarks/bench_fbank.py"] + sys.argv[1:]),
    }
    write_json(args.output, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
