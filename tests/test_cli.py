"""The asr-kd command, the Kaldi-style option parser of the recipes, results files, LibriSpeech."""
import argparse
import importlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr_kd.cli import COMMANDS, main
from asr_kd.config import config_flags
from asr_kd.data.corpora import prepare_corpus
from asr_kd.hmm import steps as gmm_steps
from asr_kd.hmm.train import TrainOpts
from asr_kd.nnet import cli as nnet_cli
from asr_kd.nnet.steps import SplitOpts
from asr_kd.results import update_results

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


def _without_help(parser: argparse.ArgumentParser, path: str):
    """(command path, option) for each argument and subcommand of ``parser`` that has no help
    string, recursing into subcommands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest for choice in action._choices_actions if choice.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    yield path, name
                yield from _without_help(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            yield path, (action.option_strings or [action.dest])[0]


def test_every_option_of_every_command_has_help():
    missing = []
    for name, (module, _) in COMMANDS.items():
        parser = argparse.ArgumentParser(prog=f"asr-kd {name}")
        importlib.import_module(module).add_arguments(parser)
        missing += _without_help(parser, f"asr-kd {name}")
    assert not missing, f"options without a help string: {missing}"


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


def test_report_recovered_gain(tmp_path):
    from asr_kd.report import add_gain_recovered

    rows = [{"system": "dnn-baseline", "set": "test", "frame_accuracy": 50.0, "wer": 20.0},
            {"system": "dnn-ensemble-4", "set": "test", "frame_accuracy": 54.0, "wer": 18.0},
            {"system": "dnn-distilled-T2", "set": "test", "frame_accuracy": 53.0, "wer": 20.5}]
    add_gain_recovered(rows)
    assert rows[2]["gain_recovered_pct"] == 75.0
    assert rows[2]["wer_gain_recovered_pct"] == -25.0  # a student worse than the baseline recovers less than none
    rows[1]["wer"] = 21.0  # an ensemble worse than the baseline in WER: no WER gain to recover
    rows[1]["frame_accuracy"] = 50.0  # nor any frame-accuracy gain
    add_gain_recovered(rows)
    assert rows[2]["wer_gain_recovered_pct"] is None and rows[2]["gain_recovered_pct"] is None
    # WER from the rows' error counts where they have them (their wer is rounded)
    for r, errors in zip(rows, (3000, 2970, 2976)):
        r.update(wer=round(100 * errors / 7000, 2), ins=0, dels=0, subs=errors, ref_words=7000)
    add_gain_recovered(rows)
    assert rows[2]["wer_gain_recovered_pct"] == 80.0  # 81.4 from the rounded WERs


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


@pytest.mark.parametrize("args, message", [
    (["--stage", "99"], "--stage 99: no such stage (this recipe's stages are 0..13)"),
    (["--stop-stage", "-1"], "--stop-stage must be a stage number, not '-1'"),
    (["--stage", "5", "--stop-stage", "3"], "--stage 5 is after --stop-stage 3: no stage to run"),
    (["--stage", "abc"], "--stage must be a stage number, not 'abc'"),
    (["--stage", "2", "stray"], "unexpected argument 'stray'"),
    (["--max-stage", "99"], "unknown option --max-stage"),
])
def test_recipe_rejects_bad_stage_options(tmp_path, args, message):
    """A copy of the yesno recipe (local/ linked): bad options fail in one line before anything runs."""
    recipe = yesno_copy(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "CORPORA": str(tmp_path / "no-corpora")}  # no asr-kd: a run would fail anyway
    proc = subprocess.run(["bash", str(recipe / "run.sh"), *args], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in recipe.iterdir()) == ["run.sh"]


def test_parse_options_stage_checks_without_max_stage():
    assert run_options('echo "$stage $stop_stage"', "--stage", "3", "--stop-stage", "3").stdout.strip() == "3 3"
    p = run_options("echo ok", "--stage", "1.5")
    assert p.returncode != 0 and "must be a stage number" in p.stderr and "ok" not in p.stdout


def _report_row(recipe_dir, table, i, barrier):
    barrier.wait()  # all at once
    sys.exit(main(["report", "--recipe-dir", str(recipe_dir), "--table", table, "--system", f"s{i}", "--set", "test",
                   "--field", f"n={i}", "--command", f"./run.sh --n {i}"]))


def test_concurrent_reports_keep_every_row(tmp_path):
    from asr_kd.results import render_markdown

    ctx = multiprocessing.get_context("fork")
    for table in ("T1", "T2"):
        barrier = ctx.Barrier(8)
        procs = [ctx.Process(target=_report_row, args=(tmp_path, table, i, barrier)) for i in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 8
    results = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["table"], r["system"]) for r in results["rows"]) == [(t, f"s{i}") for t in ("T1", "T2") for i in range(8)]
    assert (tmp_path / "RESULTS.md").read_text() == render_markdown(results)


def yesno_copy(tmp_path: Path) -> Path:
    recipe = tmp_path / "recipes" / "yesno"
    recipe.mkdir(parents=True)
    shutil.copy(REPO / "recipes" / "yesno" / "run.sh", recipe / "run.sh")
    (tmp_path / "local").symlink_to(REPO / "local")
    return recipe


@pytest.mark.parametrize("stage, present, message", [
    (8, [], "data/lang/phones.txt not found: run stage 3 (lang) first"),
    (9, ["exp/tri1/priors.json", "data/senones/yesno_cuts_train.jsonl.gz", "data/senones/yesno_cuts_dev.jsonl.gz",
         "data/fbank/yesno_cuts_train.jsonl.gz"],
     "data/fbank/feats_train not found: run stage 2 (features) first"),
])
def test_stage_with_missing_inputs_names_the_stage_that_makes_them(tmp_path, stage, present, message):
    recipe = yesno_copy(tmp_path)
    for f in present:
        (recipe / f).parent.mkdir(parents=True, exist_ok=True)
        (recipe / f).touch()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "CORPORA": str(tmp_path)}
    proc = subprocess.run(["bash", str(recipe / "run.sh"), "--stage", str(stage), "--stop-stage", str(stage)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip() == f"{recipe / 'run.sh'}: {message}", proc.stderr


def asr_kd(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_kd.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def error_lines(proc) -> list:
    """stderr without the log lines (time-stamped) and progress bars."""
    return [line for line in proc.stderr.splitlines() if line and not line[:4].isdigit() and "it/s]" not in line]


def test_user_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path):
    proc = asr_kd("prepare", "yesno", "/nonexistent", tmp_path / "out")
    assert proc.returncode == 1 and error_lines(proc) == ["asr-kd prepare: error: yesno: no such directory: /nonexistent"]
    verbose = asr_kd("-v", "prepare", "yesno", "/nonexistent", tmp_path / "out")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


def test_truncated_manifest_is_named_in_one_line(corpora, tmp_path):
    prepare_corpus("yesno", corpora / "yesno" / "waves_yesno", tmp_path / "m", dev_fraction=0.1)
    path = tmp_path / "m" / "yesno_cuts_test.jsonl.gz"
    path.write_bytes(path.read_bytes()[:-40])
    proc = asr_kd("fbank", tmp_path / "m", tmp_path / "f", "--corpus", "yesno", "--splits", "test")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert error_lines(proc) == [f"asr-kd fbank: error: {path}: unreadable manifest (EOFError: Compressed file ended "
                                 "before the end-of-stream marker was reached): truncated or not a manifest; redo the "
                                 "stage that wrote it"]


def test_a_command_exiting_with_a_message_is_formatted_like_an_error(tmp_path, capsys):
    rc = main(["lang", str(tmp_path / "lang"), "--vocab-cuts", "x", "--report-cuts", "nonsense"])
    assert rc == 1 and capsys.readouterr().err.strip() == "asr-kd lang: error: --report-cuts expects SPLIT=PATH, got 'nonsense'"


@pytest.mark.parametrize("recipe", ["yesno", "fsdd", "speechocean762", "librispeech"])
def test_recipe_help_lists_its_options_and_every_stage(recipe):
    proc = subprocess.run(["bash", str(REPO / "recipes" / recipe / "run.sh"), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "--stop-stage" in proc.stderr and "--num-teachers" in proc.stderr
    stages = proc.stderr.split("stages:\n", 1)[1]
    numbers = {int(w) for line in stages.splitlines() for w in line.split() if w.isdigit()}
    assert set(range(13)) <= numbers, stages


def test_report_removes_a_row(tmp_path):
    from asr_kd.cli import main
    from asr_kd.results import update_results

    update_results(tmp_path, [{"system": "a", "set": "test", "wer": 1.0}, {"system": "b", "set": "test", "wer": 2.0},
                              {"system": "b", "set": "dev", "wer": 3.0}], table="T1")
    assert main(["report", "--recipe-dir", str(tmp_path), "--table", "T1", "--system", "b", "--set", "test",
                 "--remove"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [(r["system"], r["set"]) for r in rows] == [("a", "test"), ("b", "dev")]
    assert "| b | test |" not in (tmp_path / "RESULTS.md").read_text()
    assert main(["report", "--recipe-dir", str(tmp_path), "--table", "T1", "--system", "c", "--set", "test"]) == 1


def test_report_note_from_the_speech_paper_json(tmp_path):
    """The speech tables' notes come from local/paper.json: its template filled in with the paper's numbers."""
    args = ["report", "--recipe-dir", str(tmp_path), "--table", "Table 1", "--system", "b", "--set", "test",
            "--command", "x", "--field", "wer=1"]
    assert main([*args, "--paper", str(REPO / "local/paper.json"), "--note-key", "table1"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "baseline 58.9% frame accuracy / 10.9% WER, 10-model ensemble 61.1% / 10.7%" in text
    assert "{" not in text
    assert main([*args, "--paper", str(REPO / "local/paper.json"), "--note-key", "table9"]) == 1  # no such note
    assert main([*args, "--note-key", "table1"]) == 1  # without --paper


def _step_call(monkeypatch, module, name: str, argv: list) -> tuple:
    """(args, kwargs) that ``asr-kd ARGV`` passes to the library step ``module.name`` (not run)."""
    calls = []
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append((a, k)))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    assert main(argv) == 0
    (call,) = calls
    return call


def test_generated_flags_keep_their_names_and_defaults(monkeypatch):
    """The flags made from the option dataclasses keep the names and defaults the recipes use:
    each GMM step its own schedule, the --no-... switches of True settings."""
    gmm = ["--lang-dir", "L", "--cuts", "C"]
    mono = _step_call(monkeypatch, gmm_steps, "train_mono_step", ["gmm", "mono", *gmm, "--exp-dir", "E"])[0][3]
    assert (mono.num_iters, mono.max_gauss, mono.max_iter_inc) == (30, 1000, 20)
    assert mono.realign_iters == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 19, 22, 25, 28) and not mono.random_flat_start
    tri = _step_call(monkeypatch, gmm_steps, "train_tri_step", ["gmm", "tri", *gmm, "--ali-dir", "A", "--exp-dir", "E"])
    tri = tri[0][4]
    assert (tri.num_iters, tri.realign_iters, tri.max_gauss, tri.max_iter_inc) == (25, (10, 15, 20), 10000, 20)
    assert tri.acc_block_frames == 30000 and tri.align.map_oov and tri.align.backend == "torch"
    tri = _step_call(monkeypatch, gmm_steps, "train_tri_step", [
        "gmm", "tri", *gmm, "--ali-dir", "A", "--exp-dir", "E", "--realign-iters", "2,4", "--max-gauss", "90",
        "--no-map-oov", "--sil-prob", "0.3"])[0][4]
    assert (tri.num_iters, tri.realign_iters, tri.max_gauss) == (25, (2, 4), 90)
    assert not tri.align.map_oov and tri.align.sil_prob == 0.3 and tri.align.acoustic_scale == 0.1
    args, kwargs = _step_call(monkeypatch, gmm_steps, "align_step", [
        "gmm", "align", *gmm, "--model-dir", "M", "--out-dir", "O", "--align-backend", "k2"])
    align = args[4]
    assert (align.acoustic_scale, align.sil_prob, align.batch_frames, align.backend) == (0.1, 0.5, 20000, "k2")
    assert align.map_oov and kwargs["nj"] == 1
    args, _ = _step_call(monkeypatch, gmm_steps, "align_step", [
        "gmm", "align", *gmm, "--model-dir", "M", "--out-dir", "O", "--no-map-oov"])
    assert not args[4].map_oov
    peer = _step_call(monkeypatch, gmm_steps, "kaldi_compare_step", [
        "gmm", "kaldi-compare", *gmm, "--model-dir", "M", "--peer-path", "P", "--out", "O"])[0][5]
    assert (peer.num_iters, peer.realign_iters[-1], peer.max_gauss, peer.max_iter_inc) == (20, 18, 300, 15)

    nnet = ["--cuts", "C", "--gmm-dir", "G", "--exp-dir", "E"]
    args, kwargs = _step_call(monkeypatch, nnet_cli, "train_step", ["nnet", "train", *nnet])
    assert args[3].progress and kwargs["stream"] is None
    assert kwargs["split"] == SplitOpts(dev_fraction=0.05, dev_seed=0, subset_fraction=1.0, subset_seed=0)
    args, kwargs = _step_call(monkeypatch, nnet_cli, "train_step", [
        "nnet", "train", *nnet, "--no-progress", "--stream-frames", "S", "--buffer-frames", "1000"])
    assert not args[3].progress and kwargs["stream"].dir == Path("S") and kwargs["stream"].buffer_frames == 1000
    assert kwargs["stream"].shard_frames == 1_000_000
    _, kwargs = _step_call(monkeypatch, nnet_cli, "eval_step", ["nnet", "eval", "--models", "m", "--cuts", "C",
                                                                "--out", "O"])
    assert kwargs["split"].dev_fraction == 0.0 and kwargs["dtype"] == "auto"

    from asr_kd.decode import steps as decode_steps  # k2: only this part of the file needs it

    args, _ = _step_call(monkeypatch, decode_steps, "decode_cuts_step", [
        "decode", "--model", "M", "--lang-dir", "L", "--lm", "G", "--cuts", "C", "--out-dir", "O",
        "--min-active", "20"])
    opts = args[5]
    assert (opts.acoustic_scale, opts.search_beam, opts.output_beam) == (0.1, 13.0, 6.0)
    assert (opts.min_active_states, opts.max_active_states) == (20, 7000)
    with pytest.raises(ValueError, match="no fields"):
        config_flags(TrainOpts, fields=("num_iter",))


def test_report_versus_compares_two_decodes_by_bootstrap(tmp_path):
    """asr-kd report --versus: the row gets the WER difference, its interval and p_improvement;
    few speakers are resampled as utterances, decodes of other utterances are refused in one line."""
    from lhotse import CutSet, MonoCut, SupervisionSegment

    from asr_kd.score import score_wer

    texts = {f"u{i}": "a b c d".split() for i in range(60)}
    CutSet.from_cuts(MonoCut(id=u, start=0, duration=1.0, channel=0, supervisions=[
        SupervisionSegment(id=u, recording_id=u, start=0, duration=1.0, text=" ".join(t), speaker=f"s{i % 3}")])
        for i, (u, t) in enumerate(texts.items())).to_file(tmp_path / "cuts.jsonl.gz")
    for name, hyps in (("a", {u: "a x x d".split() for u in texts}), ("b", dict(texts))):
        d = tmp_path / name
        score_wer(texts, hyps, d, "9_0.5")
        (d / "decode.json").write_text(json.dumps({
            "cuts": str(tmp_path / "cuts.jsonl.gz"), "best": "9_0.5", "wer": 50.0 if name == "a" else 0.0,
            "utterances": 60, "best_lm_weight": 9.0, "empty_lattices": 0, "real_time_factor": 0.1,
            "by_lm_weight": {"9_0.5": {"ins": 0, "del": 0, "sub": 0, "ref_words": 240}}}))
    args = ["report", "--recipe-dir", str(tmp_path), "--table", "T", "--system", "b vs a", "--set", "test",
            "--command", "x"]
    assert main(args + ["--decode-dir", str(tmp_path / "b"), "--versus", str(tmp_path / "a")]) == 0
    row = json.loads((tmp_path / "results.json").read_text())["rows"][0]
    assert row["wer_delta"] == -50.0 and row["p_improvement"] == 100.0 and row["resampled"] == "60 utterances"
    assert row["delta_ci95_lo"] == row["delta_ci95_hi"] == -50.0 and row["versus"] == str(tmp_path / "a")
    assert row["wer"] == 0.0 and row["versus_wer"] == 50.0 and "ins" not in row and "frame_accuracy" not in row
    (tmp_path / "a" / "per_utt_9_0.5").write_text("u0 #csid 4 0 0 0\n")
    assert main(args + ["--decode-dir", str(tmp_path / "b"), "--versus", str(tmp_path / "a")]) == 1


def test_report_versus_and_gain_recovered_in_frame_accuracy(tmp_path):
    """--versus with asr-kd nnet eval JSONs compares frame accuracy (the difference's sign is the
    accuracy's, not the error rate's); --gain-recovered gives a student's share of the ensemble's
    gain with its interval; an eval JSON without per-utterance counts is refused in one line."""
    def eval_json(name, correct):
        per_utt = {f"u{i}": [c, 100] for i, c in enumerate(correct)}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"frame_accuracy": sum(correct) / len(correct), "frames": 100 * len(correct),
                                    "per_utterance": per_utt, "speakers": {u: f"s{u[1:]}" for u in per_utt}}))
        return path

    base = eval_json("base", [40 + i % 5 for i in range(20)])
    ens = eval_json("ens", [50 + i % 5 for i in range(20)])
    student = eval_json("student", [48 + i % 5 for i in range(20)])
    args = ["report", "--recipe-dir", str(tmp_path), "--set", "test", "--command", "x"]
    assert main(args + ["--table", "F", "--system", "ens vs base", "--frame-accuracy", str(ens),
                        "--versus", str(base)]) == 0
    assert main(args + ["--table", "G", "--system", "student", "--frame-accuracy", str(student),
                        "--gain-recovered", str(base), str(ens)]) == 0
    versus, gain = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert versus["frame_accuracy_delta"] == 10.0 and versus["delta_ci95_lo"] == versus["delta_ci95_hi"] == 10.0
    assert versus["p_improvement"] == 100.0 and versus["resampled"] == "20 speakers" and "wer" not in versus
    assert gain["gain_recovered_pct"] == gain["ci95_lo"] == gain["ci95_hi"] == 80.0
    assert gain["measure"] == "frame_accuracy"
    base.write_text(json.dumps({"frame_accuracy": 42.0, "frames": 2000}))
    assert main(args + ["--table", "F", "--system", "ens vs base", "--frame-accuracy", str(ens),
                        "--versus", str(base)]) == 1
    assert main(args + ["--table", "F", "--system", "ens vs base", "--decode-dir", str(tmp_path),
                        "--versus", str(base)]) == 1
