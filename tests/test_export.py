"""``asr-kd export`` and ``asr-kd decode --model-dir`` (issue 15, part 4): a model directory that travels.

A scratch copy of the yesno recipe is run to its GMMs and two tiny DNN teachers (stages 0-7 and 9,
about a minute). Each model (the triphone GMM, one DNN, the two-DNN ensemble) is exported,
copied to another directory, the first copy removed and the recipe's own models, lang and LM
hidden; the copy must decode the test cuts (and audio files, from another working directory) to
the same words as the original model in the recipe. The TorchScript network must give the
original's posteriors, and a damaged export must fail with one line naming the file.
"""
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_kd.cli import main
from asr_kd.nnet.model import Dnn, DnnConfig, Ensemble

k2 = pytest.importorskip("k2")

REPO = Path(__file__).resolve().parents[1]
TEST_CUTS = "data/fbank/yesno_cuts_test.jsonl.gz"


@pytest.fixture(scope="module")
def recipe(corpora, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "local", root / "local")
    shutil.copytree(REPO / "recipes" / "yesno", root / "recipes" / "yesno",
                    ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md", "results.json"))
    env = dict(os.environ, CORPORA=str(corpora), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)
    run = root / "recipes" / "yesno" / "run.sh"
    args = ["--num-teachers", "2", "--epochs", "2", "--preset", "tiny", "--nnet-opts", "--dtype fp32"]
    for stages in (["--stop-stage", "7"], ["--stage", "9", "--stop-stage", "9"]):  # no GMM decoding (stage 8)
        proc = subprocess.run(["bash", str(run), *args, *stages], env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root / "recipes" / "yesno"


def asr_kd(*argv) -> int:
    return main([str(a) for a in argv])


def hyps(decode_dir: Path) -> dict:
    lines = (decode_dir / "hyp_10.txt").read_text().splitlines()
    return dict((line.split(" ", 1) + [""])[:2] for line in lines)


@contextmanager
def hidden(d: Path, *names):
    """The recipe's models, lang and LM out of reach (renamed) while an export decodes."""
    for n in names:
        (d / n).rename(d / f"{n}.hidden")
    try:
        yield
    finally:
        for n in names:
            (d / f"{n}.hidden").rename(d / n)


@pytest.mark.parametrize("system", ["gmm", "dnn", "ensemble"])
def test_moved_export_decodes_the_same_words(recipe, tmp_path, monkeypatch, system):
    d = recipe
    monkeypatch.chdir(d)  # the cuts' feature storage is relative to the recipe directory
    model = {"gmm": ["exp/tri1"], "dnn": ["exp/dnn_seed1/final.pt"],
             "ensemble": ["exp/dnn_seed1/final.pt", "exp/dnn_seed2/final.pt"]}[system]
    common = ["--cuts", TEST_CUTS, "--lm-weights", "10", "--force"]
    assert asr_kd("decode", "--model", *model, "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst",
                  "--out-dir", tmp_path / "original", *common) == 0
    if system == "gmm":  # a redo at other LM weights leaves none of the first decode's scoring files
        assert asr_kd("decode", "--model", *model, "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst",
                      "--out-dir", tmp_path / "original", "--cuts", TEST_CUTS, "--lm-weights", "8", "--force") == 0
        names = {p.name for p in (tmp_path / "original").iterdir()}
        assert "hyp_8.txt" in names and not {n for n in names if n.startswith(("hyp_10", "wer_10"))}
        assert asr_kd("decode", "--model", *model, "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst",
                      "--out-dir", tmp_path / "original", *common) == 0
    assert asr_kd("export", "--model", *model, "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst",
                  "--out-dir", tmp_path / "export", "--archive") == 0

    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["kind"] == {"gmm": "gmm", "dnn": "dnn", "ensemble": "dnn-ensemble"}[system]
    assert len(manifest["acoustic_model"]) == len(model) and manifest["graph"] == "graph"
    for name in ("tree.json", "transitions.json", "phones.json", "features.json", "priors.json",
                 "lang/words.txt", "lang/L_disambig.fst", "lm/G_3gram.fst", "graph/HCLG.pt"):
        assert name in manifest["files"], name
    assert manifest["asr_kd"]["version"] and manifest["command"].startswith("asr-kd export --model")
    features = json.loads((tmp_path / "export" / "features.json").read_text())
    assert features["sampling_rate"] == 8000 and features["cmvn"]["type"] == "per-speaker"
    assert "unseen_speakers" in features["cmvn"] and ("mfcc" in features) == (system == "gmm")
    assert (system != "gmm") == ("dnn.torchscript.pt" in manifest["files"])
    # The graph the original decode cached beside the GMM was up to date: copied, not rebuilt.
    assert (tmp_path / "export" / "graph" / "HCLG.pt").read_bytes() == (d / "exp/tri1/graph_3gram/HCLG.pt").read_bytes()

    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(tmp_path / "export", moved)
    shutil.rmtree(tmp_path / "export")
    with hidden(d, "exp", "data/lang", "data/lm"):
        assert asr_kd("decode", "--model-dir", moved, "--out-dir", tmp_path / "moved", *common) == 0
        assert asr_kd("decode", "--model-dir", tmp_path / "export.tar.gz", "--out-dir", tmp_path / "archive",
                      *common) == 0
    original = hyps(tmp_path / "original")
    assert len(original) == 30 and sum(len(h.split()) for h in original.values()) > 100
    assert hyps(tmp_path / "moved") == original
    assert hyps(tmp_path / "archive") == original
    summary = json.loads((tmp_path / "moved" / "decode.json").read_text())
    assert summary["model_dir"] == str(moved) and summary["graph_dir"] == str(moved / "graph")
    assert all(str(d) not in m for m in summary["model"])
    assert (tmp_path / "moved" / "wer_10").read_text() == (tmp_path / "original" / "wer_10").read_text()


def test_moved_export_decodes_audio_from_another_directory(recipe, corpora, tmp_path):
    d = recipe
    wavs = [str(p) for p in sorted((corpora / "yesno" / "waves_yesno").glob("*.wav"))[1:6:2]]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    model = ["exp/dnn_seed1/final.pt", "exp/dnn_seed2/final.pt"]

    def decode(*argv, cwd):
        out = subprocess.run([sys.executable, "-m", "asr_kd.cli", "decode", *map(str, argv), "--audio", *wavs],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    original = decode("--model", *model, "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst", cwd=d)
    assert subprocess.run([sys.executable, "-m", "asr_kd.cli", "export", "--model", *model, "--lang-dir", "data/lang",
                           "--lm", "data/lm/G_3gram.fst", "--out-dir", tmp_path / "ens"], cwd=d, env=env,
                          capture_output=True, timeout=300).returncode == 0
    shutil.copytree(tmp_path / "ens", tmp_path / "other" / "ens")
    shutil.rmtree(tmp_path / "ens")
    with hidden(d, "exp", "data"):
        moved = decode("--model-dir", "ens", cwd=tmp_path / "other")
    assert moved == original and len(original.splitlines()) == 3
    # A lang and LM given on the command line replace the export's; its own graph is left as it was.
    graph = tmp_path / "other" / "ens" / "graph" / "HCLG.pt"
    before = graph.stat().st_mtime_ns
    own = decode("--model-dir", tmp_path / "other" / "ens", "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst",
                 cwd=d)
    assert own == original and graph.stat().st_mtime_ns == before
    assert (tmp_path / "other" / "ens" / "graph_3gram" / "HCLG.pt").is_file()


def test_torchscript_gives_the_posteriors_of_the_exported_dnns(recipe, tmp_path):
    from asr_kd.decode.acoustic import DnnScorer
    from asr_kd.nnet.model import load_model

    d = recipe
    models = [d / "exp/dnn_seed1/final.pt", d / "exp/dnn_seed2/final.pt"]
    assert asr_kd("export", "--model", *models, "--out-dir", tmp_path / "ens") == 0
    script = tmp_path / "ens" / "dnn.torchscript.pt"
    feats = torch.randn(57, 40) * 3 + 1
    torch.save(feats, tmp_path / "feats.pt")
    # Loaded and run in a fresh interpreter that imports nothing of asr-kd.
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); x = torch.load(sys.argv[2]); "
            "out = {'post': m(x), 'loglikes': m.loglikes(x), 'short': m(x[:2]), 'left': m.left_context}; "
            "torch.save(out, sys.argv[3]); "
            "assert not [k for k in sys.modules if k.startswith('asr_kd')]")
    proc = subprocess.run([sys.executable, "-c", code, script, tmp_path / "feats.pt", tmp_path / "out.pt"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt")

    originals = [load_model(p) for p in models]
    expected = reference_log_posteriors(originals, feats)
    assert got["post"].shape == (57, originals[0].cfg.num_senones) and got["left"] == originals[0].cfg.left_context
    assert torch.allclose(got["post"], expected, atol=1e-5)
    assert torch.allclose(got["short"], reference_log_posteriors(originals, feats[:2]), atol=1e-5)
    # loglikes are what decoding scores: the original scorer's, given the same CMVN-normalized input.
    scorer = DnnScorer(models)
    scorer.dtype = "fp32"  # as the TorchScript network computes
    items = [("u", "spk", feats.numpy())]
    cmvn = scorer._speaker_cmvn(items)
    normalized = torch.jit.load(str(script)).loglikes(torch.from_numpy(cmvn(feats.numpy(), "spk")))
    assert torch.allclose(normalized, scorer.loglikes(items)["u"], atol=1e-4)
    extra = {"asr_kd.json": ""}
    torch.jit.load(str(script), _extra_files=extra)
    assert "CMVN-normalized" in json.loads(extra["asr_kd.json"])["input"]


def test_export_carries_the_priors_it_was_given(recipe, tmp_path):
    """asr-kd export --priors: the exported DNN divides by those priors (decoding and TorchScript alike)."""
    from asr_kd.decode.acoustic import DnnScorer
    from asr_kd.utils import write_json

    model = recipe / "exp/dnn_seed1/final.pt"
    own = DnnScorer([model]).log_priors
    priors = torch.log_softmax(torch.randn(len(own)), 0)
    write_json(tmp_path / "p.json", {"log_priors": priors.tolist()})
    assert asr_kd("export", "--model", model, "--out-dir", tmp_path / "x", "--priors", tmp_path / "p.json") == 0
    assert torch.allclose(DnnScorer([tmp_path / "x" / "dnn_1.pt"]).log_priors, priors)
    assert not torch.allclose(priors, own)
    assert json.loads((tmp_path / "x" / "priors.json").read_text())["from"] == str(tmp_path / "p.json")
    assert torch.allclose(torch.jit.load(str(tmp_path / "x" / "dnn.torchscript.pt")).log_priors, priors)


def reference_log_posteriors(models, feats):
    """The original networks on spliced frames (FrameSet.splice), their posteriors averaged."""
    from asr_kd.nnet.data import FrameSet

    t = len(feats)
    frames = FrameSet(feats, torch.full((t,), -1), torch.zeros(t, dtype=torch.long), torch.tensor([0]),
                      torch.tensor([t]), ["u"], ["spk"])
    cfg = models[0].cfg
    x = frames.splice(torch.arange(t), cfg.left_context, cfg.right_context)
    with torch.no_grad():
        logits = Ensemble(models)(x)
    return torch.logsumexp(torch.log_softmax(logits, -1), 0) - np.log(len(models))


def test_torchscript_of_random_networks():
    from asr_kd.export import torchscript_model

    torch.manual_seed(0)
    models = [Dnn(DnnConfig.from_preset("tiny", num_senones=11)).eval() for _ in range(3)]
    priors = torch.log_softmax(torch.randn(11), 0)
    script = torchscript_model(models, priors)
    for t in (1, 4, 50):
        x = torch.randn(t, 40)
        expected = reference_log_posteriors(models, x)
        assert torch.allclose(script(x), expected, atol=1e-5)
        assert torch.allclose(script.loglikes(x), expected - priors, atol=1e-5)


def test_broken_or_incomplete_export_is_one_line_naming_the_file(recipe, tmp_path, capsys):
    d = recipe
    assert asr_kd("export", "--model", d / "exp/dnn_seed1/final.pt", "--out-dir", tmp_path / "dnn") == 0
    assert asr_kd("export", "--model", d / "exp/dnn_seed1/final.pt", "--out-dir", tmp_path / "dnn") == 1
    assert "--force" in capsys.readouterr().err
    wav = tmp_path / "x.wav"

    def error(model_dir, *extra):
        capsys.readouterr()
        assert asr_kd("decode", "--model-dir", model_dir, *extra, "--audio", wav) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("asr-kd decode: error: "), err
        return err[0]

    # An export without a lang says so (no graph can be built without one).
    assert "--lang-dir" in error(tmp_path / "dnn")
    for name, damage in [("tree.json", Path.unlink), ("dnn_1.pt", lambda p: p.write_bytes(p.read_bytes()[:-10])),
                         ("transitions.json", lambda p: p.write_text(p.read_text().replace("0.", "1.", 1))),
                         ("manifest.json", Path.unlink)]:
        broken = tmp_path / f"broken_{name}"
        shutil.copytree(tmp_path / "dnn", broken)
        damage(broken / name)
        message = error(broken, "--lang-dir", d / "data/lang", "--lm", d / "data/lm/G_3gram.fst")
        assert name in message, message
    assert "missing" in error(tmp_path / "broken_tree.json", "--lang-dir", d / "data/lang", "--lm", "G.fst")
    assert "checksum" in error(tmp_path / "broken_dnn_1.pt", "--lang-dir", d / "data/lang", "--lm", "G.fst")
    assert "not a directory written by asr-kd export" in error(tmp_path / "broken_manifest.json")
    assert "no such export" in error(tmp_path / "absent")
