"""Image classifiers through the shared training loop (asr_kd.vision.train over asr_kd.training) on tiny
synthetic problems."""
import math

import pytest
import torch
import torch.nn as nn

from asr_kd.distill import tempered_softmax
from asr_kd.training import apply_max_norm
from asr_kd.utils import UserError, exclusive_lock
from asr_kd.vision.train import (
    TrainConfig,
    count_errors,
    lr_factor,
    predict_logits,
    resolve_dtype,
    train_classifier,
)


def blobs(n=400, d=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(c, d, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    x = centers[y] + torch.randn(n, d, generator=g)
    return x, y


def mlp(d=8, c=3, h=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, c))


def quick(**kw):
    base = dict(epochs=5, batch_size=32, lr=0.05, progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_hard_label_training_learns(dtype):
    x, y = blobs()
    model = mlp()
    before = count_errors(predict_logits(model, x), y)
    hist = train_classifier(model, x, y, quick(dtype=dtype))
    after = count_errors(predict_logits(model, x), y)
    assert before > 50 and after < 10
    assert len(hist.epochs) == 5 and hist.epochs[-1]["loss"] < hist.epochs[0]["loss"]
    assert hist.wall_s > 0


def test_same_seed_same_weights_and_different_seed_differs():
    x, y = blobs()
    ws = []
    for seed in (1, 1, 2):
        m = mlp()
        train_classifier(m, x, y, quick(epochs=2, seed=seed, dtype="fp32"))
        ws.append(m[0].weight.detach().clone())
    assert torch.equal(ws[0], ws[1])
    assert not torch.equal(ws[0], ws[2])


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    x, y = blobs()
    noise = lambda xb: xb + 0.1 * torch.randn_like(xb)  # noqa: E731  (draws from the global RNG)
    cfg = quick(epochs=4, dtype="fp32")

    def dropout_mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    whole = dropout_mlp()
    train_classifier(whole, x, y, cfg, augment=noise)

    class Interrupt(Exception):
        pass

    def stop_at_3(model, epoch):
        if epoch == 3:
            raise Interrupt
        return {"dev_errors": float(epoch)}

    ck = tmp_path / "ck.pt"
    with pytest.raises(Interrupt):
        train_classifier(dropout_mlp(), x, y, cfg, augment=noise, eval_fn=stop_at_3, checkpoint=ck)
    assert torch.load(ck)["epoch"] == 2
    torch.manual_seed(123)  # a different process state: the checkpoint restores the RNGs
    resumed = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    hist = train_classifier(resumed, x, y, cfg, augment=noise, eval_fn=lambda m, e: {}, checkpoint=ck)
    assert [r["epoch"] for r in hist.epochs] == [1, 2, 3, 4]
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="different training run"):
        train_classifier(dropout_mlp(), x, y, quick(epochs=5, dtype="fp32"), checkpoint=ck)


def test_distillation_from_soft_targets_and_from_teacher_callable():
    x, y = blobs()
    teacher = mlp(seed=3)
    train_classifier(teacher, x, y, quick(epochs=8))
    t_logits = predict_logits(teacher, x)
    T = 4.0
    soft = tempered_softmax(t_logits, T)
    # pure soft targets (no labels at all): the student still learns the task
    s1 = mlp(seed=5)
    train_classifier(s1, x, None, quick(epochs=8, temperature=T, dtype="fp32"), soft_targets=soft)
    assert count_errors(predict_logits(s1, x), y) < 15
    # the teacher run on the fly gives the same targets (no augmentation) -> same student
    s2 = mlp(seed=5)
    train_classifier(s2, x, None, quick(epochs=8, temperature=T, dtype="fp32"), teacher=teacher)
    z1, z2 = predict_logits(s1, x), predict_logits(s2, x)
    assert torch.allclose(z1, z2, atol=1e-3)
    # the students mimic the teacher's tempered distribution closely
    agree = (z1.argmax(-1) == t_logits.argmax(-1)).float().mean()
    assert agree > 0.95


def test_augment_is_applied_to_training_batches_only():
    x, y = blobs(n=64)
    seen = []

    def augment(xb):
        seen.append(xb.shape[0])
        return xb + 0.01 * torch.randn_like(xb)

    train_classifier(mlp(), x, y, quick(epochs=2, batch_size=16), augment=augment)
    assert seen == [16] * 8


def test_eval_callback_and_select_best_restores_best_epoch():
    x, y = blobs()
    model = mlp()
    calls = []
    values = {1: 3.0, 2: 1.0, 3: 2.0}
    snapshots = {}

    def eval_fn(m, epoch):
        calls.append((epoch, m.training))
        snapshots[epoch] = m[0].weight.detach().clone()
        return {"val_errors": values[epoch]}

    hist = train_classifier(model, x, y, quick(epochs=3, select_best="val_errors"), eval_fn=eval_fn)
    assert [c[0] for c in calls] == [1, 2, 3]
    assert hist.best_epoch == 2
    assert torch.equal(model[0].weight, snapshots[2])
    assert [r["val_errors"] for r in hist.epochs] == [3.0, 1.0, 2.0]


def test_max_norm_projects_only_long_rows():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0, 0, 0], [0.1, 0, 0, 0], [0, 0, 6.0, 8.0]]))
    apply_max_norm(nn.Sequential(lin), 2.0)
    norms = lin.weight.norm(dim=1)
    assert torch.allclose(norms, torch.tensor([2.0, 0.1, 2.0]), atol=1e-5)
    # direction is kept
    assert torch.allclose(lin.weight[0], torch.tensor([1.2, 1.6, 0, 0]), atol=1e-5)


def test_max_norm_holds_after_training_with_large_lr():
    x, y = blobs()
    model = mlp()
    train_classifier(model, x * 10, y, quick(epochs=2, lr=0.5, max_norm=1.5))
    for m in model:
        if isinstance(m, nn.Linear):
            assert m.weight.norm(dim=1).max() <= 1.5 + 1e-4


def test_lr_schedules():
    c = TrainConfig(epochs=10, lr_schedule="cosine", warmup_epochs=0)
    assert lr_factor(c, 0) == pytest.approx(1.0)
    assert lr_factor(c, 5) == pytest.approx(0.5)
    assert lr_factor(c, 10) == pytest.approx(0.0, abs=1e-9)
    w = TrainConfig(epochs=10, lr_schedule="constant", warmup_epochs=2)
    assert lr_factor(w, 1) == pytest.approx(0.5)
    assert lr_factor(w, 3) == 1.0
    s = TrainConfig(epochs=10, lr_schedule="step", lr_milestones=(3, 6), lr_gamma=0.1)
    assert [lr_factor(s, e) for e in (0, 3, 7)] == pytest.approx([1.0, 0.1, 0.01])
    e = TrainConfig(epochs=10, lr_schedule="exp", lr_gamma=0.5)
    assert lr_factor(e, 2) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError):
        TrainConfig(dtype="fp16")


def test_predict_restores_mode_and_counts():
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 2))
    model.train()
    x = torch.randn(7, 3)
    z1 = predict_logits(model, x, batch_size=3)
    z2 = predict_logits(model, x, batch_size=5)
    assert model.training
    assert z1.shape == (7, 2) and torch.allclose(z1, z2)  # eval mode: dropout off
    labels = z1.argmax(-1)
    assert count_errors(z1, labels) == 0
    assert count_errors(z1, 1 - labels) == 7


def test_bad_inputs_are_rejected():
    x, y = blobs(n=10)
    with pytest.raises(ValueError, match="nothing to learn"):
        train_classifier(mlp(), x, None, quick())
    with pytest.raises(ValueError, match="rows"):
        train_classifier(mlp(), x, y[:5], quick())
    with pytest.raises(ValueError, match="not both"):
        train_classifier(mlp(), x, y, quick(), soft_targets=torch.ones(10, 3) / 3, teacher=mlp())


def test_nan_loss_raises():
    x, y = blobs(n=32)
    x[0] = math.nan
    with pytest.raises(FloatingPointError):
        train_classifier(mlp(), x, y, quick(epochs=1, batch_size=32, dtype="fp32"))


def test_resolve_dtype():
    assert resolve_dtype("fp32", "cpu") == "fp32"
    assert resolve_dtype("bf16", "cpu") == "bf16"
    flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert resolve_dtype("auto", "cpu") == ("bf16" if native else "fp32")
    with pytest.raises(ValueError):
        resolve_dtype("fp16", "cpu")


def test_second_run_on_one_checkpoint_fails_at_once(tmp_path):
    x, y = blobs()
    ck = tmp_path / "ck.pt"
    with exclusive_lock(tmp_path / ".ck.pt.train.lock"):
        with pytest.raises(UserError, match="another process is training in"):
            train_classifier(mlp(), x, y, quick(epochs=1, dtype="fp32"), checkpoint=ck)
    assert not ck.exists()
    train_classifier(mlp(), x, y, quick(epochs=1, dtype="fp32"), checkpoint=ck)
    assert ck.exists()
