"""MNIST recipe pieces: IDX parsing + checksums, download/skip, jitter, max-norm, nets, bias shift,
and the --quick run end to end."""
import gzip
import hashlib
import json
import struct

import numpy as np
import pytest
import torch

from asr_kd.vision import mnist as M
from asr_kd.vision.train import TrainConfig, train_classifier


def write_idx(path, arr, gz=True):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    code = codes[arr.dtype.type]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}i", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)
    return hashlib.md5(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_roundtrip(tmp_path, gz):
    imgs = np.random.RandomState(0).randint(0, 256, size=(5, 28, 28)).astype(np.uint8)
    md5 = write_idx(tmp_path / "img", imgs, gz)
    out = M.read_idx(tmp_path / "img", md5)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, imgs)
    ints = np.array([1, -2, 300000], dtype=np.int32)
    write_idx(tmp_path / "ints", ints, gz)
    np.testing.assert_array_equal(M.read_idx(tmp_path / "ints"), ints)


def test_read_idx_rejects_bad_files(tmp_path):
    p = tmp_path / "bad.idx"
    p.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">i", 3) + b"abc")
    with pytest.raises(M.IDXFormatError, match="bad.idx.*magic"):
        M.read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">i", 5) + b"abc")  # 3 bytes for 5
    with pytest.raises(M.IDXFormatError, match="expected 5"):
        M.read_idx(p)
    p.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">i", 1) + b"a")
    with pytest.raises(M.IDXFormatError, match="type"):
        M.read_idx(p)


def test_checksum_failure_on_corrupted_file(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    p = tmp_path / "labels-idx1-ubyte.gz"
    md5 = write_idx(p, labels)
    np.testing.assert_array_equal(M.read_idx(p, md5), labels)
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(M.ChecksumError, match="labels-idx1-ubyte.gz"):
        M.read_idx(p, md5)


def test_real_files_parse_and_a_corrupted_copy_fails(corpora, tmp_path):
    d = corpora / "mnist"
    name, md5 = M.MNIST_FILES["test_labels"]
    labels = M.read_idx(d / name, md5)
    assert labels.shape == (10000,) and labels.max() == 9 and int((labels == 3).sum()) == 1010
    bad = tmp_path / name
    raw = bytearray((d / name).read_bytes())
    raw[100] ^= 0x01
    bad.write_bytes(bytes(raw))
    with pytest.raises(M.ChecksumError, match=name):
        M.read_idx(bad, md5)


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """Four tiny IDX files standing in for MNIST (MNIST_FILES patched to their md5s)."""
    src = tmp_path / "mirror"
    src.mkdir()
    rng = np.random.RandomState(0)
    files = {}
    for key, (name, _) in M.MNIST_FILES.items():
        n = 30 if key.startswith("train") else 10
        arr = rng.randint(0, 256, (n, 28, 28)) if key.endswith("images") else rng.randint(0, 10, n)
        files[key] = (name, write_idx(src / name, arr.astype(np.uint8)))
    monkeypatch.setattr(M, "MNIST_FILES", files)
    return src


def test_prepare_uses_local_dir_in_place(fake_mnist, tmp_path):
    assert M.prepare_mnist(fake_mnist, tmp_path / "dl") == fake_mnist
    assert not (tmp_path / "dl").exists()  # nothing copied or downloaded
    data = M.load_mnist(fake_mnist)
    assert data["train_x"].shape == (30, 784) and data["test_y"].shape == (10,)
    assert 0.0 <= float(data["train_x"].min()) and float(data["train_x"].max()) <= 1.0


def test_download_then_skip_when_verified(fake_mnist, tmp_path, monkeypatch):
    dl = tmp_path / "dl"
    # a mirror URL that fails, then a file:// mirror that works
    out = M.prepare_mnist(None, dl, mirrors=["file:///nonexistent/", fake_mnist.as_uri() + "/"])
    assert out == dl and sorted(p.name for p in dl.iterdir()) == sorted(n for n, _ in M.MNIST_FILES.values())

    def no_download(*a, **k):
        raise AssertionError("download attempted although verified files exist")

    monkeypatch.setattr(M, "download_file", no_download)
    assert M.prepare_mnist(tmp_path / "missing", dl) == dl
    # a corrupted file already in the download dir is an error naming it, not silently kept
    name = M.MNIST_FILES["test_labels"][0]
    (dl / name).write_bytes(b"garbage")
    with pytest.raises(M.ChecksumError, match=name):
        M.prepare_mnist(None, dl)


def test_download_failure_is_reported(fake_mnist, tmp_path):
    with pytest.raises(RuntimeError, match="could not download"):
        M.prepare_mnist(None, tmp_path / "dl", mirrors=["file:///nonexistent/"])
    with pytest.raises(FileNotFoundError):
        M.prepare_mnist(tmp_path / "nothing-here", None)


def test_shift_images_moves_pixels_and_fills_zero():
    img = torch.zeros(2, 28, 28)
    img[:, 10, 12] = 1.0
    out = M.shift_images(img.reshape(2, -1), torch.tensor([2, -1]), torch.tensor([-2, 1])).reshape(2, 28, 28)
    assert out[0, 8, 14] == 1.0 and out[0].sum() == 1.0  # right 2, up 2
    assert out[1, 11, 11] == 1.0 and out[1].sum() == 1.0  # left 1, down 1
    edge = torch.zeros(1, 28, 28)
    edge[0, :, 27] = 1.0  # right column falls off when shifting right
    assert M.shift_images(edge, torch.tensor([1]), torch.tensor([0])).sum() == 0


def test_jitter_offsets_stay_within_two_pixels_and_vary():
    torch.manual_seed(0)
    img = torch.zeros(500, 28, 28)
    img[:, 14, 14] = 1.0
    out = M.jitter(img.reshape(500, -1), max_shift=2).reshape(500, 28, 28)
    assert torch.all(out.sum(dim=(1, 2)) == 1.0)  # the pixel never leaves the image
    pos = out.reshape(500, -1).argmax(-1)
    dy, dx = pos // 28 - 14, pos % 28 - 14
    assert dx.abs().max() == 2 and dy.abs().max() == 2
    assert len(set(zip(dx.tolist(), dy.tolist()))) == 25  # all 5x5 offsets occur
    assert torch.equal(M.jitter(img, max_shift=0), img)


def test_mlp_sizes_and_dropout():
    teacher = M.mlp([1200, 1200], 0.2, 0.5)
    assert M.num_parameters(teacher) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    assert sum(isinstance(m, torch.nn.Dropout) for m in teacher) == 3
    student = M.mlp([800, 800])
    assert M.num_parameters(student) == 1276810
    assert not any(isinstance(m, torch.nn.Dropout) for m in student)
    assert student(torch.zeros(3, 28, 28)).shape == (3, 10)


def test_max_norm_constrains_teacher_units_during_training():
    torch.manual_seed(0)
    x = torch.rand(64, 784) * 5
    y = torch.randint(0, 10, (64,))
    net = M.mlp([32, 32], 0.2, 0.5)
    train_classifier(net, x, y, TrainConfig(epochs=2, batch_size=16, lr=1.0, max_norm=0.5, progress=False),
                     augment=M.Jitter(2))
    norms = [m.weight.norm(dim=1).max() for m in net if isinstance(m, torch.nn.Linear)]
    assert max(norms) <= 0.5 + 1e-4
    unconstrained = M.mlp([32, 32])
    train_classifier(unconstrained, x, y, TrainConfig(epochs=2, batch_size=16, lr=1.0, progress=False))
    assert max(m.weight.norm(dim=1).max() for m in unconstrained if isinstance(m, torch.nn.Linear)) > 0.5


def test_bias_shift_search_finds_the_missing_bias():
    torch.manual_seed(0)
    n = 2000
    labels = torch.randint(0, 10, (n,))
    logits = torch.randn(n, 10)
    logits[torch.arange(n), labels] += 4.0
    logits[:, 3] -= 3.5  # a student that never saw 3s: its 3-logit is too low
    errs0 = int((logits.argmax(-1) != labels).sum())
    shift, errs = M.best_bias_shift(logits, labels, [3])
    assert errs < errs0 / 3 and 2.0 <= shift <= 5.0
    # the errors at the returned shift are the reported ones
    assert int(M.shifted_errors(logits, labels, [3], torch.tensor([shift]))[0]) == errs
    # lowering two classes together (the 7-and-8 experiment)
    over = logits.clone()
    over[:, 3] += 3.5
    over[:, [7, 8]] += 6.0
    s78, e78 = M.best_bias_shift(over, labels, [7, 8])
    assert s78 < -3.0 and e78 < int((over.argmax(-1) != labels).sum())


def test_bias_shift_takes_middle_of_optimal_plateau():
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 1])
    shifts = torch.arange(-5, 6, dtype=torch.float64)
    # shifting class 0 up by < 1 keeps both right: plateau -5..0 -> middle -3 (of -5,-4,...,0)
    shift, errs = M.best_bias_shift(logits, labels, [0], shifts)
    assert errs == 0 and shift in (-3.0, -2.0)


def test_split_train_valid():
    data = {"train_x": torch.arange(10).float()[:, None], "train_y": torch.arange(10)}
    s = M.split_train_valid(data, 3)
    assert s["train_y"].tolist() == list(range(7)) and s["valid_y"].tolist() == [7, 8, 9]
    with pytest.raises(ValueError):
        M.split_train_valid(data, 10)


def test_quick_run_end_to_end(corpora, tmp_path):
    from asr_kd.cli import main

    exp, res = tmp_path / "exp", tmp_path / "res"
    common = [
        "--quick", "--exp-dir", str(exp), "--results-dir", str(res), "--mnist-dir", str(corpora / "mnist"),
        "--no-progress", "--train-limit", "1000", "--valid-size", "500", "--test-limit", "1000",
        "--batch-size", "50", "--sweep-temperatures", "3",
    ]
    assert main(["mnist", "all", *common]) == 0
    results = json.loads((res / "results.json").read_text())
    by = {(r["system"], r["set"]): r for r in results["rows"]}
    for system in ("teacher", "baseline", "distilled-T20", "sweep-300-T3", "sweep-30-hard", "no3", "no3-bias",
                   "no3-bias-dev", "only78", "only78-bias", "only78-bias-dev"):
        assert (system, "test") in by, system
        r = by[(system, "test")]
        assert r["n"] == 1000 and 0 <= r["errors"] <= 1000 and r["wall_s"] >= 0 and "--quick" in r["command"]
    # the nets learn something even in the quick setting (chance is 900 errors)
    assert by[("baseline", "test")]["errors"] < 500
    assert by[("teacher", "test")]["errors"] < 700
    # the test-optimal shift is never worse on test than no shift
    assert by[("no3-bias", "test")]["errors"] <= by[("no3", "test")]["errors"]
    assert (res / "sweep.png").stat().st_size > 1000
    saved = json.loads((exp / "baseline" / "config.json").read_text())  # the settings, beside the model
    assert saved["train"]["batch_size"] == 50 and saved["train"]["desc"] == "baseline"
    assert saved["model"]["sizes"][0] == 784 and saved["model"]["sizes"][-1] == 10
    md = (res / "RESULTS.md").read_text()
    assert "Stage wall times: teacher" in md and "total" in md
    assert "| teacher | test |" in md and "Paper" in md and "asr-kd mnist all --exp-dir" in md and "--quick" in md
    # a second run skips every stage: outputs untouched
    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*.pt")}
    assert main(["mnist", "all", *common]) == 0
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*.pt")} == before


def test_python_step_matches_the_command(corpora, tmp_path):
    """A step called from Python with a config gives the numbers of the same command."""
    from asr_kd.cli import main
    from asr_kd.vision.mnist_steps import MnistConfig, baseline

    sizes = dict(train_limit=500, valid_size=200, test_limit=300, student_epochs=1)
    flags = [w for k, v in sizes.items() for w in ("--" + k.replace("_", "-"), str(v))]
    cli = tmp_path / "cli"
    assert main(["mnist", "baseline", "--quick", "--exp-dir", str(cli), "--results-dir", str(cli),
                 "--mnist-dir", str(corpora / "mnist"), "--no-progress", *flags]) == 0
    cfg = MnistConfig.quick(exp_dir=tmp_path / "py", results_dir=tmp_path / "py", mnist_dir=corpora / "mnist",
                            no_progress=True, **sizes)
    rows = baseline(cfg, command="python")
    by_cli = {r["set"]: r for r in json.loads((cli / "results.json").read_text())["rows"]}
    assert [(r["set"], r["errors"], r["n"]) for r in rows] == [
        (s, by_cli[s]["errors"], by_cli[s]["n"]) for s in ("dev", "test")]
    command = by_cli["test"]["command"]
    assert command.startswith("asr-kd mnist baseline --exp-dir") and "--student-epochs 1" in command
    assert json.loads((tmp_path / "py" / "results.json").read_text())["rows"][0]["command"] == "python"
