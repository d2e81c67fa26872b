"""DistributedDataParallel for real: two CPU processes under torchrun (gloo) against one process."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr_kd.nnet import FrameSet, load_model
from asr_kd.nnet.stream import write_frame_shards

# The synthetic frame set every script below builds (and the streaming test writes as shards):
# 24 utterances of 30 frames, 4 speakers, 6 classes.
FRAMES = r"""
g = torch.Generator().manual_seed(0)
n_utts, frames = 24, 30
means = torch.randn(6, 8, generator=g) * 1.5
y = torch.randint(0, 6, (n_utts * frames,), generator=g)
x = means[y] + torch.randn(len(y), 8, generator=g)
lengths = torch.full((n_utts,), frames)
ends = torch.cumsum(lengths, 0)
fs = FrameSet(x, y, torch.repeat_interleave(torch.arange(n_utts), lengths), ends - lengths, ends,
              [f"u{i}" for i in range(n_utts)], [f"s{i % 4}" for i in range(n_utts)])
"""

TRAIN = r"""
import json, os, sys
from pathlib import Path
import asr_kd
import torch
from asr_kd.nnet import DnnConfig, FrameSet, TrainConfig, frame_batches, train

exp_dir, batch, epochs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
""" + FRAMES + r"""train_set, dev_set = fs.subset(list(range(20))), fs.subset(list(range(20, 24)))
cfg = DnnConfig.from_preset("tiny", num_senones=6, feat_dim=8, left_context=1, right_context=1)
tc = TrainConfig(epochs=epochs, batch_size=batch, lr=0.1, momentum=0.0, seed=3, dtype="fp32", progress=False,
                 patience=0)
rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
seen = torch.cat(list(frame_batches(len(train_set), batch, 1, tc.seed, rank, world, train_set.labels)))
(exp_dir.parent / f"{exp_dir.name}_rank{rank}.json").write_text(json.dumps(seen.tolist()))
train(exp_dir, cfg, tc, train_set, dev_set)
"""


def _torchrun():
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]
    if torch.__version__.startswith("1.") and sys.version_info >= (3, 11):
        # torch 1.13's torchrun cannot parse its own default --redirects/--tee 0 under Python 3.11
        # (zero-valued IntFlag members are no longer iterated); any non-zero value works (README).
        cmd += ["--redirects", "2", "--tee", "2"]
    return cmd


def _free_port() -> int:
    """A port nothing listens on now (a fixed one collides when two test runs share a machine)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path, cmd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
def test_two_ranks_train_the_model_one_process_trains(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    ddp = _torchrun() + ["--nproc_per_node", "2", "--master_port", str(_free_port()), str(script)]
    _run(tmp_path, ddp + [str(tmp_path / "ddp"), "16", "1"])
    _run(tmp_path, [sys.executable, str(script), str(tmp_path / "single"), "32", "1"])

    r0 = json.loads((tmp_path / "ddp_rank0.json").read_text())
    r1 = json.loads((tmp_path / "ddp_rank1.json").read_text())
    assert not set(r0) & set(r1)  # disjoint ...
    assert len(r0) == len(r1) and len(r0) + len(r1) >= 20 * 30 - 1  # ... and covering the epoch (to one frame)

    a = load_model(tmp_path / "ddp" / "final.pt").state_dict()
    b = load_model(tmp_path / "single" / "final.pt").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["best.pt", "config.json", "epoch-1.pt", "final.pt",
                                                                 "summary.json"]

    # Resume under DDP: one more epoch from the checkpoint, the same as one process doing the same.
    for d in ("ddp", "single"):
        (tmp_path / d / "final.pt").unlink()
        (tmp_path / d / "summary.json").unlink()
    _run(tmp_path, ddp + [str(tmp_path / "ddp"), "16", "2"])
    _run(tmp_path, [sys.executable, str(script), str(tmp_path / "single"), "32", "2"])
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    a = load_model(tmp_path / "ddp" / "final.pt").state_dict()
    b = load_model(tmp_path / "single" / "final.pt").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


STREAM_TRAIN = r"""
import json, os, sys
from pathlib import Path
import asr_kd
import torch
from asr_kd.nnet import DnnConfig, FrameSet, TrainConfig, train
from asr_kd.nnet.stream import FrameShards, StreamFrameSet

shard_dir, exp_dir = Path(sys.argv[1]), Path(sys.argv[2])
torch.set_num_threads(1)
""" + FRAMES + r"""rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
stream = StreamFrameSet(FrameShards(shard_dir), buffer_frames=100)
dev_set = fs.subset(list(range(20, 24)))
cfg = DnnConfig.from_preset("tiny", num_senones=6, feat_dim=8, left_context=1, right_context=1)
tc = TrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.0, seed=3, dtype="fp32", progress=False, patience=0)
mine = stream.epoch_utterances(1, tc.seed, rank, world)
(exp_dir.parent / f"{exp_dir.name}_rank{rank}.json").write_text(json.dumps(
    {"utterances": mine.tolist(), "frames": stream.frames_per_rank(1, tc.seed, world)}))
train(exp_dir, cfg, tc, stream, dev_set)
"""


@pytest.mark.slow
def test_two_ranks_stream_disjoint_utterances_and_checkpoint_once(tmp_path):
    """Streamed frames under torchrun: the ranks read disjoint utterances that cover the epoch, train
    the same number of frames (so they step together), and rank 0 alone writes the checkpoints."""
    made = {"torch": torch, "FrameSet": FrameSet}
    exec(FRAMES, made)  # the scripts' frame set; its first 20 utterances are the training shards
    fs, frames = made["fs"], made["frames"]
    write_frame_shards(((fs.cut_ids[i], fs.speakers[i], fs.feats[fs.utterance(i)].numpy(),
                         fs.labels[fs.utterance(i)].numpy()) for i in range(20)), tmp_path / "shards",
                       shard_frames=200)
    script = tmp_path / "stream_train.py"
    script.write_text(STREAM_TRAIN)
    ddp = _torchrun() + ["--nproc_per_node", "2", "--master_port", str(_free_port()), str(script)]
    _run(tmp_path, ddp + [str(tmp_path / "shards"), str(tmp_path / "ddp")])

    r0 = json.loads((tmp_path / "ddp_rank0.json").read_text())
    r1 = json.loads((tmp_path / "ddp_rank1.json").read_text())
    assert not set(r0["utterances"]) & set(r1["utterances"])  # disjoint ...
    assert sorted(r0["utterances"] + r1["utterances"]) == list(range(20))  # ... and covering the epoch
    assert r0["frames"] == r1["frames"] == 10 * frames
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "best.pt", "config.json", "epoch-1.pt", "epoch-2.pt", "final.pt", "summary.json"]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [1, 2]
    assert summary["best_dev_frame_accuracy"] > 100 / 6  # it learned (6 classes: chance is 16.7%)
