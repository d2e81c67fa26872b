"""Completion markers survive a killed ``--force`` redo (issue 17): the GMM steps and ``asr-kd lang``
remove the file their skip looks at before they rewrite anything, so the next plain run redoes the
step instead of taking half-replaced outputs for finished ones. The "kill" is an exception raised
by a monkeypatched writer once some outputs have been replaced."""
import gzip
import importlib
import json

import numpy as np
import pytest

import asr_kd.hmm.alignments as hmm_alignments
from asr_kd.cli import main
from asr_kd.hmm.synthetic import toy_corpus, toy_lang, write_lang_dir
from asr_kd.lang import prepare_lang
from asr_kd.utils import training_lock

from test_hmm_cli import _write_cuts
from test_lang import make_cuts

prepare_lang_mod = importlib.import_module("asr_kd.lang.prepare_lang")  # (the package's name is the function)


class Killed(Exception):
    """Stands for the kill -9 that stops a step halfway."""


def _die(*args, **kwargs):
    raise Killed()


@pytest.fixture()
def gmm(tmp_path):
    lang = toy_lang()
    feats, texts, _ = toy_corpus(lang, num_utts=12, dim=40, sep=2.0)
    write_lang_dir(lang, tmp_path / "lang", with_L=False)
    cuts = _write_cuts(feats, texts, tmp_path)
    common = ["--lang-dir", str(tmp_path / "lang"), "--cuts", str(cuts), "--acoustic-scale", "1.0"]
    mono = tmp_path / "exp" / "mono"
    mono_args = ["gmm", "mono", *common, "--exp-dir", str(mono), "--num-iters", "2", "--realign-iters", "1",
                 "--max-gauss", "30", "--max-iter-inc", "1", "--num-sil-states", "3"]
    assert main(mono_args) == 0
    return tmp_path, common, mono, mono_args, cuts


def _stamp(path):
    return path.stat().st_mtime_ns


def test_gmm_mono_killed_force_redo_is_redone(gmm, monkeypatch):
    tmp_path, common, mono, mono_args, _ = gmm
    old_ali, old_mdl = _stamp(mono / "ali.pt"), _stamp(mono / "final.mdl")
    with monkeypatch.context() as m:
        m.setattr(hmm_alignments, "write_ctm", _die)  # after ali.pt, priors.json...; before final.mdl
        with pytest.raises(Killed):
            main(mono_args + ["--force"])
    assert _stamp(mono / "ali.pt") != old_ali  # the alignment was already replaced...
    assert not (mono / "final.mdl").exists()   # ...so the old model no longer says "done"
    assert main(mono_args) == 0                # the plain rerun redoes the step
    assert (mono / "final.mdl").is_file() and _stamp(mono / "final.mdl") != old_mdl
    assert _stamp(mono / "final.mdl") >= _stamp(mono / "ali.pt")


def test_gmm_tri_killed_force_redo_is_redone(gmm, monkeypatch):
    tmp_path, common, mono, _, _ = gmm
    tri = tmp_path / "exp" / "tri1"
    tri_args = ["gmm", "tri", *common, "--ali-dir", str(mono), "--exp-dir", str(tri), "--num-leaves", "20",
                "--min-leaf-count", "10", "--num-iters", "2", "--realign-iters", "1", "--max-gauss", "40",
                "--max-iter-inc", "1"]
    assert main(tri_args) == 0
    old_mdl = _stamp(tri / "final.mdl")
    with monkeypatch.context() as m:
        m.setattr(hmm_alignments, "write_ctm", _die)
        with pytest.raises(Killed):
            main(tri_args + ["--force"])
    assert not (tri / "final.mdl").exists()
    assert main(tri_args) == 0
    assert _stamp(tri / "final.mdl") != old_mdl


def test_gmm_align_killed_force_redo_is_redone(gmm, monkeypatch):
    tmp_path, common, mono, _, _ = gmm
    out = tmp_path / "exp" / "mono_ali"
    align_args = ["gmm", "align", *common, "--model-dir", str(mono), "--out-dir", str(out)]
    assert main(align_args) == 0
    old_ali, old_priors = _stamp(out / "ali.pt"), _stamp(out / "priors.json")
    with monkeypatch.context() as m:
        m.setattr(hmm_alignments, "write_ctm", _die)  # after ali_failures.json and priors.json
        with pytest.raises(Killed):
            main(align_args + ["--force"])
    assert _stamp(out / "priors.json") != old_priors
    assert not (out / "ali.pt").exists()
    assert main(align_args) == 0
    assert _stamp(out / "ali.pt") != old_ali and (out / "summary.json").is_file()


def test_gmm_labels_killed_force_redo_is_redone(gmm, monkeypatch):
    tmp_path, _, mono, _, cuts = gmm
    out = tmp_path / "senones" / "cuts.jsonl.gz"
    labels_args = ["gmm", "labels", "--cuts", str(cuts), "--ali-dir", str(mono), "--out-cuts", str(out)]
    assert main(labels_args) == 0
    old = _stamp(out)
    with monkeypatch.context() as m:
        m.setattr(hmm_alignments, "attach_senones", _die)  # killed while the label arrays are rewritten
        with pytest.raises(Killed):
            main(labels_args + ["--force"])
    assert not out.exists()
    assert main(labels_args) == 0
    assert _stamp(out) != old


def test_second_gmm_training_in_one_directory_fails_at_once(gmm, capsys):
    _, _, mono, mono_args, _ = gmm
    old = _stamp(mono / "final.mdl")
    with training_lock(mono):  # another `asr-kd gmm mono` is running into exp/mono
        assert main(mono_args + ["--force"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asr-kd gmm mono: error: another process is training in") and str(mono) in err[-1]
    assert _stamp(mono / "final.mdl") == old


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises((EOFError, OSError)):
        gzip.decompress(path.read_bytes())


def test_gmm_truncated_or_missing_manifest_is_one_line(gmm, capsys):
    tmp_path, common, mono, mono_args, cuts = gmm
    _truncate(cuts)
    assert main(mono_args + ["--force"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asr-kd gmm mono: error: ") and str(cuts) in err[-1] and "unreadable manifest" in err[-1]
    missing = tmp_path / "absent.jsonl.gz"
    assert main(["gmm", "labels", "--cuts", str(missing), "--ali-dir", str(mono),
                 "--out-cuts", str(tmp_path / "l.jsonl.gz")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"asr-kd gmm labels: error: {missing} not found: run the fbank stage first"


def test_gmm_tri_without_alignment_names_it(gmm, capsys):
    tmp_path, common, mono, _, _ = gmm
    (mono / "ali.pt").unlink()
    assert main(["gmm", "tri", *common, "--ali-dir", str(mono), "--exp-dir", str(tmp_path / "tri")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"asr-kd gmm tri: error: {mono / 'ali.pt'} not found: train the monophone system first"


def test_lang_killed_force_redo_is_redone(tmp_path, monkeypatch):
    lang_dir = tmp_path / "lang"
    train = make_cuts(tmp_path / "train.jsonl.gz", ["yes no yes", "no"])
    prepare_lang(lang_dir, [train])
    # the transcripts change (a new word: new phones, renumbered tables) and the lang is redone
    train = make_cuts(tmp_path / "train.jsonl.gz", ["yes no yes", "no", "red"])
    with monkeypatch.context() as m:
        m.setattr(prepare_lang_mod, "compile_fst", _die)  # killed at L.fst, after the tables
        with pytest.raises(Killed):
            prepare_lang(lang_dir, [train], force=True)
    assert "R" in (lang_dir / "phones.txt").read_text().split()  # the tables were already replaced...
    assert not (lang_dir / "L_disambig.fst").exists()            # ...so the lang no longer looks done
    stats = prepare_lang(lang_dir, [train])  # the plain rerun redoes it
    assert "RED" in stats["added_words"]
    assert json.loads((lang_dir / "lang_stats.json").read_text())["words"] == stats["words"]
    assert (lang_dir / "L_disambig.fst").stat().st_mtime_ns >= (lang_dir / "phones.txt").stat().st_mtime_ns


def test_lang_truncated_manifest_is_one_line(tmp_path, capsys):
    texts = [" ".join(np.random.default_rng(i).choice(["yes", "no"], 8)) for i in range(300)]
    train = make_cuts(tmp_path / "train.jsonl.gz", texts)
    _truncate(train)
    assert main(["lang", str(tmp_path / "lang"), "--vocab-cuts", str(train)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asr-kd lang: error: ") and str(train) in err[-1] and "unreadable manifest" in err[-1]
    assert not (tmp_path / "lang" / "L_disambig.fst").exists()


def test_gmm_missing_feature_archive_names_it_and_the_stage(gmm, capsys):
    import shutil

    tmp_path, common, mono, _, cuts = gmm
    shutil.rmtree(tmp_path / "feats")  # the archives the cuts point at
    assert main(["gmm", "align", *common, "--model-dir", str(mono), "--out-dir", str(tmp_path / "ali")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("asr-kd gmm align: error: ") and str(tmp_path / "feats") in err[-1]
    assert err[-1].endswith(f"(read through {cuts}): redo the stage that wrote it (features: asr-kd fbank)")
    assert not (tmp_path / "ali" / "ali.pt").exists()
