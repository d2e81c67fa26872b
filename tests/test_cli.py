"""The asr-kd command, the Kaldi-style option parser of the recipes, results files, LibriSpeech."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr_kd.cli import COMMANDS, main
from asr_kd.data.corpora import prepare_corpus
from asr_kd.results import drop_table, update_results

REPO = Path(__file__).resolve().parents[1]


def test_every_command_has_help(capsys):
    for name in ("download", "prepare", "fbank", "lang"):
        assert name in COMMANDS
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "usage: asr-kd " + name in out
        assert "--force" in out or "target_dir" in out  # the command's own arguments are listed


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "prepare" in capsys.readouterr().out


def test_prepare_missing_corpus_dir_names_it(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "asr_kd.cli", "prepare", "yesno", str(tmp_path / "absent"), str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "absent" in proc.stderr and "no such directory" in proc.stderr
    assert not (tmp_path / "out" / "yesno_cuts_train.jsonl.gz").exists()


def run_options(script_body: str, *args: str) -> subprocess.CompletedProcess:
    script = f"""
stage=0
stop_stage=100
corpus_dir=
. {REPO}/local/parse_options.sh
{script_body}
"""
    return subprocess.run(["bash", "-c", script, "run.sh", *args], capture_output=True, text=True)


def test_parse_options_kaldi_style():
    p = run_options('echo "$stage $stop_stage $corpus_dir"', "--stage", "2", "--stop-stage=5", "--corpus-dir", "/x y")
    assert p.returncode == 0 and p.stdout.strip() == "2 5 /x y"
    p = run_options("echo ok", "--no-such-option", "1")
    assert p.returncode != 0 and "unknown option --no-such-option" in p.stderr
    p = run_options("echo ok", "--stage")
    assert p.returncode != 0 and "needs a value" in p.stderr


def test_results_markdown_and_json_are_twins(tmp_path):
    rows = [{"system": "gmm-mono", "set": "test", "wer": 41.234, "command": "./run.sh --stage 7"},
            {"system": "gmm-tri", "set": "test", "wer": 30.0, "command": "./run.sh --stage 7"}]
    update_results(tmp_path, rows, table="GMM", notes={"GMM": "paper: n/a"})
    update_results(tmp_path, [{"system": "gmm-tri", "set": "test", "wer": 29.5, "command": "./run.sh --stage 8"}], table="GMM")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["recipe"] == tmp_path.name
    assert [(r["system"], r["wer"]) for r in data["rows"]] == [("gmm-mono", 41.234), ("gmm-tri", 29.5)]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "| gmm-mono | test | 41.23 |" in md and "| gmm-tri | test | 29.50 |" in md
    assert "./run.sh --stage 8" in md and "paper: n/a" in md


def test_librispeech_layout_through_lhotse(corpora, tmp_path):
    """A two-utterance corpus in the official layout, at the wrong rate (8 kHz FSDD audio)."""
    chapter = tmp_path / "LibriSpeech" / "dev-clean-2" / "1272" / "128104"
    chapter.mkdir(parents=True)
    for i, digit in enumerate((3, 7)):
        shutil.copy(corpora / "fsdd" / "recordings" / f"{digit}_george_0.flac", chapter / f"1272-128104-000{i}.flac")
    (chapter / "1272-128104.trans.txt").write_text("1272-128104-0000 THREE\n1272-128104-0001 Seven!\n")
    reports = prepare_corpus("librispeech", tmp_path / "LibriSpeech", tmp_path / "manifests")
    assert reports["dev-clean-2"]["utterances"] == 2 and reports["dev-clean-2"]["resampled"] == 2
    from lhotse import load_manifest

    cuts = load_manifest(tmp_path / "manifests" / "librispeech_cuts_dev-clean-2.jsonl.gz")
    assert sorted(c.supervisions[0].text for c in cuts) == ["SEVEN", "THREE"]
    assert {c.sampling_rate for c in cuts} == {16000}


def test_results_rows_keep_their_table_order(tmp_path):
    update_results(tmp_path, [{"system": "a", "set": "test", "wer": 1.0}], table="T1")
    update_results(tmp_path, [{"system": "b", "set": "test", "wer": 2.0}], table="T2")
    update_results(tmp_path, [{"system": "c", "set": "test", "wer": 3.0}, {"system": "a", "set": "test", "wer": 0.5}],
                   table="T1")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["table"], r["system"], r["wer"]) for r in rows] == [("T1", "a", 0.5), ("T1", "c", 3.0), ("T2", "b", 2.0)]
    drop_table(tmp_path, "T1")
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["table"] for r in rows] == ["T2"]
    assert "## T1" not in (tmp_path / "RESULTS.md").read_text() and "## T2" in (tmp_path / "RESULTS.md").read_text()


def test_report_recovered_gain(tmp_path):
    from asr_kd.report import add_gain_recovered

    rows = [{"system": "dnn-baseline", "set": "test", "frame_accuracy": 50.0},
            {"system": "dnn-ensemble-4", "set": "test", "frame_accuracy": 54.0},
            {"system": "dnn-distilled-T2", "set": "test", "frame_accuracy": 53.0}]
    add_gain_recovered(rows)
    assert rows[2]["gain_recovered_pct"] == 75.0


def test_outputs_fresh_follows_make_rule(tmp_path):
    from asr_kd.utils import outputs_fresh

    src, out = tmp_path / "ali.pt", tmp_path / "labels.jsonl.gz"
    src.write_text("a")
    assert not outputs_fresh([out], [src])  # missing output
    out.write_text("b")
    os.utime(src, (100, 100))
    os.utime(out, (200, 200))
    assert outputs_fresh([out], [src, tmp_path / "absent"])  # absent inputs do not count
    os.utime(src, (300, 300))
    assert not outputs_fresh([out], [src])  # input rebuilt after the output
