"""``asr-kd decode``: decode a data set (manifests) or audio files with a GMM or DNN model.

Data set::

    asr-kd decode --model exp/tri1 --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --cuts data/fbank/X_cuts_test.jsonl.gz --out-dir exp/tri1/decode_test --lm-weights 7 9 11 13 15 17

writes ``wer_{lmwt}``, ``per_utt_{lmwt}``, ``errs_{lmwt}``, ``hyp_{lmwt}.txt`` per LM weight (with
``--word-ins-penalties``, Kaldi's score.sh grid, per ``{lmwt}_{penalty}`` for the non-zero penalties)
and ``decode.json`` (scored utterances, empty lattices, real-time factor, the best LM weight and
penalty). Cuts without features (``asr-kd prepare kaldi`` manifests) are featurized from their audio
as the model's training data was (its rate and fbank settings). Tune both on a dev set and pass the chosen ones to the test set with ``--lm-weights W
--word-ins-penalties P``.

A model exported by ``asr-kd export`` decodes from its directory (or .tar.gz) alone, with the lang,
LM and HCLG it holds (``--lang-dir``/``--lm`` replace them)::

    asr-kd decode --model-dir export/dnn_distilled --cuts data/fbank/X_cuts_test.jsonl.gz --out-dir decode_test

Audio files (wav, flac, ogg/opus) print one transcript per file::

    asr-kd decode --model exp/dnn_distilled_T2/final.pt --lang-dir data/lang --lm data/lm/G_3gram.fst \\
        --audio a.wav b.flac

They are featurized as the model's training data was (its recorded sampling rate and fbank
settings: other rates are resampled, several channels mixed down). A file that cannot be decoded
(unreadable, empty, no samples, too short for one frame, non-finite) is named in one warning with
the reason and skipped; the others are still transcribed, and the exit status is then 1. A wav
file shorter than its header declares is decoded as it is, with a warning.

The decoding itself is :mod:`asr_kd.decode.steps` (:func:`~asr_kd.decode.steps.decode_cuts_step`,
:func:`~asr_kd.decode.steps.transcribe_audio_step`); this module parses the options and calls one.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from asr_kd.config import add_flags, config_flags, config_values
from asr_kd.decode import steps
from asr_kd.decode.decoder import DecodeOpts
from asr_kd.export import decode_inputs
from asr_kd.utils import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", nargs="+",
                       help="a GMM dir (final.mdl), or DNN final.pt file(s): several make an ensemble")
    model.add_argument("--model-dir", type=Path,
                       help="a directory (or .tar.gz) written by asr-kd export: its model, and its lang, LM and "
                            "graph where --lang-dir, --lm, --graph-dir are not given")
    parser.add_argument("--priors", type=Path,
                        help="DNNs: a JSON file of senone log_priors to divide the posteriors by (asr-kd nnet priors: "
                             "the model's own mean posterior) instead of the GMM alignment's, saved in the model")
    parser.add_argument("--lang-dir", type=Path,
                        help="lang directory (words.txt, L_disambig.fst); required with --model")
    parser.add_argument("--lm", type=Path, help="G.fst (from asr-kd lm); required with --model")
    parser.add_argument("--graph-dir", type=Path,
                        help="HCLG cache (default: <dir of the GMM that defines the senones>/graph_<LM name without "
                             "'G_'>, e.g. exp/tri1/graph_3gram for G_3gram.fst, for the GMM and for DNNs trained on its "
                             "labels; with --model-dir: the export's graph, or <export>/graph_<LM> for a lang or LM "
                             "of your own)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--cuts", type=Path, help="cuts with fbank features and reference transcripts")
    src.add_argument("--audio", type=Path, nargs="+",
                     help="audio files to transcribe (resampled to the model's rate, mixed down to mono); a file that "
                          "cannot be decoded is named in a warning and skipped, and the exit status is then 1")
    parser.add_argument("--out-dir", type=Path, help="decode directory (required with --cuts)")
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[10.0],
                        help="LM weights to score (lattice rescoring; 1/acoustic scale is the first pass)")
    parser.add_argument("--word-ins-penalties", type=float, nargs="+", default=[0.0],
                        help="word insertion penalties to score with each LM weight (Kaldi's score.sh: 0.0 0.5 1.0)")
    add_flags(parser, config_flags(DecodeOpts))
    parser.add_argument("--tuned-on", type=Path, metavar="DEV_DECODE_DIR",
                        help="use the LM weight and word insertion penalty that were best in this decode directory "
                             "(e.g. exp/tri1/decode_dev); replaces --lm-weights and --word-ins-penalties")
    parser.add_argument("--nj", type=int, default=1,
                        help="parallel decoding jobs (processes with one thread each; CMVN is fitted on the whole "
                             "set first, so the words are those of one job)")
    parser.add_argument("--subset-every", type=int, default=1,
                        help="decode only every K-th utterance (sorted by id): a fixed, recorded test subset for "
                             "slow CPU runs; decode.json and the WER line name it")
    parser.add_argument("--force", action="store_true", help="decode again even if --out-dir has a decode.json newer than its inputs")


def run(args) -> int:
    if getattr(args, "model_dir", None) is not None:
        decode_inputs(args)  # the export's model, and its lang, LM and graph where not given
    for flag in ("lang_dir", "lm"):
        if getattr(args, flag) is None:
            raise ValueError(f"--{flag.replace('_', '-')} is required with --model "
                             "(an export's --model-dir may hold it)")
    opts = DecodeOpts(**config_values(DecodeOpts, args))
    if args.audio:
        return steps.transcribe_audio_step(args.model, args.lang_dir, args.lm, args.audio, opts, args.lm_weights[0],
                                           args.word_ins_penalties[0], graph_dir=args.graph_dir,
                                           tuned_on=args.tuned_on, priors=args.priors)
    if args.out_dir is None:
        raise UserError("--out-dir is required with --cuts")
    steps.decode_cuts_step(args.model, args.lang_dir, args.lm, args.cuts, args.out_dir, opts, args.lm_weights,
                           args.word_ins_penalties, graph_dir=args.graph_dir, tuned_on=args.tuned_on, nj=args.nj,
                           subset_every=args.subset_every, force=args.force, model_dir=getattr(args, "model_dir", None),
                           priors=args.priors)
    return 0
