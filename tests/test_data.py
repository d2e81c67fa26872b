"""Corpus preparation, bad input, atomic writes and features, on the real shared corpora."""
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, load_manifest

from asr_kd.data.corpora import build_manifests, list_fsdd, list_speechocean762, prepare_corpus, Utterance
from asr_kd.data.features import Cmvn, compute_cmvn_stats, compute_fbank, fbank_config, mel_range
from asr_kd.data.text import normalize_text
from asr_kd.utils import atomic_path


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def test_normalize_text():
    assert normalize_text("Hello, world!") == "HELLO WORLD"
    assert normalize_text("  don't   stop -- 'now' ") == "DON'T STOP NOW"
    assert normalize_text("well-known") == "WELL-KNOWN"
    assert normalize_text("...") == ""


def test_prepare_yesno(corpora, tmp_path):
    reports = prepare_corpus("yesno", corpora / "yesno" / "waves_yesno", tmp_path, dev_fraction=0.1)
    assert reports["train"]["utterances"] == 27 and reports["dev"]["utterances"] == 3
    assert reports["test"]["utterances"] == 30
    cuts = load_manifest(tmp_path / "yesno_cuts_train.jsonl.gz")
    assert len(cuts) == 27
    assert not set(cuts.ids) & set(load_manifest(tmp_path / "yesno_cuts_dev.jsonl.gz").ids)
    words = {w for c in cuts for w in c.supervisions[0].text.split()}
    assert words == {"YES", "NO"}
    assert all(c.sampling_rate == 8000 and len(c.supervisions[0].text.split()) == 8 for c in cuts)
    train_ids = set(cuts.ids)
    test_ids = set(load_manifest(tmp_path / "yesno_cuts_test.jsonl.gz").ids)
    assert not train_ids & test_ids


def test_rerun_skips_unless_forced(corpora, tmp_path):
    prepare_corpus("yesno", corpora / "yesno", tmp_path)
    path = tmp_path / "yesno_cuts_train.jsonl.gz"
    mtime = path.stat().st_mtime_ns
    prepare_corpus("yesno", corpora / "yesno", tmp_path)
    assert path.stat().st_mtime_ns == mtime
    prepare_corpus("yesno", corpora / "yesno", tmp_path, force=True)
    assert path.stat().st_mtime_ns != mtime


def test_fsdd_holds_out_one_speaker(corpora):
    splits = list_fsdd(corpora / "fsdd", test_speaker="jackson")
    assert {u.speaker for u in splits["test"]} == {"jackson"}
    assert "jackson" not in {u.speaker for u in splits["train"]}
    assert len(splits["test"]) == 500 and len(splits["train"]) == 2500
    assert {u.text for u in splits["test"]} == {
        "ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE"}
    with pytest.raises(ValueError, match="nobody"):
        list_fsdd(corpora / "fsdd", test_speaker="nobody")


def test_speechocean762_listing(corpora):
    splits = list_speechocean762(corpora / "speechocean762")
    assert len(splits["train"]) == 2500 and len(splits["test"]) == 2500
    train_spk = {u.speaker for u in splits["train"]}
    test_spk = {u.speaker for u in splits["test"]}
    assert len(train_spk) == 125 and len(test_spk) == 125 and not train_spk & test_spk
    assert all(u.audio.suffix == ".opus" for u in splits["train"][:10])
    # A small subset through the audio checks: opus is readable at 16 kHz.
    recs, sups, report = build_manifests(splits["test"][:5], 16000)
    assert report.utterances == 5 and all(r.sampling_rate == 16000 for r in recs)


def test_dev_split_by_speaker_when_there_are_many(corpora):
    from asr_kd.data.corpora import carve_dev

    train = list_speechocean762(corpora / "speechocean762")["train"]
    rest, dev = carve_dev(train, 0.05, seed=0)
    assert len({u.speaker for u in dev}) == 6 and not {u.speaker for u in dev} & {u.speaker for u in rest}
    assert len(rest) + len(dev) == 2500
    assert carve_dev(train, 0.05, seed=0)[1] == dev  # deterministic
    few = list_fsdd(corpora / "fsdd")["train"][:40]  # few speakers: every 20th utterance
    rest, dev = carve_dev(few, 0.05)
    assert len(dev) == 2 and len(rest) == 38


def test_missing_corpus_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        prepare_corpus("yesno", tmp_path / "nope", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing wav.scp"):
        (tmp_path / "so" / "train").mkdir(parents=True)
        (tmp_path / "so" / "train" / "text").write_text("a HELLO\n")
        prepare_corpus("speechocean762", tmp_path / "so", tmp_path / "out")


def test_bad_input_is_named_counted_and_skipped(corpora, tmp_path, caplog):
    src = corpora / "fsdd" / "recordings"
    good = [shutil.copy(src / f"{d}_george_0.flac", tmp_path / f"{d}_george_0.flac") for d in range(3)]
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00garbage" * 10)
    wrong_rate = write_wav(tmp_path / "rate.wav", 0.1 * np.sin(np.arange(16000) / 5), 16000)
    utts = [Utterance(Path(p).stem, Path(p), "zero", "george") for p in good]
    utts += [
        Utterance("corrupt", corrupt, "one", "george"),
        Utterance("empty_text", Path(good[0]), "  ,, ", "george"),
        Utterance("missing", tmp_path / "missing.wav", "two", "george"),
        Utterance("rate", wrong_rate, "three", "george"),
    ]
    with caplog.at_level(logging.WARNING):
        recs, sups, report = build_manifests(utts, 8000)
    assert report.utterances == 4  # 3 good + the resampled one
    assert report.skipped == {"unreadable audio": 1, "empty transcript": 1, "missing audio file": 1}
    assert report.resampled == 1
    assert "corrupt.wav" in caplog.text and "missing.wav" in caplog.text and "rate.wav" in caplog.text
    assert recs["rate"].sampling_rate == 8000
    assert recs["rate"].load_audio().shape[1] == 8000  # 1 s at the corpus rate


def test_atomic_path_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "cuts.jsonl.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".jsonl.gz") and tmp != target
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["cuts.jsonl.gz"]


@pytest.fixture(scope="module")
def fsdd_small(corpora, tmp_path_factory):
    """Features for 12 FSDD utterances (2 speakers), plus a too-short one."""
    root = tmp_path_factory.mktemp("fsdd")
    rec = root / "recordings"
    rec.mkdir()
    for spk in ("george", "theo"):
        for d in range(6):
            shutil.copy(corpora / "fsdd" / "recordings" / f"{d}_{spk}_1.flac", rec)
    write_wav(rec / "7_george_99.wav", np.zeros(30), 8000)  # 3.75 ms: no whole frame
    prepare_corpus("fsdd", root, root / "manifests", dev_fraction=0)
    cuts = load_manifest(root / "manifests" / "fsdd_cuts_train.jsonl.gz")
    out = compute_fbank(cuts, root / "fbank" / "fsdd_cuts_train.jsonl.gz", root / "fbank" / "feats", num_jobs=2, chunk_size=4)
    return root, cuts, out


def test_fbank_shape_dtype_and_short_audio(fsdd_small):
    root, cuts, out = fsdd_small
    assert len(cuts) == 7 and len(out) == 6  # the 3.75 ms cut is skipped...
    import json
    report = json.loads((root / "fbank" / "fsdd_fbank_train.json").read_text())
    assert report["skipped"] == 1 and "7_george_99" in report["skipped_items"][0][0]  # ...named and counted
    assert "too short" in report["skipped_items"][0][1]
    for cut in out:
        feats = cut.load_features()
        assert feats.dtype == np.float32 and feats.shape == (round(cut.duration / 0.01), 40)
        assert np.isfinite(feats).all()
    assert not list((root / "fbank" / "feats").glob(".*tmp*")), "temporary archives left behind"


def test_fbank_matches_kaldi_native_fbank(fsdd_small):
    import kaldi_native_fbank as knf

    _, _, out = fsdd_small
    cut = out[0]
    cfg = fbank_config(8000)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.frame_opts.snip_edges = False
    opts.frame_opts.samp_freq = 8000
    opts.mel_opts.num_bins = 40
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(8000, cut.load_audio()[0].tolist())
    fb.input_finished()
    ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
    ours = cut.load_features()  # lilcom-compressed storage
    assert ref.shape == ours.shape
    assert np.abs(ref - ours).mean() < 0.01 and np.abs(ref - ours).max() < 0.1
    assert mel_range(8000) == (20.0, 3800.0) and mel_range(16000) == (20.0, 7600.0)


def test_cmvn_per_speaker(fsdd_small):
    _, _, out = fsdd_small
    stats = compute_cmvn_stats(out)
    assert set(stats["speakers"]) == {"george"}  # theo is the test speaker
    assert stats["global"]["count"] == sum(c.num_frames for c in out)
    cmvn = Cmvn(stats, mode="speaker")
    normed = np.concatenate([cmvn.apply_to_cut(c) for c in out])
    assert np.allclose(normed.mean(0), 0, atol=1e-3) and np.allclose(normed.std(0), 1, atol=1e-2)
    with pytest.raises(ValueError):
        Cmvn(stats, mode="utterance")


# A stand-in for `asr-kd`: each cut's fbank takes 0.2 s (forked workers inherit the patch), so a
# run over 30 cuts lasts long enough to be killed in the middle.
SLOW_FBANK = """
import sys, time
import asr_kd.data.features as f
from asr_kd.cli import main
extract = f.Fbank.extract
f.Fbank.extract = lambda self, *a, **k: (time.sleep(0.2), extract(self, *a, **k))[1]
sys.exit(main(sys.argv[1:]))
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.fixture()
def yesno_test_fbank(corpora, tmp_path):
    """yesno's test manifest and its complete fbank output (cuts manifest, report, one archive)."""
    prepare_corpus("yesno", corpora / "yesno" / "waves_yesno", tmp_path / "manifests", dev_fraction=0.1)
    out = tmp_path / "fbank" / "yesno_cuts_test.jsonl.gz"
    compute_fbank(load_manifest(tmp_path / "manifests" / "yesno_cuts_test.jsonl.gz"), out, tmp_path / "fbank" / "feats_test",
                  num_jobs=1)
    return tmp_path, out


def test_killed_fbank_leaves_no_worker_and_no_completion_marker(yesno_test_fbank, caplog):
    """kill -9 of `asr-kd fbank --force` mid-run: its workers die with it, and the old manifest,
    which no longer describes the archives being rewritten, is not taken as done by the next run."""
    tmp_path, out = yesno_test_fbank
    storage = out.parent / "feats_test"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_FBANK, "fbank", str(tmp_path / "manifests"), str(out.parent),
                             "--corpus", "yesno", "--splits", "test", "--num-jobs", "1", "--force"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not list(storage.glob(".yesno_cuts_test.*.tmp.*")):  # a worker is writing its archive
        assert proc.poll() is None and time.time() < deadline, "fbank ended before it could be killed"
        time.sleep(0.05)
    workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert workers
    proc.kill()
    proc.wait()
    deadline = time.time() + 5
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.05)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:
        os.kill(w, signal.SIGKILL)
    assert not survivors, "fbank workers outlived their parent"
    assert not out.exists()  # the completion marker went first
    with caplog.at_level(logging.INFO):
        cuts = compute_fbank(load_manifest(tmp_path / "manifests" / "yesno_cuts_test.jsonl.gz"), out, storage, num_jobs=1)
    assert "skipping" not in caplog.text
    assert not list(storage.glob(".*.tmp.*"))  # the killed worker's temporary archive is gone
    assert all(np.isfinite(c.load_features()).all() for c in load_manifest(out)) and len(cuts) == 30


@pytest.mark.parametrize("damage", ["missing", "truncated", "newer"])
def test_fbank_redoes_a_manifest_whose_archives_do_not_match_it(yesno_test_fbank, damage, caplog):
    tmp_path, out = yesno_test_fbank
    (archive,) = (out.parent / "feats_test").glob("*.lca")
    if damage == "missing":
        archive.unlink()
    elif damage == "truncated":
        os.truncate(archive, archive.stat().st_size // 2)
        os.utime(archive, (out.stat().st_mtime - 10,) * 2)
    else:
        os.utime(archive, (out.stat().st_mtime + 10,) * 2)
    with caplog.at_level(logging.INFO):
        compute_fbank(load_manifest(tmp_path / "manifests" / "yesno_cuts_test.jsonl.gz"), out, archive.parent, num_jobs=1)
    assert "skipping" not in caplog.text and "is not complete" in caplog.text and str(archive) in caplog.text
    assert all(np.isfinite(c.load_features()).all() for c in load_manifest(out))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        compute_fbank(load_manifest(tmp_path / "manifests" / "yesno_cuts_test.jsonl.gz"), out, archive.parent, num_jobs=1)
    assert "skipping" in caplog.text  # complete again


def test_missing_feature_archive_is_named_with_its_manifest(yesno_test_fbank):
    tmp_path, out = yesno_test_fbank
    (archive,) = (out.parent / "feats_test").glob("*.lca")
    archive.unlink()
    proc = subprocess.run([sys.executable, "-m", "asr_kd.cli", "nnet", "eval", "--models", str(tmp_path / "m.pt"),
                           "--cuts", str(out), "--out", str(tmp_path / "eval.json")], capture_output=True, text=True)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "[extra info]" not in proc.stderr
    assert last.startswith("asr-kd nnet eval: error: [Errno 2] No such file or directory") and str(archive) in last
    assert f"(read through {out})" in last
