#!/usr/bin/env python
"""Collect a training-equivalence run of in-memory vs streamed frames into one results file.

Each run is an ``asr-kd nnet train`` exp dir (summary.json) and its log, whose last
``peak_rss_mb N`` line a wrapper printed from ``resource.getrusage`` at exit. The runs of the
measurement in benchmarks/results/stream_frames_training.json (speechocean762 train, 3 epochs,
small preset, Adam 5e-4, dropout 0.2, seed 1, --dev-cuts dev; one thread each, run side by side
on a CPU shared with another training) were made with::

    asr-kd nnet train --cuts data/senones/speechocean762_cuts_train.jsonl.gz \\
        --dev-cuts data/senones/speechocean762_cuts_dev.jsonl.gz --gmm-dir exp/tri1 --exp-dir EXP \\
        --preset small --epochs 3 --optimizer adam --lr 0.0005 --dropout 0.2 --seed 1 --no-progress \\
        [--frames-cache train.pt | --stream-frames SHARDS --buffer-frames N]

A run stopped before its end (no summary.json) is read from its last epoch checkpoint
(``epoch-N.pt`` keeps the history); ``--note NAME=TEXT`` says what a run changed.

usage: benchmarks/stream_training_equivalence.py NAME=EXP_DIR:LOG[:BUFFER_FRAMES] ... [--note NAME=TEXT ...]
       [--output FILE]
"""
import argparse
import json
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr_kd.utils import write_json  # noqa: E402


def history_of(exp_dir: Path) -> tuple:
    """(summary, finished): summary.json, or what the last epoch checkpoint of a stopped run holds."""
    if (exp_dir / "summary.json").is_file():
        return json.loads((exp_dir / "summary.json").read_text()), True
    last = max(exp_dir.glob("epoch-*.pt"), key=lambda f: int(f.stem.split("-")[1]))
    ck = torch.load(last, map_location="cpu")
    return {"history": ck["history"], "best_dev_frame_accuracy": ck["best_acc"], "best_epoch": ck["best_epoch"],
            "train_frames": ck["history"][-1]["frames"]}, False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="NAME=EXP_DIR:LOG[:BUFFER_FRAMES]")
    parser.add_argument("--note", action="append", default=[], metavar="NAME=TEXT", help="what a run changed")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "stream_frames_training.json")
    args = parser.parse_args()
    out = {"runs": {}, "command": " ".join(["benchmarks/stream_training_equivalence.py"] + sys.argv[1:])}
    notes = dict(n.split("=", 1) for n in args.note)
    for spec in args.runs:
        name, rest = spec.split("=", 1)
        parts = rest.split(":")
        summary, finished = history_of(Path(parts[0]))
        peaks = re.findall(r"peak_rss_mb ([0-9.]+)", Path(parts[1]).read_text())
        out["runs"][name] = {
            "buffer_frames": int(parts[2]) if len(parts) > 2 else None,
            "dev_frame_accuracy_by_epoch": [round(h["dev_frame_accuracy"], 2) for h in summary["history"]],
            "train_frame_accuracy_by_epoch": [round(h["train_frame_accuracy"], 2) for h in summary["history"]],
            "best_dev_frame_accuracy": round(summary["best_dev_frame_accuracy"], 2),
            "best_epoch": summary["best_epoch"],
            "train_frames": summary["train_frames"],
            "frames_per_s_by_epoch": [h["frames_per_s"] for h in summary["history"]],
            "peak_rss_mb": float(peaks[-1]) if peaks else None,
        }
        if not finished:
            out["runs"][name]["stopped_after_epoch"] = len(summary["history"])
        if name in notes:
            out["runs"][name]["note"] = notes[name]
    write_json(args.output, out)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
