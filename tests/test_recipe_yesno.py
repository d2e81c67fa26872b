"""The yesno recipe end to end, from the corpus to RESULTS.md, in a scratch copy of the recipe.

Runs every stage (manifests, fbank, lang, LM, monophone and triphone GMMs, alignment, decoding,
two DNN teachers, a distilled student, the small-data experiment) with tiny settings, then checks
what the stages left behind: senone labels on every training frame, Kaldi-style WER files, a
decodable DNN, and result rows written by code. Takes a few minutes.
"""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lhotse import load_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe(corpora, tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "local", root / "local")
    shutil.copytree(REPO / "recipes" / "yesno", root / "recipes" / "yesno",
                    ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md", "results.json"))
    env = dict(os.environ, CORPORA=str(corpora), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)
    run = root / "recipes" / "yesno" / "run.sh"
    args = ["--num-teachers", "2", "--epochs", "2", "--preset", "tiny", "--temperatures", "2",
            "--subset-fraction", "0.2", "--nnet-opts", "--dtype fp32"]
    proc = subprocess.run(["bash", str(run), *args], env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root / "recipes" / "yesno", proc, env, args


def test_every_training_frame_has_a_senone(recipe, monkeypatch):
    d, *_ = recipe
    monkeypatch.chdir(d)  # manifests point at storage relative to the recipe directory, as in lhotse
    cuts = load_manifest(d / "data" / "senones" / "yesno_cuts_train.jsonl.gz")
    fbank = load_manifest(d / "data" / "fbank" / "yesno_cuts_train.jsonl.gz")
    assert len(cuts) == len(fbank)
    num_pdfs = json.loads((d / "exp" / "tri1" / "priors.json").read_text())["num_pdfs"]
    for cut in cuts:
        labels = cut.load_custom("senone")
        assert labels.shape == (cut.num_frames,) and labels.min() >= 0 and labels.max() < num_pdfs


def test_gmm_decoding_is_scored_the_kaldi_way(recipe):
    d, *_ = recipe
    best = json.loads((d / "exp" / "tri1" / "decode_test" / "decode.json").read_text())
    line = (d / "exp" / "tri1" / "decode_test" / f"wer_{best['best']}").read_text().splitlines()[0]
    assert line.startswith("%WER ") and "/ 240," in line  # 30 test files x 8 words
    assert best["utterances"] == 30 and best["empty_lattices"] == 0
    assert best["wer"] < 5.0  # yes/no is easy: Kaldi and icefall get 0.00% and 0.42%


def test_results_rows_come_from_the_stages(recipe):
    d, *_ = recipe
    rows = json.loads((d / "results.json").read_text())["rows"]
    systems = {(r["system"], r["set"]) for r in rows}
    for key in [("gmm-mono", "test"), ("gmm-tri", "test"), ("dnn-baseline", "test"), ("dnn-ensemble-2", "test"),
                ("dnn-distilled-T2", "test"), ("dnn-3pct-hard", "train"), ("dnn-3pct-soft", "test")]:
        assert key in systems, key
    assert all(r["command"].startswith("cd recipes/yesno && ./run.sh --num-teachers 2") for r in rows)
    t1 = [r for r in rows if r["system"] == "dnn-distilled-T2"][0]
    assert 0 <= t1["frame_accuracy"] <= 100 and t1["wer"] is not None and "gain_recovered_pct" in t1
    assert "| dnn-baseline | test |" in (d / "RESULTS.md").read_text()
    cost = {r["system"]: r for r in rows if r["table"].startswith("What distillation buys")}  # stage 13
    assert set(cost) == {"dnn-baseline", "dnn-ensemble-2", "dnn-distilled-T2"}
    assert cost["dnn-ensemble-2"]["parameters"] == 2 * cost["dnn-baseline"]["parameters"]
    assert cost["dnn-distilled-T2"]["parameters"] == cost["dnn-baseline"]["parameters"]
    assert all(r["total_s_per_h"] > 0 and "1 job(s) x 1 thread(s)" in r["speed_on"] for r in cost.values())


def test_rerun_is_a_no_op(recipe):
    d, proc, env, args = recipe
    before = (d / "exp" / "dnn_seed1" / "final.pt").stat().st_mtime_ns
    again = subprocess.run(["bash", str(d / "run.sh"), *args, "--stage", "9", "--stop-stage", "9"], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    for seed in (1, 2):  # each teacher is a job of its own, with its own log
        assert "skipping training" in (d / "exp" / "log" / f"dnn_seed{seed}.log").read_text()
    assert (d / "exp" / "dnn_seed1" / "final.pt").stat().st_mtime_ns == before


def test_distilled_model_decodes_audio_files(recipe, corpora):
    d, proc, env, _ = recipe
    wav = sorted((corpora / "yesno" / "waves_yesno").glob("*.wav"))[1]  # a test file
    out = subprocess.run(
        [sys.executable, "-m", "asr_kd.cli", "decode", "--model", "exp/dnn_distilled_T2/final.pt",
         "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst", "--graph-dir", "exp/tri1/graph_3gram",
         "--audio", str(wav)],
        cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    path, text = out.stdout.strip().split("\t")
    assert path == str(wav) and set(text.split()) <= {"YES", "NO"} and len(text.split()) >= 6
    missing = subprocess.run([sys.executable, "-m", "asr_kd.cli", "decode", "--model", "exp/dnn_distilled_T2/final.pt",
                              "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst", "--audio", "absent.wav"],
                             cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "absent.wav" in missing.stderr


def test_decode_a_fixed_subset_of_a_set(recipe):
    d, proc, env, _ = recipe
    out = subprocess.run(
        [sys.executable, "-m", "asr_kd.cli", "decode", "--model", "exp/tri1", "--lang-dir", "data/lang",
         "--lm", "data/lm/G_3gram.fst", "--graph-dir", "exp/tri1/graph_3gram", "--cuts",
         "data/fbank/yesno_cuts_test.jsonl.gz", "--out-dir", "exp/tri1/decode_test_every3", "--subset-every", "3"],
        cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((d / "exp" / "tri1" / "decode_test_every3" / "decode.json").read_text())
    assert summary["utterances"] == 10 and summary["subset_every"] == 3  # every 3rd of 30, by id
    assert "/ 80," in (d / "exp" / "tri1" / "decode_test_every3" / "wer_10").read_text()


def test_decode_is_redone_when_its_model_is_newer_or_it_was_cut_short(recipe):
    d, proc, env, _ = recipe
    cmd = [sys.executable, "-m", "asr_kd.cli", "decode", "--model", "exp/tri1", "--lang-dir", "data/lang",
           "--lm", "data/lm/G_3gram.fst", "--cuts", "data/fbank/yesno_cuts_test.jsonl.gz",
           "--out-dir", "exp/tri1/decode_test_redo", "--subset-every", "5", "--lm-weights", "10"]
    run = lambda: subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    summary = d / "exp" / "tri1" / "decode_test_redo" / "decode.json"
    assert run().returncode == 0 and summary.is_file()
    assert "skipping" in run().stderr
    model = d / "exp" / "tri1" / "final.mdl"
    stat = model.stat()
    try:
        os.utime(model, (stat.st_atime, summary.stat().st_mtime + 10))  # a retrained model
        out = run()
        assert out.returncode == 0 and "skipping" not in out.stderr
    finally:
        os.utime(model, (stat.st_atime, stat.st_mtime))
    summary.unlink()  # what a decode killed after its hyps leaves behind: no completion mark
    out = run()
    assert out.returncode == 0 and "skipping" not in out.stderr and summary.is_file()


def test_priors_from_the_models_posterior_decode(recipe):
    """asr-kd nnet priors: the model's mean posterior over train as senone priors (a distribution over
    every senone); asr-kd decode --priors divides by them instead of the model's own, and says so."""
    d, proc, env, _ = recipe
    run = lambda *a: subprocess.run([sys.executable, "-m", "asr_kd.cli", *a], cwd=d, env=env, capture_output=True,  # noqa: E731
                                    text=True, timeout=300)
    out = run("nnet", "priors", "--models", "exp/dnn_seed1/final.pt", "--cuts", "data/senones/yesno_cuts_train.jsonl.gz",
              "--out", "exp/dnn_seed1/posterior_priors.json")
    assert out.returncode == 0, out.stderr[-3000:]
    priors = json.loads((d / "exp" / "dnn_seed1" / "posterior_priors.json").read_text())
    gmm = json.loads((d / "exp" / "tri1" / "priors.json").read_text())
    assert len(priors["log_priors"]) == gmm["num_pdfs"] and priors["frames"] > 0
    assert sum(math.exp(v) for v in priors["log_priors"]) == pytest.approx(1.0, abs=1e-6)
    # from frame shards, reading only the utterances it averages over: the same priors
    out = run("nnet", "priors", "--models", "exp/dnn_seed1/final.pt", "--cuts", "data/senones/yesno_cuts_train.jsonl.gz",
              "--stream-frames", "exp/priors_shards", "--max-utterances", "7", "--out", "exp/priors_streamed.json")
    assert out.returncode == 0, out.stderr[-3000:]
    out = run("nnet", "priors", "--models", "exp/dnn_seed1/final.pt", "--cuts", "data/senones/yesno_cuts_train.jsonl.gz",
              "--max-utterances", "7", "--out", "exp/priors_memory.json")
    assert out.returncode == 0, out.stderr[-3000:]
    streamed, memory = (json.loads((d / "exp" / f"priors_{k}.json").read_text()) for k in ("streamed", "memory"))
    assert streamed["utterances"] == memory["utterances"] == 7 and streamed["frames"] == memory["frames"]
    assert streamed["log_priors"] == pytest.approx(memory["log_priors"], abs=1e-4)
    out = run("decode", "--model", "exp/dnn_seed1/final.pt", "--priors", "exp/dnn_seed1/posterior_priors.json",
              "--lang-dir", "data/lang", "--lm", "data/lm/G_3gram.fst", "--cuts", "data/fbank/yesno_cuts_test.jsonl.gz",
              "--out-dir", "exp/dnn_seed1/decode_test_posterior_priors", "--lm-weights", "10")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((d / "exp" / "dnn_seed1" / "decode_test_posterior_priors" / "decode.json").read_text())
    assert summary["priors"] == "exp/dnn_seed1/posterior_priors.json" and summary["wer"] < 50
    gmm_dir = run("decode", "--model", "exp/tri1", "--priors", "exp/dnn_seed1/posterior_priors.json", "--lang-dir",
                  "data/lang", "--lm", "data/lm/G_3gram.fst", "--cuts", "data/fbank/yesno_cuts_test.jsonl.gz",
                  "--out-dir", "exp/tri1/x")
    assert gmm_dir.returncode != 0 and "--priors is for DNNs" in gmm_dir.stderr


def test_recipe_decodes_with_posterior_priors_when_asked(recipe):
    """--dnn-priors posterior: stage 10 computes each system's own mean-posterior priors and decodes dev
    and test with them (the earlier decodings, made with the model's priors, are redone, not kept)."""
    d, proc, env, args = recipe
    out = subprocess.run(["bash", str(d / "run.sh"), *args, "--dnn-priors", "posterior", "--stage", "10",
                          "--stop-stage", "10"], env=env, cwd=d, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    for system in ("dnn_seed1", "dnn_ensemble"):
        priors = f"exp/{system}/posterior_priors.json"
        assert (d / priors).is_file()
        for s in ("dev", "test"):
            assert json.loads((d / "exp" / system / f"decode_{s}" / "decode.json").read_text())["priors"] == priors
