import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

import asr_kd  # noqa: F401  (first: decides MKL's CPU type before torch loads; asr_kd/cpu.py)
import torch

# Tests share a 2-core machine: keep torch to one thread so files don't fight each other.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("ASR_KD_CORPORA", REPO.parent / "shared" / "corpora"))


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The shared real corpora (../shared/corpora beside the checkout, or $ASR_KD_CORPORA)."""
    if not CORPORA.is_dir():
        pytest.skip(f"corpora not found at {CORPORA} (set ASR_KD_CORPORA)")
    return CORPORA


# ---------------------------------------------------------------- a tiny trained system, once a session
# recipes/librispeech/run.sh, every stage (0-12), on a tiny LibriSpeech-layout directory built from
# speechocean762 (16 kHz read English, its lexicon as --lexicon): a trained recipe directory (exp/tri1,
# exp/dnn_seed{1,2}/final.pt, exp/dnn_distilled_T2/final.pt, data/lang) in about two minutes.
# tests/test_recipe_librispeech.py checks the run; tests/test_recipe_transfer.py decodes other data with it.
TRAIN_SPEAKERS, TRAIN_UTTS = 4, 10   # train-clean-5: 40 utterances
TEST_SPEAKERS, TEST_UTTS = 2, 5      # dev-clean-2: 10 utterances (the recipe's test set by default)


def _kaldi_dir(d: Path):
    """{speaker: [(utt, audio path, text)]} of a speechocean762 Kaldi data dir, in file order."""
    text = dict(line.split(maxsplit=1) for line in (d / "text").read_text().splitlines())
    wav = dict(line.split(maxsplit=1) for line in (d / "wav.scp").read_text().splitlines())
    by_spk = {}
    for line in (d / "utt2spk").read_text().splitlines():
        utt, spk = line.split()
        by_spk.setdefault(spk, []).append((utt, d.parent / wav[utt].strip(), text[utt].strip()))
    return by_spk


def build_tiny_librispeech(corpora: Path, root: Path) -> Path:
    """``root/LibriSpeech`` with parts train-clean-5 and dev-clean-2, flac from speechocean762."""
    so = corpora / "speechocean762"
    if not (so / "train" / "wav.scp").is_file():
        pytest.skip(f"speechocean762 not found at {so}")
    out = root / "LibriSpeech"
    for part, split, speakers, utts in (("train-clean-5", "train", TRAIN_SPEAKERS, TRAIN_UTTS),
                                        ("dev-clean-2", "test", TEST_SPEAKERS, TEST_UTTS)):
        for k, (spk, items) in enumerate(list(_kaldi_dir(so / split).items())[:speakers]):
            spk_id, chapter = str(int(spk)), str(100 + k)   # LibriSpeech ids are numbers
            d = out / part / spk_id / chapter
            d.mkdir(parents=True)
            lines = []
            for i, (_, audio, text) in enumerate(items[:utts]):
                uid = f"{spk_id}-{chapter}-{i:04d}"
                samples, rate = sf.read(audio, dtype="int16")
                assert rate == 16000, audio
                sf.write(d / f"{uid}.flac", samples, rate, format="FLAC", subtype="PCM_16")
                lines.append(f"{uid} {text}\n")
            (d / f"{spk_id}-{chapter}.trans.txt").write_text("".join(lines))
    return out


def recipe_env(corpora: Path) -> dict:
    """The environment a recipe runs in under the tests: this Python's venv first on PATH."""
    env = dict(os.environ, CORPORA=str(corpora), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="session")
def tiny_librispeech_corpus(corpora, tmp_path_factory):
    return build_tiny_librispeech(corpora, tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def tiny_trained_recipe(corpora, tiny_librispeech_corpus, tmp_path_factory):
    """(recipes/librispeech in a scratch copy of the repository, after every stage; the run's process)."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "local", root / "local")
    shutil.copytree(REPO / "recipes" / "librispeech", root / "recipes" / "librispeech",
                    ignore=shutil.ignore_patterns("data", "exp", "download", "RESULTS.md", "results.json"))
    args = ["--corpus-dir", str(tiny_librispeech_corpus),
            "--lexicon", str(corpora / "speechocean762" / "resource" / "lexicon.txt"),
            "--mono-gauss", "100", "--tri-leaves", "60", "--tri-gauss", "300",
            "--num-teachers", "2", "--epochs", "2", "--preset", "tiny", "--temperatures", "2",
            "--subset-fraction", "0.25", "--subset-epochs", "2", "--nnet-opts", "--dtype fp32",
            "--lm-weights", "8 12"]
    proc = subprocess.run(["bash", str(root / "recipes" / "librispeech" / "run.sh"), *args],
                          env=recipe_env(corpora), capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return root / "recipes" / "librispeech", proc
