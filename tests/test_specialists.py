"""CIFAR-100 generalist + specialists: clustering, dustbin mapping, KL combination, data, CLI."""
import math
import pickle

import numpy as np
import pytest
import torch

from asr_kd.vision.cifar import (
    Normalize,
    has_official_layout,
    load_cifar100,
    load_meta,
    prepare_cifar100,
    random_crop_flip,
    train_val_split,
)
from asr_kd.vision.cnn import CifarCNN, make_specialist
from asr_kd.vision.specialists import (
    active_specialists,
    adjusted_rand_index,
    cluster_classes,
    cluster_purity,
    combine_kl,
    correct_dustbin_bias,
    dustbin_labels,
    online_kmeans,
    oversampling_log_factor,
    prediction_covariance,
    special_hard_soft_targets,
)


# ----------------------------------------------------------------------------- clustering


def confusable_predictions(groups, n=3000, seed=0):
    """Predictions of a model that knows the group of each image but not the class inside it."""
    g = torch.Generator().manual_seed(seed)
    c = sum(len(s) for s in groups)
    probs = torch.zeros(n, c)
    which = torch.randint(0, len(groups), (n,), generator=g)
    for i in range(n):
        s = groups[int(which[i])]
        w = torch.rand(len(s), generator=g) ** 3
        probs[i, s] = 0.9 * w / w.sum()
        probs[i] += 0.1 / c
    return probs


def test_covariance_clustering_recovers_known_groups():
    perm = np.random.default_rng(1).permutation(12)
    groups = [sorted(perm[i : i + 4].tolist()) for i in (0, 4, 8)]
    probs = confusable_predictions(groups)
    cov = prediction_covariance(probs)
    assert cov.shape == (12, 12)
    assert torch.allclose(cov, cov.T, atol=1e-6)
    # Classes of the same group co-vary positively, of different groups negatively.
    a, b = groups[0][:2]
    assert cov[a, b] > 0 > cov[a, groups[1][0]]
    subsets, parts = cluster_classes(cov, num_clusters=3, runs=1, seed=0)
    assert sorted(map(sorted, subsets)) == sorted(groups)
    truth = np.zeros(12, dtype=int)
    for k, s in enumerate(groups):
        truth[s] = k
    assert adjusted_rand_index(parts[0], truth) == pytest.approx(1.0)
    assert cluster_purity(parts[0], truth) == pytest.approx(1.0)


def test_online_kmeans_and_overlapping_runs():
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([c + rng.normal(size=(20, 2)) for c in centers])
    assign, cent, inertia = online_kmeans(x, 3, seed=3)
    assert len(np.unique(assign)) == 3
    for k in range(3):  # each true blob in one cluster
        assert len(np.unique(assign[20 * k : 20 * (k + 1)])) == 1
    assert inertia < 3 * 60  # about 2 per point of unit-variance 2-d noise
    # Two runs of K=2 on 3 blobs disagree somewhere: the union covers some classes twice.
    cov = torch.from_numpy(np.cov(np.concatenate([x, x[:, :1]], 1).T)).float()
    subsets, parts = cluster_classes(cov, 2, runs=2, min_size=1, seed=0)
    assert len(parts) == 2 and all(len(s) >= 1 for s in subsets)


def test_adjusted_rand_index_chance_and_identity():
    a = np.repeat(np.arange(10), 10)
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)
    assert adjusted_rand_index(a, (a + 3) % 10) == pytest.approx(1.0)  # renaming does not matter
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(a, rng.permutation(a))) < 0.05


# ----------------------------------------------------------------------------- dustbin


def test_dustbin_mapping():
    y = torch.tensor([0, 3, 5, 7, 9, 5])
    out = dustbin_labels(y, [5, 3, 9], num_classes=10)
    assert out.tolist() == [3, 1, 0, 3, 2, 0]  # 5->0, 3->1, 9->2, others -> dustbin 3


def test_dustbin_logit_correction_restores_priors():
    f = 0.1  # special examples are 10% of the data, half of the training batches
    log_factor = oversampling_log_factor(f, 0.5)
    assert log_factor == pytest.approx(math.log(9.0))
    # A specialist that learned only the training priors: 0.5 dustbin, 0.5 over 2 special classes.
    head = torch.nn.Linear(1, 3)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.log(torch.tensor([0.25, 0.25, 0.5])))
    correct_dustbin_bias(head, log_factor)
    p = torch.softmax(head(torch.ones(1, 1)), -1)
    assert p[0, -1].item() == pytest.approx(1 - f)
    assert p[0, 0].item() == pytest.approx(f / 2)
    with pytest.raises(ValueError):
        oversampling_log_factor(0.0)


def test_dustbin_specialist_starts_from_generalist():
    torch.manual_seed(0)
    gen = CifarCNN(10, width=4).eval()
    spec = make_specialist(gen, [2, 7], dustbin=True).eval()
    x = torch.randn(5, 3, 32, 32)
    zg, zs = gen(x), spec(x)
    assert zs.shape == (5, 3)
    assert torch.allclose(zs[:, :2], zg[:, [2, 7]], atol=1e-5)
    # The dustbin starts near the log-sum-exp of the other classes' logits (equal when they are equal).
    assert torch.allclose(spec.features[0][0].weight, gen.features[0][0].weight)
    spec.features[0][0].weight.data += 1  # a deep copy, not shared
    assert not torch.allclose(spec.features[0][0].weight, gen.features[0][0].weight)
    full = make_specialist(gen, [2, 7], dustbin=False).eval()
    assert torch.allclose(full(x), zg, atol=1e-5)


def test_special_hard_soft_targets():
    p = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    t = special_hard_soft_targets(p, torch.tensor([1, 3]), classes=[0, 1])
    # special example (label 1): all special mass (0.3) on the label, non-special kept.
    assert torch.allclose(t[0], torch.tensor([0.0, 0.3, 0.3, 0.4]))
    # non-special example (label 3): special classes get 0, their mass goes to the label.
    assert torch.allclose(t[1], torch.tensor([0.0, 0.0, 0.2, 0.8]))
    assert torch.allclose(t.sum(1), torch.ones(2))


# ----------------------------------------------------------------------------- KL combination


def test_kl_combination_is_arithmetic_mean_with_full_cover():
    torch.manual_seed(0)
    b, c = 32, 8
    ps = [torch.softmax(2 * torch.randn(b, c), -1) for _ in range(4)]
    q = combine_kl(ps[0], ps[1:], [list(range(c))] * 3, full_cover=True)
    assert torch.allclose(q, torch.stack(ps).mean(0), atol=1e-4)
    assert torch.allclose(q.sum(-1), torch.ones(b), atol=1e-5)


def test_kl_combination_with_dustbins():
    torch.manual_seed(1)
    b, c = 16, 6
    truth = torch.softmax(2 * torch.randn(b, c), -1)
    subsets = [[0, 1], [2, 3, 4]]

    def restrict(q, s):
        return torch.cat([q[:, s], 1 - q[:, s].sum(1, keepdim=True)], 1)

    # Models that all agree with one distribution: it is the minimiser (KL = 0).
    q = combine_kl(truth, [restrict(truth, s) for s in subsets], subsets)
    assert torch.allclose(q, truth, atol=1e-4)
    # A confident specialist moves the probability inside its subset, not the mass of the subset.
    sharp = torch.zeros(b, 3)
    sharp[:, 0] = truth[:, [0, 1]].sum(1)
    sharp[:, 2] = 1 - sharp[:, 0]
    q = combine_kl(truth, [sharp], subsets[:1])
    assert torch.all(q[:, 0] > truth[:, 0])
    assert torch.allclose(q[:, [0, 1]].sum(1), truth[:, [0, 1]].sum(1), atol=1e-3)
    # Inactive specialists change nothing.
    q = combine_kl(truth, [sharp], subsets[:1], active=torch.zeros(b, 1, dtype=torch.bool))
    assert torch.allclose(q, truth, atol=1e-6)


def test_active_specialists():
    p = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]])
    act = active_specialists(p, [[0], [1, 2], [3]], top_n=1)
    assert act.tolist() == [[True, False, False], [False, False, True]]
    act = active_specialists(p, [[0], [1, 2], [3]], top_n=2)
    assert act.tolist() == [[True, True, False], [False, True, True]]


# ----------------------------------------------------------------------------- data


def write_fake_official(root, n_train=200, n_test=100, seed=0):
    """A synthetic CIFAR-100 in the official pickle layout (bytes keys, like the originals)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)],
                     "coarse_label_names": [f"s{i}" for i in range(20)]}, f)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = np.arange(n) % 100
        rec = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"fine_labels": fine.tolist(),
               b"coarse_labels": (fine // 5).tolist(), b"filenames": [b"x"] * n, b"batch_label": b"b"}
        with open(d / split, "wb") as f:
            pickle.dump(rec, f, protocol=2)
    return d


def test_official_layout_loading(tmp_path):
    d = write_fake_official(tmp_path)
    assert has_official_layout(tmp_path)
    assert prepare_cifar100(tmp_path, corpus_dir=None, download=False) == d  # nothing to do
    x, fine, coarse = load_cifar100(d, "train")
    assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8
    assert fine[:3].tolist() == [0, 1, 2] and coarse[7].item() == 1
    raw = pickle.load(open(d / "train", "rb"), encoding="bytes")[b"data"]
    assert x[5, 1, 2, 3].item() == raw[5, 1024 + 2 * 32 + 3]  # channel-major RGB rows
    assert load_meta(d)["coarse_label_names"][3] == "s3"
    tr, va = train_val_split(fine, 1)
    assert len(va) == 100 and len(set(tr.tolist()) & set(va.tolist())) == 0
    with pytest.raises(FileNotFoundError, match="test"):
        (d / "test").unlink()
        load_cifar100(d, "test")


def test_prepare_without_data_or_download_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        prepare_cifar100(tmp_path / "nothing", corpus_dir=tmp_path / "missing", download=False)


def test_augmentation_and_normalization():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    z = Normalize()(x)
    assert z.dtype == torch.float32 and z.shape == x.shape
    a = random_crop_flip(z)
    assert a.shape == z.shape
    # Each output is a shifted (and maybe mirrored) copy: its centre appears in the input.
    centre = a[0, :, 8:24, 8:24]
    found = any(
        torch.equal(centre, src[:, 8 + di : 24 + di, 8 + dj : 24 + dj])
        for src in (z[0], z[0].flip(-1)) for di in range(-4, 5) for dj in range(-4, 5)
    )
    assert found


# ----------------------------------------------------------------------------- end to end


def test_quick_pipeline_on_fake_data(tmp_path, monkeypatch):
    """Every CLI step on a tiny synthetic official layout: outputs and RESULTS tables appear."""
    from asr_kd.cli import main
    from asr_kd.results import load_results

    write_fake_official(tmp_path / "data", n_train=600, n_test=200)
    exp, res = tmp_path / "exp", tmp_path / "res"
    common = ["--data-dir", str(tmp_path / "data"), "--exp-dir", str(exp), "--results-dir", str(res),
              "--quick", "--max-train", "600", "--width", "4"]
    # --quick sets its own sizes; the explicit ones after it are overridden, which is fine here.
    for step in (["prepare", "--no-download"], ["generalist"], ["cluster"], ["specialists"],
                 ["specialists", "--variant", "full-soft"], ["combine"], ["overfit"]):
        assert main(["specialists", *step, *common]) == 0
    tables = {r["table"] for r in load_results(res)["rows"]}
    assert {"Generalist", "Clusters vs superclasses", "Table 3: generalist + specialists",
            "Table 4: change by number of specialists covering the class",
            "Section 6.1: specialists overfitting"} <= tables
    md = (res / "RESULTS.md").read_text()
    assert "asr-kd specialists combine" in md
    # Resumable: a second run of a step skips its work.
    mtime = (exp / "generalist" / "logits.pt").stat().st_mtime
    assert main(["specialists", "generalist", *common]) == 0
    assert (exp / "generalist" / "logits.pt").stat().st_mtime == mtime


def test_flags_come_from_the_config():
    """Each flag's default is its config field's; --quick replaces the sizes given with it; the
    command written in the rows lists the options that differ from their defaults."""
    import argparse

    from asr_kd.vision import specialists_cli
    from asr_kd.vision.specialist_steps import SpecialistsConfig

    parser = argparse.ArgumentParser()
    specialists_cli.add_arguments(parser)
    args = parser.parse_args(["generalist"])
    assert specialists_cli.config(args) == SpecialistsConfig()
    args = parser.parse_args(["combine", "--quick", "--width", "4", "--top-n-candidates", "1,2", "--raw-columns"])
    cfg = specialists_cli.config(args)
    assert cfg.width == 8 and cfg.kl_steps == 100 and cfg.top_n_candidates == (1, 2) and cfg.raw_columns
    assert cfg == SpecialistsConfig.quick(width=8, top_n_candidates=(1, 2), raw_columns=True)
    assert specialists_cli.command_line(["asr-kd", "specialists", "combine"], args, specialists_cli.FLAGS) == (
        "asr-kd specialists combine --quick --width 4 --raw-columns --top-n-candidates 1,2")
