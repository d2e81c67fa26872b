"""LibriSpeech on a tiny directory in LibriSpeech's layout.

No LibriSpeech is in ../shared/corpora, so a fixture builds one from speechocean762 (16 kHz read
English): ``LibriSpeech/{train-clean-5,dev-clean-2}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``
with ``<spk>-<chapter>.trans.txt``, the layout lhotse's ``prepare_librispeech`` reads, and
speechocean762's lexicon stands in for ``librispeech-lexicon.txt``.
"""
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import load_manifest

from asr_kd.data.corpora import prepare_corpus

REPO = Path(__file__).resolve().parents[1]
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


@pytest.fixture(scope="module")
def tiny_librispeech(corpora, tmp_path_factory):
    return build_tiny_librispeech(corpora, tmp_path_factory.mktemp("corpus"))


def test_parts_map_to_the_recipe_splits(tiny_librispeech, tmp_path):
    """train=/dev=/test= name the splits; without dev=, dev is carved from train."""
    carved = prepare_corpus("librispeech", tiny_librispeech, tmp_path / "a",
                            parts=["train=train-clean-5", "test=dev-clean-2"], dev_fraction=0.1)
    assert {s: r["utterances"] for s, r in carved.items()} == {"train": 36, "dev": 4, "test": 10}
    assert carved["train"]["parts"] == ["train-clean-5"] and "carved" in carved["dev"]
    train = load_manifest(tmp_path / "a" / "librispeech_cuts_train.jsonl.gz")
    dev = load_manifest(tmp_path / "a" / "librispeech_cuts_dev.jsonl.gz")
    assert not set(train.ids) & set(dev.ids) and len(train) + len(dev) == 40
    assert {c.sampling_rate for c in train} == {16000}
    # a part given as dev, and two parts concatenated into one split
    given = prepare_corpus("librispeech", tiny_librispeech, tmp_path / "b",
                           parts=["train=train-clean-5,dev-clean-2", "dev=dev-clean-2"])
    assert {s: r["utterances"] for s, r in given.items()} == {"train": 50, "dev": 10}
    with pytest.raises(RuntimeError, match="test-clean"):
        prepare_corpus("librispeech", tiny_librispeech, tmp_path / "c", parts=["train=train-clean-5", "test=test-clean"])
