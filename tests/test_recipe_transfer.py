"""recipes/transfer/run.sh end to end (issue 15, part 5): a trained system decodes a foreign Kaldi data dir.

The source system is conftest.py's tiny trained LibriSpeech-layout recipe (16 kHz English, every
stage run once a session, shared with tests/test_recipe_librispeech.py). The foreign set is one take
of every FSDD digit by every speaker (60 utterances, 8 kHz), built by the recipe's own
local/fsdd_data_dir.sh, plus an entry whose audio is missing. The recipe imports it (resampled to
16 kHz; 2 speakers as dev), builds its lang on the source's phone set and an LM from the dev
transcripts, and decodes it with the GMM, the baseline DNN, the 2-model ensemble, the distilled
student and an export of the baseline (--model-dirs). A table with other phone ids is refused.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from asr_kd.cli import main

from conftest import recipe_env

pytest.importorskip("k2")

REPO = Path(__file__).resolve().parents[1]
KALDI_WER = re.compile(r"^%WER \d+\.\d\d \[ \d+ / \d+, \d+ ins, \d+ del, \d+ sub \]")
SYSTEMS = ["gmm-tri", "dnn-baseline", "dnn-ensemble-2", "dnn-distilled-T2", "export-dnn_seed1"]
QUICK = ["--lm-weights", "8 12", "--word-ins-penalties", "0.0", "--nj", "1"]


def files_of(d: Path) -> dict:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def copy_recipe(root: Path) -> Path:
    shutil.copytree(REPO / "local", root / "local")
    shutil.copytree(REPO / "recipes" / "transfer", root / "recipes" / "transfer",
                    ignore=shutil.ignore_patterns("data", "exp", "RESULTS.md", "results.json"))
    return root / "recipes" / "transfer" / "run.sh"


def run_recipe(script: Path, corpora: Path, *args, timeout=900):
    return subprocess.run(["bash", str(script), *args], env=recipe_env(corpora), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def foreign_dir(corpora, tmp_path_factory):
    """FSDD take 0 of every digit and speaker in Kaldi layout, and one entry with no audio file."""
    d = tmp_path_factory.mktemp("foreign") / "digits"
    subprocess.run(["bash", str(REPO / "recipes" / "transfer" / "local" / "fsdd_data_dir.sh"), str(corpora / "fsdd"),
                    "1", str(d)], check=True, capture_output=True)
    with open(d / "wav.scp", "a") as f:
        f.write(f"theo-9-99 {d / 'absent.flac'}\n")
    with open(d / "text", "a") as f:
        f.write("theo-9-99 nine\n")
    with open(d / "utt2spk", "a") as f:
        f.write("theo-9-99 theo\n")
    return d


@pytest.fixture(scope="module")
def transfer(corpora, tiny_trained_recipe, foreign_dir, tmp_path_factory):
    source, _ = tiny_trained_recipe
    before = files_of(source)
    export = tmp_path_factory.mktemp("exports") / "dnn_seed1"
    assert main(["export", "--model", str(source / "exp" / "dnn_seed1" / "final.pt"), "--out-dir", str(export)]) == 0
    script = copy_recipe(tmp_path_factory.mktemp("repo"))
    proc = run_recipe(script, corpora, "--data-dir", str(foreign_dir), "--source-recipe", str(source),
                      "--num-teachers", "2", "--model-dirs", str(export), *QUICK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return script.parent, proc, source, before


def test_every_stage_ran_and_nothing_was_written_into_the_source(transfer):
    d, proc, source, before = transfer
    for stage in range(0, 9):
        assert f"Stage {stage}:" in proc.stdout + proc.stderr, f"stage {stage} did not run"
    assert files_of(source) == before


def test_bad_entry_named_counted_and_the_rest_decoded(transfer):
    d, proc, _, _ = transfer
    reports = json.loads((d / "data" / "digits" / "manifests" / "digits_prepare.json").read_text())
    assert reports["test"]["skipped"] == {"missing audio files": 1}
    assert "theo-9-99" in json.dumps(reports["test"]["skipped_items"])
    assert "theo-9-99" in proc.stderr  # the import's warning names it
    assert reports["dev"]["utterances"] + reports["test"]["utterances"] == 60
    assert len(reports["dev"]["dev_speakers"]) == 2 and reports["test"]["resampled_from"] == {"8000": reports["test"]["utterances"]}
    for system in SYSTEMS:
        summary = json.loads((d / "exp" / "digits" / system / "decode_test" / "decode.json").read_text())
        assert summary["utterances"] == reports["test"]["utterances"], system


def test_wer_files_in_kaldi_format_and_results_rows(transfer):
    d, _, _, _ = transfer
    rows = json.loads((d / "results.json").read_text())["rows"]
    by = {(r["system"], r["set"]): r for r in rows if r["table"].startswith("Transfer: digits")}
    for system in SYSTEMS:
        dec = d / "exp" / "digits" / system
        dev = json.loads((dec / "decode_dev" / "decode.json").read_text())
        test = json.loads((dec / "decode_test" / "decode.json").read_text())
        assert KALDI_WER.match((dec / "decode_test" / f"wer_{test['best']}").read_text()), system
        assert test["tuned_on"] == str(dec.relative_to(d) / "decode_dev")  # never tuned on test
        assert (test["best_lm_weight"], test["best_word_ins_penalty"]) == (dev["best_lm_weight"], dev["best_word_ins_penalty"])
        assert by[system, "test"]["wer"] == test["wer"] and (system, "dev") in by
        assert (dec / "graph_2gram" / "HCLG.pt").is_file()  # the graph lives here, not in the source recipe
    assert all(r["command"].startswith("cd recipes/transfer && ./run.sh --data-dir") for r in by.values())
    assert "LM: 2-gram from the dev transcripts" in (d / "RESULTS.md").read_text()
    lm = json.loads((d / "data" / "digits" / "lm" / "lm_2gram.json").read_text())
    assert lm["train_cuts"] == ["data/digits/manifests/digits_cuts_dev.jsonl.gz"] and lm["text"] == []


def test_a_system_not_trained_yet_is_skipped(transfer, corpora, foreign_dir):
    d, _, source, _ = transfer
    proc = run_recipe(d / "run.sh", corpora, "--data-dir", str(foreign_dir), "--source-recipe", str(source),
                      "--num-teachers", "3", "--stage", "6", "--stop-stage", "6", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipped: not trained (yet): {source}/exp/dnn_seed3/final.pt" in proc.stdout


def test_a_phone_table_of_another_model_is_refused(transfer, corpora, foreign_dir, tmp_path):
    """Other phone ids: the lang builds, decoding refuses it; a table without a phone a digit needs: the lang refuses."""
    _, _, source, _ = transfer
    lines = (source / "data" / "lang" / "phones.txt").read_text().splitlines()
    ids = {p.split()[0]: i for i, p in enumerate(lines)}
    swapped = list(lines)
    swapped[ids["AA"]], swapped[ids["AE"]] = f"AE {ids['AA']}", f"AA {ids['AE']}"
    (tmp_path / "swapped.txt").write_text("\n".join(swapped) + "\n")
    script = copy_recipe(tmp_path / "a")
    proc = run_recipe(script, corpora, "--data-dir", str(foreign_dir), "--source-recipe", str(source),
                      "--phone-table", str(tmp_path / "swapped.txt"), "--stop-stage", "4", *QUICK, timeout=300)
    assert proc.returncode == 1
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "asr-kd decode: error: phone sets differ" in error[0] and f"phone {ids['AA']} is AA in the model, AE in the lang" in error[0]
    assert not (script.parent / "exp" / "digits" / "gmm-tri" / "decode_dev" / "decode.json").exists()

    without_v = [line for line in lines if not line.startswith("V ")]
    (tmp_path / "no_v.txt").write_text("\n".join(f"{p.split()[0]} {i}" for i, p in enumerate(without_v)) + "\n")
    script = copy_recipe(tmp_path / "b")
    proc = run_recipe(script, corpora, "--data-dir", str(foreign_dir), "--source-recipe", str(source),
                      "--phone-table", str(tmp_path / "no_v.txt"), "--stop-stage", "2", timeout=120)
    assert proc.returncode == 1 and "SEVEN (phone V)" in proc.stderr.strip().splitlines()[-1]


def test_features_made_while_decoding_are_those_of_the_fbank_stage(transfer, tmp_path, monkeypatch):
    """The import's cuts have no features: decoding them gives the words of cuts through asr-kd fbank."""
    d, _, source, _ = transfer
    monkeypatch.chdir(d)
    assert main(["fbank", "data/digits/manifests", str(tmp_path / "fbank"), "--corpus", "digits", "--splits", "test"]) == 0
    dec = Path("exp/digits/dnn-baseline")
    common = ["--model", str(source / "exp" / "dnn_seed1" / "final.pt"), "--lang-dir", "data/digits/lang",
              "--lm", "data/digits/lm/G_2gram.fst", "--graph-dir", str(dec / "graph_2gram"), "--tuned-on", str(dec / "decode_dev")]
    assert main(["decode", *common, "--cuts", str(tmp_path / "fbank" / "digits_cuts_test.jsonl.gz"),
                 "--out-dir", str(tmp_path / "decode")]) == 0
    best = json.loads((dec / "decode_test" / "decode.json").read_text())["best"]
    stored, made = ((p / f"hyp_{best}.txt").read_text().splitlines() for p in (tmp_path / "decode", dec / "decode_test"))
    assert len(stored) == len(made)
    # the fbank stage stores lilcom-compressed features (errors ~1e-3): an utterance may rarely flip
    assert sum(a == b for a, b in zip(stored, made)) >= 0.9 * len(made)
