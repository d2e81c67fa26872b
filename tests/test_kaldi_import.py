"""``asr-kd prepare kaldi`` / ``asr-kd prepare lhotse`` (issue 15, part 1): a user's own data dir
in Kaldi layout, or lhotse manifests, into the manifests the corpus recipes write; bad input named,
counted and skipped; resampling once, in the manifest."""
import json
import logging

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment, load_manifest

from asr_kd.cli import main
from asr_kd.data.features import compute_fbank
from asr_kd.data.import_data import import_kaldi_dir, import_lhotse
from asr_kd.utils import UserError


def tone(rate, seconds=0.5, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * noise).astype(np.float32)


def write_dir(d, wav, text=None, utt2spk=None, **extra):
    d.mkdir(parents=True, exist_ok=True)
    for name, lines in (("wav.scp", wav), ("text", text), ("utt2spk", utt2spk), *extra.items()):
        if lines is not None:
            (d / name).write_text("".join(f"{k} {v}\n" for k, v in lines.items()))
    return d


def warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.fixture
def audio(corpora, tmp_path):
    """FSDD files (8 kHz flac) and generated ones at 16 and 44.1 kHz, plus broken ones."""
    fsdd = corpora / "fsdd" / "recordings"
    a = tmp_path / "audio"
    a.mkdir()
    sf.write(a / "r16k.wav", tone(16000), 16000, subtype="PCM_16")
    sf.write(a / "r44k.wav", tone(44100, seed=1), 44100, subtype="PCM_16")
    (a / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    sf.write(a / "empty.wav", np.zeros(0, np.float32), 16000, subtype="PCM_16")
    return {"zero": fsdd / "0_george_0.flac", "one": fsdd / "1_jackson_0.flac", "two": fsdd / "2_lucas_0.flac",
            "r16k": a / "r16k.wav", "r44k": a / "r44k.wav", "garbage": a / "garbage.wav", "empty": a / "empty.wav"}


def test_kaldi_dir_bad_entries_named_counted_skipped(audio, tmp_path, caplog):
    d = write_dir(
        tmp_path / "mydata",
        wav={"u1": audio["zero"], "u2": f"cat {audio['one']} |", "u3": tmp_path / "absent.wav",
             "u4": f"cat {tmp_path / 'absent.wav'} |", "u5": audio["garbage"], "u6": audio["two"],
             "u7": audio["r16k"], "u8": audio["empty"], "u9": "echo not audio |"},
        text={"u1": "Zero.", "u2": "one", "u3": "two", "u4": "three", "u5": "four", "u6": " ... ", "u7": "seven",
              "u8": "eight", "u9": "nine", "x1": "no audio", "x2": "no audio either"},
        utt2spk={"u1": "george", "u2": "jackson", "u6": "lucas", "u7": "gen"},
        spk2gender={"george": "m", "jackson": "m"},
    )
    out = tmp_path / "manifests"
    with caplog.at_level(logging.INFO):
        report = import_kaldi_dir(d, out, sampling_rate=16000)
    cuts = load_manifest(out / "mydata_cuts_test.jsonl.gz")
    assert sorted(cuts.ids) == ["u1", "u2", "u7"]
    assert {c.id: c.supervisions[0].text for c in cuts} == {"u1": "ZERO", "u2": "ONE", "u7": "SEVEN"}
    assert {c.id: c.supervisions[0].speaker for c in cuts} == {"u1": "george", "u2": "jackson", "u7": "gen"}
    assert cuts["u1"].supervisions[0].gender == "m"
    assert all(c.sampling_rate == 16000 for c in cuts)
    assert (out / "mydata_recordings_test.jsonl.gz").is_file() and (out / "mydata_supervisions_test.jsonl.gz").is_file()
    # The pipe is lhotse's command source, read again (and resampled) whenever the audio is loaded.
    assert cuts["u2"].recording.sources[0].type == "command"
    assert cuts["u2"].load_audio().shape[1] == cuts["u2"].num_samples
    assert report["skipped"] == {
        "missing audio files": 1, "pipe commands that failed": 2, "unreadable audio files": 1,
        "empty recordings": 1, "utterances in text with no audio (not in wav.scp)": 2, "empty transcripts": 1}
    assert report["utterances"] == 3 and report["resampled"] == 2 and report["resampled_from"] == {"8000": 2}
    on_disk = json.loads((out / "mydata_prepare.json").read_text())
    assert on_disk["test"]["skipped_items"] == report["skipped_items"]
    # One warning per kind, naming the items.
    msgs = warnings(caplog)
    (failed,) = [m for m in msgs if "pipe commands that failed" in m]
    assert "2 pipe commands that failed" in failed and "u4" in failed and "u9" in failed and "exit status" in failed
    assert any("2 utterances in text with no audio" in m and "x1" in m and "x2" in m for m in msgs)
    assert any("1 missing audio files" in m and "absent.wav" in m for m in msgs)
    assert any("resampling 2 of 3 recordings to 16000 Hz (from 2 at 8000 Hz)" in r.getMessage() for r in caplog.records)


def test_features_from_an_imported_set(audio, tmp_path):
    """Stage 2 takes the imported manifest as it takes a corpus's: pipes and resampling included."""
    d = write_dir(tmp_path / "d", wav={"a": f"cat {audio['zero']} |", "b": audio["r44k"]},
                  text={"a": "zero", "b": "tone"})
    import_kaldi_dir(d, tmp_path / "m", name="own", split="dev", sampling_rate=16000)
    cuts = load_manifest(tmp_path / "m" / "own_cuts_dev.jsonl.gz")
    done = compute_fbank(cuts, tmp_path / "fbank" / "own_cuts_dev.jsonl.gz", tmp_path / "fbank" / "feats", num_jobs=1)
    assert sorted(done.ids) == ["a", "b"]
    for c in done:
        assert c.load_features().shape == (round(c.duration / 0.01), 40)


def test_mixed_rates_without_a_rate_take_the_most_common(audio, tmp_path, caplog):
    d = write_dir(tmp_path / "d", wav={"a": audio["zero"], "b": audio["one"], "c": audio["r16k"]})
    with caplog.at_level(logging.INFO):
        report = import_kaldi_dir(d, tmp_path / "m")
    assert report["sampling_rate"] == 8000 and report["resampled_from"] == {"16000": 1}
    assert report["transcribed"] is False  # no text: for decoding only
    assert any("mixed rates" in m and "8000 Hz" in m for m in warnings(caplog))
    assert any("no text file" in m for m in warnings(caplog))
    cuts = load_manifest(tmp_path / "m" / "d_cuts_test.jsonl.gz")
    assert {c.sampling_rate for c in cuts} == {8000} and all(c.supervisions[0].text is None for c in cuts)
    assert {c.supervisions[0].speaker for c in cuts} == {"a", "b", "c"}  # no utt2spk: one speaker each


def test_segments(audio, tmp_path, caplog):
    d = write_dir(tmp_path / "d", wav={"rec": audio["r44k"], "gone": tmp_path / "absent.wav"},
                  text={"s1": "first half", "s2": "second half", "s3": "too late", "s4": "of a missing file",
                        "s5": "to the end", "s6": "unknown recording"},
                  utt2spk={"s1": "a", "s2": "a", "s5": "b"},
                  segments={"s1": "rec 0.0 0.2", "s2": "rec 0.2 0.45", "s3": "rec 0.4 9.0", "s4": "gone 0 1",
                            "s5": "rec 0.1 -1", "s6": "nowhere 0 1"})
    report = import_kaldi_dir(d, tmp_path / "m", sampling_rate=16000)
    cuts = load_manifest(tmp_path / "m" / "d_cuts_test.jsonl.gz")
    assert sorted(cuts.ids) == ["s1", "s2", "s5"]
    assert cuts["s1"].start == 0.0 and cuts["s1"].duration == pytest.approx(0.2)
    assert cuts["s2"].start == pytest.approx(0.2) and cuts["s5"].duration == pytest.approx(0.4)
    assert all(len(c.supervisions) == 1 and c.sampling_rate == 16000 for c in cuts)
    assert cuts["s2"].load_audio().shape == (1, 4000)
    assert report["skipped"] == {"missing audio files": 1, "segments outside their recording": 1,
                                 "utterances whose recording is not listed": 1}


def test_nothing_usable_is_exit_status_1_and_writes_nothing(audio, tmp_path, capsys):
    d = write_dir(tmp_path / "d", wav={"a": tmp_path / "absent.wav", "b": "false |"}, text={"a": "x", "b": "y"})
    assert main(["prepare", "kaldi", str(d), str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "asr-kd prepare: error:" in err and "no usable utterances" in err
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())
    empty = write_dir(tmp_path / "nowav", wav=None, text={"a": "x"})
    assert main(["prepare", "kaldi", str(empty), str(tmp_path / "m")]) == 1
    assert "missing wav.scp" in capsys.readouterr().err


def test_cli_relative_paths_rerun_and_force(audio, tmp_path, monkeypatch):
    """Relative wav.scp paths start in the current directory (Kaldi's rule) and are stored absolute."""
    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "x.wav", tone(16000), 16000, subtype="PCM_16")
    write_dir(tmp_path / "data" / "own", wav={"x": "wavs/x.wav"}, text={"x": "hello"})
    monkeypatch.chdir(tmp_path)
    assert main(["prepare", "kaldi", "data/own", "m", "--name", "mine", "--split", "eval"]) == 0
    path = tmp_path / "m" / "mine_cuts_eval.jsonl.gz"
    (cut,) = load_manifest(path)
    assert cut.recording.sources[0].source == str(tmp_path / "wavs" / "x.wav")
    mtime = path.stat().st_mtime_ns
    assert main(["prepare", "kaldi", "data/own", "m", "--name", "mine", "--split", "eval"]) == 0
    assert path.stat().st_mtime_ns == mtime
    assert main(["prepare", "kaldi", "data/own", "m", "--name", "mine", "--split", "eval", "--force"]) == 0
    assert path.stat().st_mtime_ns != mtime


def test_lhotse_manifests_taken_as_they_are(audio, tmp_path, caplog):
    def cut(i, path, text, start=0.0, duration=0.2):
        rec = Recording.from_file(path, recording_id=f"r{i}")
        return MonoCut(id=f"c{i}", start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[
            SupervisionSegment(id=f"s{i}", recording_id=f"r{i}", start=start, duration=duration, text=text,
                               speaker="spk")])
    cuts = CutSet.from_cuts([cut(0, audio["zero"], "Zero!"), cut(1, audio["r16k"], "hello, world"),
                             cut(2, audio["one"], "  "), cut(3, audio["two"], "late", start=5.0)])
    src = tmp_path / "theirs_cuts_train.jsonl.gz"
    cuts.to_file(src)
    report = import_lhotse(src, tmp_path / "m", sampling_rate=16000)
    out = load_manifest(tmp_path / "m" / "theirs_cuts_train.jsonl.gz")  # name and split from the file name
    assert {c.id: c.supervisions[0].text for c in out} == {"s0": "ZERO", "s1": "HELLO WORLD"}
    assert {c.sampling_rate for c in out} == {16000} and report["resampled"] == 1
    assert report["skipped"] == {"empty transcripts": 1, "segments outside their recording": 1}
    # Recordings + supervisions manifests.
    recs, sups, _ = cuts.decompose()
    recs.to_file(tmp_path / "recs.jsonl.gz")
    sups.to_file(tmp_path / "sups.jsonl.gz")
    with pytest.raises(UserError, match="--supervisions"):
        import_lhotse(tmp_path / "recs.jsonl.gz", tmp_path / "m2")
    report = import_lhotse(tmp_path / "recs.jsonl.gz", tmp_path / "m2", name="x", split="test",
                           supervisions=tmp_path / "sups.jsonl.gz")
    assert report["utterances"] == 2 and report["sampling_rate"] == 8000  # the most common rate
    with pytest.raises(UserError, match="not a lhotse manifest"):
        (tmp_path / "bad.jsonl.gz").write_bytes(b"nonsense")
        import_lhotse(tmp_path / "bad.jsonl.gz", tmp_path / "m3")


def test_help_lists_the_import_options(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    out = capsys.readouterr().out
    for option in ("kaldi", "lhotse", "--sampling-rate", "--name", "--split", "--supervisions", "--audio-root"):
        assert option in out


def test_dev_speakers_held_out_whole(audio, tmp_path):
    """--dev-speakers N: N whole speakers as split dev, the others as --split; bad entries counted once."""
    d = write_dir(tmp_path / "spk", wav={"a1": audio["zero"], "a2": audio["one"], "b1": audio["two"],
                                          "c1": audio["r16k"], "c2": tmp_path / "absent.wav"},
                  text={"a1": "zero", "a2": "one", "b1": "two", "c1": "seven", "c2": "eight"},
                  utt2spk={"a1": "A", "a2": "A", "b1": "B", "c1": "C", "c2": "C"})
    out = tmp_path / "m"
    assert main(["prepare", "kaldi", str(d), str(out), "--dev-speakers", "1", "--sampling-rate", "16000"]) == 0
    reports = json.loads((out / "spk_prepare.json").read_text())
    dev, test = (load_manifest(out / f"spk_cuts_{s}.jsonl.gz") for s in ("dev", "test"))
    dev_spk = {c.supervisions[0].speaker for c in dev}
    assert dev_spk == set(reports["dev"]["dev_speakers"]) and len(dev_spk) == 1
    assert not dev_spk & {c.supervisions[0].speaker for c in test} and len(dev) + len(test) == 4
    assert {c.sampling_rate for c in [*dev, *test]} == {16000}
    assert reports["test"]["skipped"] == {"missing audio files": 1} and reports["dev"]["skipped"] == {}
    with pytest.raises(UserError, match="--dev-speakers 3: the set has 3 speakers"):
        import_kaldi_dir(d, tmp_path / "m2", dev_speakers=3)
