"""``asr-kd report``: turn a stage's output files into rows of RESULTS.md / results.json.

A row is read from files the stages wrote, never typed: WER from a decode directory's
``decode.json``, frame accuracy from an ``asr-kd nnet eval`` JSON, training facts from a model's
``summary.json``. For the distillation table, each distilled row also gets the share of the
ensemble's frame-accuracy gain over the baseline that it recovers (the paper's ">80%"). With
``--versus DIR`` a row compares its decode with another system's decode of the same set by a
paired bootstrap over the set's speakers (:func:`asr_kd.score.paired_bootstrap`): the WER
difference, its 95% interval and how often the row's system wins on a resampled set;
``--versus JSON`` does the same for frame accuracy (``asr-kd nnet eval`` outputs), and
``--gain-recovered BASELINE ENSEMBLE`` gives a student's recovered share of the ensemble's gain
with its interval (:func:`asr_kd.score.gain_recovered_bootstrap`).

    asr-kd report --table "Table 1" --system dnn-baseline --set test \\
        --decode-dir exp/dnn_seed1/decode_test --frame-accuracy exp/dnn_seed1/eval_test.json \\
        --command "cd recipes/speechocean762 && ./run.sh"
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional, Tuple

from asr_kd.results import paper_note, remove_rows, update_results
from asr_kd.score import gain_recovered_bootstrap, paired_bootstrap, utterance_errors, utterance_frame_errors
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
        row["frame_accuracy"] = round(f["frame_accuracy"], 4)  # RESULTS.md shows 2 decimals; ratios use these
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


def errors_of(scored: Path) -> Tuple[dict, dict]:
    """``({utterance: (errors, reference count)}, {utterance: speaker})`` of a decode directory
    (word errors at its chosen LM weight) or of an ``asr-kd nnet eval`` JSON (misclassified frames)."""
    if Path(scored).is_dir():
        errors = utterance_errors(best_per_utt(scored))
        cuts = read_json(Path(scored) / "decode.json")["cuts"]
        return errors, {c.id: c.supervisions[0].speaker for c in iter_cuts(cuts)
                        if c.id in errors and c.supervisions and c.supervisions[0].speaker}
    return utterance_frame_errors(scored)


def _speaker_groups(speakers: dict, scored) -> Optional[dict]:
    """The speakers of the scored utterances, or None where they are fewer than :data:`MIN_SPEAKERS`
    (drawing from a handful of speakers says little: utterances are drawn instead)."""
    groups = {u: speakers[u] for u in scored if speakers.get(u)}
    return groups if len(set(groups.values())) >= MIN_SPEAKERS else None


def _resampled(units: int, groups: Optional[dict]) -> str:
    """What a bootstrap drew: ``"125 speakers"`` or ``"500 utterances"``."""
    return f"{units} {'speakers' if groups else 'utterances'}"


def versus_fields(scored: Path, versus: Path, samples: int = 10000, seed: int = 0) -> dict:
    """Columns comparing ``scored`` (B) with ``versus`` (A), both decodes of the same utterances (WER)
    or both ``asr-kd nnet eval`` JSONs of the same frames (frame accuracy): a paired bootstrap over
    the speakers, or over utterances where they are fewer than :data:`MIN_SPEAKERS`."""
    try:
        (a, _), (b, speakers) = errors_of(versus), errors_of(scored)
        groups = _speaker_groups(speakers, b)
        r = paired_bootstrap(a, b, samples, seed, groups=groups)
    except ValueError as e:
        raise UserError(f"{scored} versus {versus}: {e}") from e
    resampled = _resampled(r.units, groups)
    if Path(scored).is_dir():
        return {"versus": str(versus), "versus_wer": round(r.wer_a, 2), "wer_delta": round(r.delta, 2),
                "delta_ci95_lo": round(r.delta_ci95[0], 2), "delta_ci95_hi": round(r.delta_ci95[1], 2),
                "p_improvement": round(r.p_improvement, 1), "resampled": resampled}
    # frame errors: accuracy = 100 - error rate, so the difference and its interval change sign
    return {"versus": str(versus), "versus_frame_accuracy": round(100 - r.wer_a, 2),
            "frame_accuracy_delta": round(-r.delta, 2), "delta_ci95_lo": round(-r.delta_ci95[1], 2),
            "delta_ci95_hi": round(-r.delta_ci95[0], 2), "p_improvement": round(r.p_improvement, 1),
            "resampled": resampled}


def gain_recovered_fields(student: Path, baseline: Path, ensemble: Path, samples: int = 10000, seed: int = 0) -> dict:
    """The share of the ensemble's gain over the baseline that ``student`` recovers, with its 95%
    interval over resampled speakers (:func:`asr_kd.score.gain_recovered_bootstrap`): in WER for
    decode directories, in frame accuracy for ``asr-kd nnet eval`` JSONs."""
    try:
        (s, speakers), (b, _), (e, _) = errors_of(student), errors_of(baseline), errors_of(ensemble)
        groups = _speaker_groups(speakers, s)
        r = gain_recovered_bootstrap(b, e, s, samples, seed, groups=groups)
    except ValueError as err:
        raise UserError(f"{student} against {baseline} and {ensemble}: {err}") from err
    pct, lo, hi = (round(v, 1) + 0.0 for v in (r.pct, *r.ci95))  # + 0.0: no -0.0
    return {"measure": "wer" if Path(student).is_dir() else "frame_accuracy", "baseline": str(baseline),
            "ensemble": str(ensemble), "gain_recovered_pct": pct, "ci95_lo": lo, "ci95_hi": hi,
            "resampled": _resampled(r.units, groups)}


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
            s, b, e = (_exact(x, key) for x in (r, base, ens))
            if None not in (s, b, e):
                r[out] = round(100.0 * (s - b) / (e - b), 1) + 0.0 if sign * (e - b) > 0 else None  # no -0.0


def _exact(row: dict, key: str) -> Optional[float]:
    """A row's WER from its error counts (``wer`` itself is rounded), or its ``key``."""
    if key == "wer" and None not in (row.get("ins"), row.get("dels"), row.get("subs")) and row.get("ref_words"):
        return 100.0 * (row["ins"] + row["dels"] + row["subs"]) / row["ref_words"]
    return row.get(key)


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
    parser.add_argument("--versus", type=Path, metavar="DIR|JSON",
                        help="with --decode-dir: another system's decode of the same set; the row gets the WER "
                             "difference (this - that), its 95%% interval and p_improvement (%% of 10000 sets, resampled "
                             "by speaker where the set has 10 or more, on which this system has the lower WER). With "
                             "--frame-accuracy: another system's asr-kd nnet eval JSON of the same set, and the same "
                             "columns for frame accuracy (p_improvement: %% of sets on which this system's is higher)")
    parser.add_argument("--gain-recovered", type=Path, nargs=2, metavar=("BASELINE", "ENSEMBLE"),
                        help="the row's system is a student: the share of ENSEMBLE's gain over BASELINE it recovers, "
                             "with a 95%% interval resampled as --versus: in WER (decode directories, with --decode-dir) "
                             "or in frame accuracy (asr-kd nnet eval JSONs, with --frame-accuracy)")
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
    if args.versus is not None or args.gain_recovered is not None:
        # a comparison: the two scores and the bootstrap, not the decode's details
        if args.versus is not None and args.gain_recovered is not None:
            raise UserError("--versus and --gain-recovered make different rows: give one")
        others = [args.versus] if args.versus is not None else list(args.gain_recovered)
        by_dir = all(p.is_dir() for p in others)
        mine, key = (args.decode_dir, "wer") if by_dir else (args.frame_accuracy, "frame_accuracy")
        if mine is None or args.set_name == "all" or not (by_dir or all(p.is_file() for p in others)):
            raise UserError("--versus and --gain-recovered compare with the row's --decode-dir (give decode directories) "
                            "or its --frame-accuracy (give asr-kd nnet eval JSONs), on one set")
        fields = (versus_fields(mine, args.versus) if args.versus is not None
                  else gain_recovered_fields(mine, *args.gain_recovered))
        row = {"system": row["system"], "set": row["set"], key: row[key], **extra, **fields}
        columns = ["system", "set", key]
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
