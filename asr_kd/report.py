"""``asr-kd report``: turn a stage's output files into rows of RESULTS.md / results.json.

A row is read from files the stages wrote, never typed: WER from a decode directory's
``decode.json``, frame accuracy from an ``asr-kd nnet eval`` JSON, training facts from a model's
``summary.json``. For the distillation table, each distilled row also gets the share of the
ensemble's frame-accuracy gain over the baseline that it recovers (the paper's ">80%"). With
``--versus DIR`` a row compares its decode with another system's decode of the same set by a
paired bootstrap over the set's speakers (:func:`asr_kd.score.paired_bootstrap`): the WER
difference, its 95% interval and how often the row's system wins on a resampled set.

    asr-kd report --table "Table 1" --system dnn-baseline --set test \\
        --decode-dir exp/dnn_seed1/decode_test --frame-accuracy exp/dnn_seed1/eval_test.json \\
        --command "cd recipes/speechocean762 && ./run.sh"
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

from asr_kd.results import paper_note, remove_rows, update_results
from asr_kd.score import paired_bootstrap, utterance_errors
from asr_kd.utils import UserError, error_text, iter_cuts, read_json

log = logging.getLogger(__name__)


def row_from_files(system: str, set_name: str, decode_dir: Optional[Path] = None,
                   frame_accuracy: Optional[Path] = None, summary: Optional[Path] = None,
                   speed_dir: Optional[Path] = None, **extra) -> dict:
    row = {"system": system, "set": set_name, "wer": None, "frame_accuracy": None}
    if speed_dir is not None:  # what the model costs to run: its size and speed in that decode
        d = read_json(Path(speed_dir) / "decode.json")
        per_hour = lambda rtf: None if rtf is None else round(3600 * rtf, 1)  # noqa: E731  (seconds per hour of audio)
        row.update(parameters=d.get("parameters"), speed_on=f"{d['cuts']}, {d['nj']} job(s) x {d.get('threads')} thread(s)",
                   acoustic_s_per_h=per_hour(d.get("acoustic_real_time_factor")),
                   search_s_per_h=per_hour(d.get("search_real_time_factor")), total_s_per_h=per_hour(d["real_time_factor"]))
    if decode_dir is not None:
        d = read_json(Path(decode_dir) / "decode.json")
        row.update(wer=d["wer"], utterances=d["utterances"], lm_weight=d["best_lm_weight"],
                   empty_lattices=d["empty_lattices"], decode_rtf=d["real_time_factor"])
        if d.get("excluded_empty_refs"):
            row["excluded_empty_refs"] = d["excluded_empty_refs"]
        if d.get("subset_every", 1) > 1:
            row["wer_on"] = f"every {d['subset_every']}th utterance"
        if "best_word_ins_penalty" in d:
            row["word_ins_penalty"] = d["best_word_ins_penalty"]
        w = d["by_lm_weight"][d.get("best", f"{d['best_lm_weight']:g}")]
        row.update(ins=w["ins"], dels=w["del"], subs=w["sub"], ref_words=w["ref_words"])
    if frame_accuracy is not None:
        f = read_json(frame_accuracy)
        row["frame_accuracy"] = round(f["frame_accuracy"], 2)
        row["frames"] = f["frames"]
    if summary is not None:
        s = read_json(summary)
        row.update(parameters=s.get("parameters"), epochs=s.get("epochs_run"), train_wall_s=s.get("wall_s"),
                   stopped_early=s.get("stopped_early"))
        best = next((h for h in s.get("history", []) if h["epoch"] == s.get("best_epoch")), None)
        if best is not None:  # the exported model's epoch: how far train and dev accuracy are apart
            row.update(best_epoch=best["epoch"], train_frame_acc_at_best=round(best["train_frame_accuracy"], 2),
                       dev_frame_acc_at_best=round(best["dev_frame_accuracy"], 2))
    row.update({k: v for k, v in extra.items() if v is not None})
    return row


MIN_SPEAKERS = 10  # --versus resamples speakers when the set has at least this many


def best_per_utt(decode_dir: Path) -> Path:
    """The per-utterance scoring of a decode directory at its chosen LM weight and penalty."""
    d = read_json(Path(decode_dir) / "decode.json")
    best = d["best"] if "best" in d else f"{d['best_lm_weight']:g}"
    return Path(decode_dir) / f"per_utt_{best}"


def versus_fields(decode_dir: Path, versus: Path, samples: int = 10000, seed: int = 0) -> dict:
    """Columns comparing ``decode_dir`` (B) with ``versus`` (A), decodes of the same utterances: a
    paired bootstrap over the speakers of the decoded cuts, or over utterances where they name fewer
    than :data:`MIN_SPEAKERS` (drawing from a handful of speakers says little)."""
    try:
        a, b = utterance_errors(best_per_utt(versus)), utterance_errors(best_per_utt(decode_dir))
        cuts = read_json(Path(decode_dir) / "decode.json")["cuts"]
        speakers = {c.id: c.supervisions[0].speaker for c in iter_cuts(cuts)
                    if c.id in b and c.supervisions and c.supervisions[0].speaker}
        if len(set(speakers.values())) < MIN_SPEAKERS:  # among the scored utterances
            speakers = {}
        r = paired_bootstrap(a, b, samples, seed, groups=speakers or None)
    except ValueError as e:
        raise UserError(f"{decode_dir} versus {versus}: {e}") from e
    return {"versus": str(versus), "versus_wer": round(r.wer_a, 2), "wer_delta": round(r.delta, 2),
            "delta_ci95_lo": round(r.delta_ci95[0], 2), "delta_ci95_hi": round(r.delta_ci95[1], 2),
            "p_improvement": round(r.p_improvement, 1),
            "resampled": f"{r.units} {'speakers' if speakers else 'utterances'}"}


def add_gain_recovered(rows: list) -> None:
    """The gain of each distilled row over the baseline, as a % of the ensemble's gain: in frame
    accuracy (gain_recovered_pct, the paper's measure) and in WER (wer_gain_recovered_pct); none
    where the ensemble is no better than the baseline (there is no gain to recover)."""
    by = {(r["system"], r["set"]): r for r in rows}
    for r in rows:
        if not r["system"].startswith("dnn-distilled"):
            continue
        base = by.get(("dnn-baseline", r["set"]))
        ens = next((x for (s, st), x in by.items() if s.startswith("dnn-ensemble") and st == r["set"]), None)
        if not (base and ens):
            continue
        for key, out, sign in (("frame_accuracy", "gain_recovered_pct", 1), ("wer", "wer_gain_recovered_pct", -1)):
            if None not in (r.get(key), base.get(key), ens.get(key)):
                gain = ens[key] - base[key]
                r[out] = round(100.0 * (r[key] - base[key]) / gain, 1) if sign * gain > 0 else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe-dir", type=Path, default=Path("."), help="where RESULTS.md and results.json are")
    parser.add_argument("--table", required=True, help="table title (one section of RESULTS.md)")
    parser.add_argument("--system", required=True, help="row name; a row of the same system and set is replaced")
    parser.add_argument("--set", dest="set_name", required=True, choices=["train", "dev", "test", "all"],
                        help="which set the row measures (all: the whole run, e.g. a stage's wall time)")
    parser.add_argument("--decode-dir", type=Path, help="a decode directory: WER, LM weight, RTF from its decode.json")
    parser.add_argument("--frame-accuracy", type=Path, help="JSON from asr-kd nnet eval")
    parser.add_argument("--summary", type=Path, help="a model's summary.json")
    parser.add_argument("--speed-dir", type=Path,
                        help="a decode directory whose decode.json gives the model's parameters and its speed there "
                             "(seconds per hour of audio: acoustic model, search, total), e.g. one decoded with --nj 1 "
                             "on one thread")
    parser.add_argument("--versus", type=Path, metavar="DIR",
                        help="with --decode-dir: another system's decode of the same set; the row gets the WER "
                             "difference (this - that), its 95%% interval and p_improvement (%% of 10000 sets, resampled "
                             "by speaker where the set has 10 or more, on which this system has the lower WER)")
    parser.add_argument("--field", nargs="*", default=[], metavar="KEY=VALUE", help="extra columns")
    parser.add_argument("--note", help="text under the table's heading")
    parser.add_argument("--paper", type=Path,
                        help="a paper.json (reference numbers and note templates, e.g. ../../local/paper.json): "
                             "the note under the heading is its --note-key template filled in")
    parser.add_argument("--note-key", help="with --paper: which of its notes (e.g. table1)")
    # dest: not "command", which names the asr-kd subcommand (error messages say "asr-kd report: ...")
    parser.add_argument("--command", dest="producing_command",
                        help="the exact command that produced the row (required unless --remove)")
    parser.add_argument("--remove", action="store_true",
                        help="remove the row of --system on --set from --table instead (a configuration no longer run)")


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def run(args) -> int:
    if args.remove:
        n = remove_rows(args.recipe_dir, args.table, args.system, args.set_name)
        log.info(f"{args.recipe_dir}/RESULTS.md: {args.table}: removed {n} row(s) of {args.system} on {args.set_name}")
        return 0
    if not args.producing_command:
        raise UserError("--command is required: the exact command that produced the row")
    extra = {}
    for kv in args.field:
        k, _, v = kv.partition("=")
        extra[k] = _value(v)
    row = row_from_files(args.system, args.set_name, args.decode_dir, args.frame_accuracy, args.summary,
                         args.speed_dir, **extra)
    columns = ["system", "set", "wer", "frame_accuracy"]
    if args.versus is not None:  # a comparison: the two WERs and the bootstrap, not the decode's details
        if args.decode_dir is None or args.set_name == "all":
            raise UserError("--versus compares with the row's --decode-dir on one set: give both, and a set")
        row = {"system": row["system"], "set": row["set"], "wer": row["wer"], **extra,
               **versus_fields(args.decode_dir, args.versus)}
        columns = ["system", "set", "wer"]
    row["command"] = args.producing_command
    if args.set_name == "all":  # a row about the whole run (e.g. a stage's wall time) has no scores
        del row["wer"], row["frame_accuracy"]
        columns = ["system", "set"]
    note = args.note
    if (args.paper is None) != (args.note_key is None):
        raise UserError("--paper and --note-key go together")
    if args.paper is not None:
        if args.note:
            raise UserError("give --note or --paper with --note-key, not both")
        try:
            note = paper_note(args.paper, args.note_key)
        except KeyError as e:
            raise UserError(error_text(e)) from e
    notes = {args.table: note} if note else None
    # The recovered gain is computed from the table's rows as they are under the results lock.
    update_results(args.recipe_dir, [row], args.table, notes=notes, columns=columns,
                   finalize=add_gain_recovered if args.table.startswith("Table 1") else None)
    scores = ", ".join(f"{k} {row[k]}" for k in ("wer", "frame_accuracy") if row.get(k) is not None)
    log.info(f"{args.recipe_dir}/RESULTS.md: {args.table}: {row['system']} on {row['set']}{': ' + scores if scores else ''}")
    return 0
