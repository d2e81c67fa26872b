"""The ``asr-kd`` command: a thin face over the library, one subcommand per pipeline step.

Each subcommand lives in the module that does the work; that module exposes
``add_arguments(parser)`` and ``run(args)``. Modules are imported only when their command runs,
so ``asr-kd --help`` stays fast and a broken optional stack (e.g. k2) breaks only its commands.

A user error (a missing, truncated or corrupt file, a bad value: see :data:`USER_ERRORS`) prints
one line ``asr-kd <command>: error: <message>`` and exits 1; ``asr-kd -v`` shows its traceback.
Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import gzip
import importlib
import logging
import sys
import zlib

from asr_kd import cpu
from asr_kd.utils import UserError, error_text, setup_logging

# Exceptions that report bad input rather than a bug (EOFError and the gzip/zlib errors come from
# a truncated or corrupt .gz file).
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, ValueError,
               FloatingPointError, EOFError, gzip.BadGzipFile, zlib.error)

# name -> (module, one-line help). Order is the pipeline's order.
COMMANDS = {
    "download": ("asr_kd.data.download", "download a public corpus (skipped when already there)"),
    "prepare": ("asr_kd.data.corpora", "prepare lhotse manifests for a corpus"),
    "perturb": ("asr_kd.data.perturb", "speed-perturbed copies of a cuts manifest (0.9/1.0/1.1, Kaldi's sp prefix)"),
    "fbank": ("asr_kd.data.features", "compute 40-dim log-mel fbank features"),
    "lang": ("asr_kd.lang.prepare_lang", "build the lexicon, phone/word tables and L.fst"),
    "lm": ("asr_kd.lang.lm", "estimate an n-gram LM from training transcripts; ARPA and G.fst"),
    "gmm": ("asr_kd.hmm.cli", "GMM-HMM training (mono, tri), forced alignment, senone labels"),
    "nnet": ("asr_kd.nnet.cli", "train DNN teachers, distill students, evaluate frame accuracy"),
    "decode": ("asr_kd.decode.cli", "decode a data set or audio files with k2 over HCLG; WER"),
    "export": ("asr_kd.export", "a trained model (and its lang, LM, HCLG) as one directory that decodes anywhere"),
    "report": ("asr_kd.report", "add a row to a recipe's RESULTS.md / results.json from stage outputs"),
    "mnist": ("asr_kd.vision.mnist_cli", "MNIST distillation experiments (paper section 3)"),
    "specialists": ("asr_kd.vision.specialists_cli", "CIFAR-100 generalist + specialists (sections 5-6)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-kd",
        description="Knowledge distillation for hybrid DNN-HMM speech recognition.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads of this process (0: torch's default, one per core); "
                             "give 1 to each of N jobs run side by side on N cores")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module)
        p.set_defaults(_parser=p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Parse the command name first (without --help, so that the command's own help shows its
    # arguments), then let its module add them and parse for real.
    args, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    if not getattr(args, "command", None) and ("-h" in argv or "--help" in argv):
        parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    module.add_arguments(args._parser)
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("asr_kd").info(cpu.describe())
    if args.threads:
        # Imported here, not at the top: `asr-kd --help` does not load torch (its command modules do).
        import torch
        torch.set_num_threads(args.threads)
    try:
        return int(module.run(args) or 0)
    except (*USER_ERRORS, SystemExit, KeyboardInterrupt) as e:
        if isinstance(e, SystemExit) and not isinstance(e.code, str):
            raise  # argparse's exit, or an exit status: not a message
        if args.verbose:
            raise
        message = "interrupted" if isinstance(e, KeyboardInterrupt) else error_text(e)
        if isinstance(e, (EOFError, gzip.BadGzipFile, zlib.error)):
            message = f"{type(e).__name__}: {message} (a truncated or corrupt .gz file?)"
        rc = 130 if isinstance(e, KeyboardInterrupt) else 1
    # Printed once the failed frames are freed, so that a progress bar they held has closed its line.
    print(f"{command_name(args)}: error: {message}", file=sys.stderr)
    return rc


def command_name(args) -> str:
    """The command and its step (a ``*_step`` or ``step`` argument), e.g. ``asr-kd gmm mono``."""
    step = next((v for k, v in vars(args).items() if k == "step" or k.endswith("_step")), None)
    return " ".join(["asr-kd", args.command] + ([str(step)] if step else []))


if __name__ == "__main__":
    sys.exit(main())
