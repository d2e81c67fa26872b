"""Frame data with splicing, the DNN, training with resume, ensembles and distillation end to end."""
import os

import numpy as np
import pytest
import torch

from asr_kd.nnet import (DnnConfig, Ensemble, FrameSet, TrainConfig, frame_accuracy_of, frame_batches, load_model,
                         split_by_speaker, subset_utterances, train)
from asr_kd.nnet.steps import check_not_stale, up_to_date
from asr_kd.utils import UserError, exclusive_lock, read_json, write_json


def synthetic_frames(num_utts=40, num_senones=6, dim=8, seed=0, frames=30):
    """Utterances whose senone at t is readable from the features at t-1..t+1, with noise."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_senones, dim, generator=g) * 1.5
    feats, labels, lengths = [], [], []
    for u in range(num_utts):
        y = torch.randint(0, num_senones, (frames // 3,), generator=g).repeat_interleave(3)
        x = means[y] + torch.randn(len(y), dim, generator=g)
        feats.append(x)
        labels.append(y)
        lengths.append(len(y))
    lengths = torch.tensor(lengths)
    ends = torch.cumsum(lengths, 0)
    return FrameSet(torch.cat(feats), torch.cat(labels), torch.repeat_interleave(torch.arange(num_utts), lengths),
                    ends - lengths, ends, [f"u{i}" for i in range(num_utts)], [f"spk{i % 8}" for i in range(num_utts)])


def test_splice_replicates_edges_and_stays_in_its_utterance():
    fs = synthetic_frames(num_utts=3, frames=6)
    x = fs.splice(torch.tensor([0, 6, 11]), left=2, right=1)  # first frame of u0, u1; last of u1
    d = fs.feat_dim
    win = x.reshape(3, 4, d)
    assert torch.equal(win[0, 0], fs.feats[0]) and torch.equal(win[0, 1], fs.feats[0])  # left edge replicated
    assert torch.equal(win[0, 3], fs.feats[1])
    assert torch.equal(win[1, 0], fs.feats[6])  # u1 never reads u0's frames
    assert torch.equal(win[2, 3], fs.feats[11]) and torch.equal(win[2, 0], fs.feats[9])


def test_frame_batches_cover_every_labelled_frame_once_and_shard():
    labels = torch.tensor([0, 1, -1, 2, 3, 4, 5, -1, 6, 7])
    seen = torch.cat(list(frame_batches(10, 3, epoch=1, seed=0, labels=labels)))
    assert sorted(seen.tolist()) == [0, 1, 3, 4, 5, 6, 8, 9]
    r0 = torch.cat(list(frame_batches(10, 2, 1, 0, rank=0, world_size=2, labels=labels)))
    r1 = torch.cat(list(frame_batches(10, 2, 1, 0, rank=1, world_size=2, labels=labels)))
    assert len(r0) == len(r1) == 4 and not set(r0.tolist()) & set(r1.tolist())
    e2 = torch.cat(list(frame_batches(10, 3, epoch=2, seed=0, labels=labels)))
    assert not torch.equal(seen, e2)  # a new order each epoch


def test_speaker_split_and_subsets():
    fs = synthetic_frames()
    tr, dev = split_by_speaker(fs, 0.25, seed=0)
    assert not {fs.speakers[i] for i in tr} & {fs.speakers[i] for i in dev} and len(tr) + len(dev) == 40
    sub = fs.subset(dev)
    assert len(sub) == sum(int(fs.ends[i] - fs.starts[i]) for i in dev)
    assert torch.equal(sub.feats[: int(fs.ends[dev[0]] - fs.starts[dev[0]])], fs.feats[fs.utterance(dev[0])])
    assert len(subset_utterances(100, 0.03, seed=1)) == 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("nnet")
    fs = synthetic_frames()
    tr, dev = split_by_speaker(fs, 0.25)
    train_set, dev_set = fs.subset(tr), fs.subset(dev)
    cfg = DnnConfig.from_preset("tiny", num_senones=6, feat_dim=8, left_context=1, right_context=1)
    teachers = []
    for seed in (1, 2):
        tc = TrainConfig(epochs=4, batch_size=64, lr=0.1, seed=seed, dtype="fp32", progress=False)
        train(d / f"teacher{seed}", cfg, tc, train_set, dev_set, meta={"seed": seed})
        teachers.append(load_model(d / f"teacher{seed}" / "final.pt"))
    return d, cfg, train_set, dev_set, teachers


def test_training_learns_and_exports(trained):
    d, cfg, train_set, dev_set, teachers = trained
    m = teachers[0]
    assert m.meta == {"seed": 1}
    chance = 100 / 6
    assert frame_accuracy_of(m, dev_set, dtype="fp32") > 2 * chance
    assert (d / "teacher1" / "summary.json").exists()
    saved = read_json(d / "teacher1" / "config.json")  # the settings, saved with the model
    assert saved["train"]["seed"] == 1 and saved["model"]["num_senones"] == 6
    assert "teacher_s" not in read_json(d / "teacher1" / "summary.json")["history"][-1]  # no teachers, no teacher time
    # different seeds, different models
    assert not torch.equal(teachers[0].net[0].weight, teachers[1].net[0].weight)


def test_resume_after_interruption(trained, tmp_path):
    _, cfg, train_set, dev_set, _ = trained
    tc = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=3, dtype="fp32", progress=False, patience=0)
    train(tmp_path / "m", cfg, tc, train_set, dev_set)
    # Pretend the run died after epoch 2 of 3: drop the exports, keep the checkpoints.
    (tmp_path / "m" / "final.pt").unlink()
    (tmp_path / "m" / "summary.json").unlink()
    tc.epochs = 3
    summary = train(tmp_path / "m", cfg, tc, train_set, dev_set)
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]


def test_distilled_student_and_ensemble(trained, tmp_path):
    _, cfg, train_set, dev_set, teachers = trained
    ens = Ensemble(teachers)
    assert ens(train_set.splice(torch.arange(5), 1, 1)).shape == (2, 5, 6)
    ens_acc = frame_accuracy_of(ens, dev_set, dtype="fp32")
    tc = TrainConfig(epochs=3, batch_size=64, lr=0.1, seed=7, dtype="bf16", progress=False, temperature=2.0)
    summary = train(tmp_path / "student", cfg, tc, train_set, dev_set, teachers=ens)
    assert summary["distilled"] and summary["num_teachers"] == 2
    student = load_model(tmp_path / "student" / "final.pt")
    assert frame_accuracy_of(student, dev_set) > 2 * 100 / 6
    assert ens_acc > 2 * 100 / 6


def test_grad_clip_bounds_each_update(trained, tmp_path):
    """One plain-SGD step on one batch moves the weights by at most lr * clip, and the epoch
    record says the step was clipped; without the clip the same step is larger."""
    from asr_kd.nnet.model import Dnn

    _, cfg, train_set, dev_set, _ = trained

    def step_norm(clip, name):
        tc = TrainConfig(epochs=1, batch_size=10_000, lr=0.1, momentum=0.0, seed=5, dtype="fp32", progress=False,
                         grad_clip=clip)
        summary = train(tmp_path / name, cfg, tc, train_set, dev_set)
        torch.manual_seed(5)
        before = Dnn(cfg).state_dict()
        after = load_model(tmp_path / name / "final.pt").state_dict()
        return float(torch.sqrt(sum(((after[k] - before[k]) ** 2).sum() for k in before))), summary["history"][0]

    clipped, record = step_norm(0.01, "clip")
    free, free_record = step_norm(0.0, "free")
    assert clipped <= 0.1 * 0.01 * 1.001
    assert record["clipped_pct"] == 100.0 and "clipped_pct" not in free_record
    assert free > 10 * clipped


def test_nan_loss_is_a_clear_error(trained, tmp_path):
    _, cfg, train_set, dev_set, _ = trained
    bad = FrameSet(**{**train_set.__dict__, "feats": train_set.feats.clone()})
    bad.feats[0] = float("nan")
    tc = TrainConfig(epochs=1, batch_size=10_000, dtype="fp32", progress=False)
    with pytest.raises(FloatingPointError, match="epoch 1"):
        train(tmp_path / "nan", cfg, tc, bad, dev_set)


def test_label_mismatch_and_missing_labels_are_skipped(corpora, tmp_path):
    """Real fbank cuts: one with matching labels, one too short, one without labels."""
    from lhotse import CutSet, NumpyFilesWriter, load_manifest

    from asr_kd.data.corpora import prepare_corpus
    from asr_kd.data.features import Cmvn, compute_cmvn_stats, compute_fbank

    prepare_corpus("yesno", corpora / "yesno", tmp_path / "m")
    cuts = load_manifest(tmp_path / "m" / "yesno_cuts_test.jsonl.gz").subset(first=3)
    cuts = compute_fbank(cuts, tmp_path / "f" / "yesno_cuts_test.jsonl.gz", tmp_path / "f" / "feats", num_jobs=1)
    out = []
    with NumpyFilesWriter(tmp_path / "labels") as w:
        for i, c in enumerate(cuts):
            n = c.num_frames - (5 if i == 1 else 0)
            if i < 2:
                c = c.with_custom("senone", w.store_array(c.id, np.zeros(n, dtype=np.int32), frame_shift=0.01, temporal_dim=0))
            out.append(c)
    cuts = CutSet.from_cuts(out)
    fs, report = FrameSet.from_cuts(cuts, Cmvn(compute_cmvn_stats(cuts)), progress=False)
    assert report["cuts"] == 1 and report["length_mismatch"] == [out[1].id] and report["no_labels"] == [out[2].id]
    assert len(fs) == out[0].num_frames


def test_mask_window_zeroes_one_band_and_some_frames_per_window():
    from asr_kd.nnet.train import mask_window

    x = torch.ones(64, 5 * 8)
    g = torch.Generator().manual_seed(0)
    y = mask_window(x, 5, freq_mask=3, time_mask=2, generator=g).reshape(64, 5, 8)
    assert torch.equal(x, torch.ones(64, 40))  # the input is not changed in place
    zero_bins = (y == 0).all(dim=1)  # [B, D]: bins zeroed over the whole window
    zero_frames = (y == 0).all(dim=2)  # [B, frames]
    assert int(zero_bins.sum(1).max()) <= 3 and int(zero_frames.sum(1).max()) <= 2
    assert zero_bins.any() and zero_frames.any()
    for row in zero_bins:  # one consecutive band
        idx = torch.nonzero(row).squeeze(1)
        assert len(idx) == 0 or int(idx[-1] - idx[0]) == len(idx) - 1
    again = mask_window(x, 5, 3, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again.reshape(64, 5, 8), y)
    assert torch.equal(mask_window(x, 5, 0, 0, g), x)


def test_resume_with_dropout_and_masks_equals_an_uninterrupted_run(trained, tmp_path):
    """Dropout and SpecAugment draw from generators seeded per epoch: stopping after epoch 2 and
    resuming gives the weights of a run that never stopped."""
    _, cfg, train_set, dev_set, _ = trained
    cfg = DnnConfig(**{**cfg.__dict__, "dropout": 0.2})
    kw = dict(batch_size=64, lr=0.1, seed=4, dtype="fp32", progress=False, patience=0, freq_mask=2, time_mask=1)
    train(tmp_path / "straight", cfg, TrainConfig(epochs=3, **kw), train_set, dev_set)
    train(tmp_path / "resumed", cfg, TrainConfig(epochs=2, **kw), train_set, dev_set)
    (tmp_path / "resumed" / "final.pt").unlink()
    (tmp_path / "resumed" / "summary.json").unlink()
    train(tmp_path / "resumed", cfg, TrainConfig(epochs=3, **kw), train_set, dev_set)
    a = load_model(tmp_path / "straight" / "final.pt").state_dict()
    b = load_model(tmp_path / "resumed" / "final.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_students_trained_together_share_one_teacher_pass(trained, tmp_path):
    """Two students (T=2, T=5) trained together equal the same students trained one by one, while
    the teachers run once per batch instead of once per batch per student."""
    from asr_kd.nnet.train import train_together

    _, cfg, train_set, dev_set, teachers = trained
    ens = Ensemble(teachers)
    calls = []
    ens.register_forward_hook(lambda *_: calls.append(1))
    kw = dict(epochs=2, batch_size=64, lr=0.1, seed=11, dtype="fp32", progress=False, patience=0)
    cfgs = [TrainConfig(temperature=2.0, **kw), TrainConfig(temperature=5.0, hard_weight=0.2, **kw)]
    together = train_together([tmp_path / "T2", tmp_path / "T5"], cfg, cfgs, train_set, dev_set, teachers=ens)
    shared_calls = len(calls)
    batches = sum(1 for _ in frame_batches(len(train_set), 64, 1, 11, labels=train_set.labels))
    assert shared_calls == 2 * batches
    calls.clear()
    alone = [train(tmp_path / "alone0", cfg, TrainConfig(temperature=2.0, **kw), train_set, dev_set, teachers=ens),
             train(tmp_path / "alone1", cfg, TrainConfig(temperature=5.0, hard_weight=0.2, **kw), train_set, dev_set,
                   teachers=ens)]
    assert len(calls) == 2 * shared_calls
    for name, i in (("T2", 0), ("T5", 1)):
        a = load_model(tmp_path / name / "final.pt").state_dict()
        b = load_model(tmp_path / f"alone{i}" / "final.pt").state_dict()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
        assert together[i]["history"][-1]["dev_frame_accuracy"] == alone[i]["history"][-1]["dev_frame_accuracy"]
        assert 0 <= together[i]["history"][-1]["teacher_s"] <= together[i]["history"][-1]["wall_s"]
    with pytest.raises(ValueError, match="share batch_size"):
        train_together([tmp_path / "x", tmp_path / "y"], cfg, [TrainConfig(batch_size=32), TrainConfig(batch_size=64)],
                       train_set, dev_set)


def test_second_training_in_one_directory_fails_at_once(trained, tmp_path):
    """Another process holds exp_dir's training lock (here: this test, through its own open file)."""
    _, cfg, train_set, dev_set, _ = trained
    tc = TrainConfig(epochs=1, batch_size=64, lr=0.1, seed=3, dtype="fp32", progress=False)
    lock = tmp_path / ".m.train.lock"
    with exclusive_lock(lock):
        with pytest.raises(UserError, match=f"another process is training in {tmp_path / 'm'} \\(lock {lock}\\)"):
            train(tmp_path / "m", cfg, tc, train_set, dev_set)
    assert not list((tmp_path / "m").glob("*.pt"))  # it wrote nothing
    train(tmp_path / "m", cfg, tc, train_set, dev_set)  # the lock is free again
    assert (tmp_path / "m" / "final.pt").exists()


def test_frames_cache_is_used_only_for_its_own_manifest(tmp_path):
    frames = synthetic_frames(num_utts=4)
    cache = tmp_path / "train.pt"
    frames.save(cache, source="/data/a.jsonl.gz")
    assert torch.equal(FrameSet.load(cache, "/data/a.jsonl.gz").feats, frames.feats)
    assert FrameSet.load(cache, "/data/b_sp.jsonl.gz") is None  # another manifest: rebuilt by the caller
    assert FrameSet.load(cache) is not None


def test_a_model_older_than_its_labels_is_refused_not_kept(tmp_path):
    exp, labels = tmp_path / "dnn", tmp_path / "labels.jsonl.gz"
    exp.mkdir()
    labels.write_text("")
    check_not_stale([exp], [labels])  # nothing trained yet
    (exp / "epoch-1.pt").write_text("")
    os.utime(exp / "epoch-1.pt", (1e9, 1e9))
    with pytest.raises(UserError, match=f"{exp} was trained from older inputs \\({labels} is newer"):
        check_not_stale([exp], [labels])  # labels rebuilt after the first checkpoint
    os.utime(labels, (1e9 - 10, 1e9 - 10))
    check_not_stale([exp], [labels, tmp_path / "absent"])


def test_a_score_is_kept_only_while_newer_than_its_models_and_cuts(tmp_path):
    model, other, cuts, out = (tmp_path / n for n in ("a.pt", "b.pt", "cuts.jsonl.gz", "eval.json"))
    for f in (model, other, cuts):
        f.write_text("")
        os.utime(f, (1e9, 1e9))
    assert not up_to_date(out, [model], [cuts])  # nothing scored yet
    write_json(out, {"models": [str(model)], "frame_accuracy": 50.0})
    assert up_to_date(out, [model], [cuts])
    assert not up_to_date(out, [model], [cuts], force=True)
    assert not up_to_date(out, [model, other], [cuts])  # another ensemble
    assert not up_to_date(out, [model], [cuts], needs=("per_utterance",))  # written before eval saved them
    os.utime(model, (2e9, 2e9))  # the model retrained after the score
    assert not up_to_date(out, [model], [cuts])
    os.utime(model, (1e9, 1e9))
    os.utime(cuts, (2e9, 2e9))  # labels rebuilt
    assert not up_to_date(out, [model], [cuts])
