"""Frames streamed from shards on disk: coverage, sharding by rank and worker, the buffer bound,
splicing, determinism, bad input, and training through the stream."""
import numpy as np
import pytest
import torch

from asr_kd.nnet import DnnConfig, FrameSet, TrainConfig, load_model, train
from asr_kd.nnet.stream import FrameShards, StreamFrameSet, _EpochStream, write_frame_shards
from asr_kd.utils import UserError
from tests.test_nnet import synthetic_frames


def utterances_of(fs: FrameSet):
    for i in range(len(fs.cut_ids)):
        sl = fs.utterance(i)
        yield fs.cut_ids[i], fs.speakers[i], fs.feats[sl].numpy(), fs.labels[sl].numpy()


def varied_frames(num_utts=30, seed=0):
    """synthetic_frames with utterances of different lengths (7..40 frames)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(7, 41, (num_utts,), generator=g)
    n = int(lengths.sum())
    ends = torch.cumsum(lengths, 0)
    return FrameSet(torch.randn(n, 5, generator=g), torch.randint(0, 6, (n,), generator=g),
                    torch.repeat_interleave(torch.arange(num_utts), lengths), ends - lengths, ends,
                    [f"u{i}" for i in range(num_utts)], [f"spk{i % 4}" for i in range(num_utts)])


@pytest.fixture
def written(tmp_path):
    fs = varied_frames()
    write_frame_shards(utterances_of(fs), tmp_path / "shards", shard_frames=150)
    return fs, FrameShards(tmp_path / "shards")


def frame_keys(x, y, left, dim):
    """Each spliced row's own frame (the one at position ``left``) and label, as hashable keys."""
    own = x.reshape(len(y), -1, dim)[:, left]
    return [tuple(r) + (int(l),) for r, l in zip(own.tolist(), y.tolist())]


def test_shards_round_trip(written):
    fs, shards = written
    assert shards.num_shards > 3 and len(shards) == len(fs) and shards.cut_ids == fs.cut_ids
    back = shards.frameset(range(len(fs.cut_ids)))
    assert torch.equal(back.feats, fs.feats) and torch.equal(back.labels, fs.labels)
    assert torch.equal(back.starts, fs.starts) and back.speakers == fs.speakers


@pytest.mark.parametrize("chunk_frames", [0, 1, 7])
def test_epoch_covers_every_frame_once_and_splices_as_frameset(written, chunk_frames):
    """Whole utterances or pieces of them: every frame once, its window as FrameSet.splice makes it
    (a piece's context frames come from its utterance and are not trained on)."""
    fs, shards = written
    stream = StreamFrameSet(shards, buffer_frames=100, chunk_frames=chunk_frames)
    batches, n = stream.epoch_batches(epoch=1, batch_size=32, seed=0, left=2, right=1)
    batches = list(batches)
    assert len(batches) == n and all(len(y) == 32 for _, y in batches[:-1])
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert len(y) == len(fs)
    # every frame once: match each row to its frame in the FrameSet, then compare the splice
    index = {k: i for i, k in enumerate(frame_keys(fs.splice(torch.arange(len(fs)), 2, 1), fs.labels, 2, 5))}
    rows = torch.tensor([index[k] for k in frame_keys(x, y, 2, 5)])
    assert sorted(rows.tolist()) == list(range(len(fs)))
    assert torch.equal(x, fs.splice(rows, 2, 1)) and torch.equal(y, fs.labels[rows])


def test_order_is_deterministic_per_seed_and_epoch(written):
    _, shards = written
    stream = StreamFrameSet(shards, buffer_frames=100, shards_per_window=2)

    def labels(epoch, seed):
        return torch.cat([y for _, y in stream.epoch_batches(epoch, 16, seed, 1, 1)[0]])

    assert torch.equal(labels(1, 0), labels(1, 0))
    assert not torch.equal(labels(1, 0), labels(2, 0)) and not torch.equal(labels(1, 0), labels(1, 1))


def test_pieces_cover_each_utterance_and_mix_more_utterances_into_a_buffer(written):
    fs, shards = written
    whole = StreamFrameSet(shards, buffer_frames=100)
    chunked = StreamFrameSet(shards, buffer_frames=100, chunk_frames=5)
    pieces = chunked.epoch_pieces(1, 0)
    for u in range(len(fs.cut_ids)):  # each utterance cut into consecutive pieces of at most 5 frames
        mine = np.sort(pieces[pieces[:, 0] == u][:, 1:], axis=0)
        assert mine[0, 0] == 0 and mine[-1, 1] == shards.lengths[u] and (np.diff(mine, axis=1) <= 5).all()
        assert (mine[1:, 0] == mine[:-1, 1]).all()
    assert np.array_equal(whole.epoch_utterances(1, 0), whole.epoch_pieces(1, 0)[:, 0])

    def utterances_in_first_buffer(stream):
        seen, n = set(), 0
        for u, a, b in stream.epoch_pieces(1, 0).tolist():
            seen.add(u)
            n += b - a
            if n >= 100:
                return len(seen)

    assert utterances_in_first_buffer(chunked) > utterances_in_first_buffer(whole)


def test_ranks_and_workers_are_disjoint_and_cover_the_epoch(written):
    fs, shards = written
    stream = StreamFrameSet(shards, buffer_frames=64, shards_per_window=2)
    per_rank = [stream.epoch_utterances(3, 5, rank, 3) for rank in range(3)]
    assert sorted(np.concatenate(per_rank).tolist()) == list(range(len(fs.cut_ids)))
    workers = [_EpochStream(stream, 3, 5, 1, 3, 8, 1, 1) for _ in range(2)]
    got = []
    for k, w in enumerate(workers):  # what DataLoader worker k of 2 reads
        info = type("Info", (), {"id": k, "num_workers": 2})
        torch.utils.data.get_worker_info, saved = (lambda: info), torch.utils.data.get_worker_info
        try:
            got.append(torch.cat([y for _, y in w]))
        finally:
            torch.utils.data.get_worker_info = saved
    mine = per_rank[1]
    assert sum(len(g) for g in got) == int(shards.lengths[mine].sum())
    # every rank gets the same number of frames and of batches (DDP steps together)
    counts = {stream.epoch_batches(3, 8, 5, 1, 1, rank, 3)[1] for rank in range(3)}
    assert len(counts) == 1
    total = stream.frames_per_rank(3, 5, 3)
    assert all(sum(len(y) for _, y in stream.epoch_batches(3, 8, 5, 1, 1, r, 3)[0]) == total for r in range(3))


def test_dataloader_workers_give_the_same_frames(written):
    fs, shards = written
    stream = StreamFrameSet(shards, buffer_frames=64, num_workers=2)
    y = torch.cat([y for _, y in stream.epoch_batches(1, 16, 0, 1, 1)[0]])
    assert len(y) == len(fs) and torch.equal(y.sort().values, fs.labels.sort().values)


def test_buffer_bound_is_respected(written, monkeypatch):
    fs, shards = written
    seen = []
    orig = _EpochStream._shuffled

    def spy(self, feats, labels, bounds, core, n, g):
        seen.append((n, feats.shape[0]))
        return orig(self, feats, labels, bounds, core, n, g)

    monkeypatch.setattr(_EpochStream, "_shuffled", spy)
    stream = StreamFrameSet(shards, buffer_frames=50)
    list(stream.epoch_batches(1, 16, 0, 1, 1)[0])
    longest = int(shards.lengths.max())
    assert len(seen) > 5 and all(n < 50 + longest and cap <= 50 + longest for n, cap in seen)


def test_a_missing_or_truncated_shard_is_one_error_naming_it(written):
    _, shards = written
    (shards.dir / "shard-000001.labels.npy").unlink()
    with pytest.raises(UserError, match="shard-000001.labels.npy not found"):
        FrameShards(shards.dir)
    feats = shards.dir / "shard-000002.feats.npy"
    feats.write_bytes(feats.read_bytes()[:-40])
    (shards.dir / "shard-000001.labels.npy").write_bytes((shards.dir / "shard-000000.labels.npy").read_bytes())
    with pytest.raises(UserError, match="shard-00000[12]"):
        FrameShards(shards.dir)
    (shards.dir / "manifest.json").unlink()
    with pytest.raises(UserError, match="manifest.json not found"):
        FrameShards(shards.dir)


def test_training_through_the_stream_learns_and_resumes(tmp_path):
    fs = synthetic_frames()
    train_set, dev_set = fs.subset(range(30)), fs.subset(range(30, 40))
    write_frame_shards(utterances_of(train_set), tmp_path / "shards", shard_frames=200)
    stream = StreamFrameSet(FrameShards(tmp_path / "shards"), buffer_frames=300)
    cfg = DnnConfig.from_preset("tiny", num_senones=6, feat_dim=8, left_context=1, right_context=1)
    tc = TrainConfig(epochs=3, batch_size=64, lr=0.1, seed=3, dtype="fp32", progress=False, patience=0)
    whole = train(tmp_path / "whole", cfg, tc, stream, dev_set)
    assert whole["best_dev_frame_accuracy"] > 2 * 100 / 6 and whole["train_frames"] == len(train_set)
    tc.epochs = 2
    train(tmp_path / "resumed", cfg, tc, stream, dev_set)
    (tmp_path / "resumed" / "final.pt").unlink()
    (tmp_path / "resumed" / "summary.json").unlink()
    tc.epochs = 3
    train(tmp_path / "resumed", cfg, tc, stream, dev_set)
    a = torch.load(tmp_path / "whole" / "epoch-3.pt")["model"]
    b = torch.load(tmp_path / "resumed" / "epoch-3.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # resumed after epoch 2 = uninterrupted
