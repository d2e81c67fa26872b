"""``asr-kd mnist <step>``: the paper's MNIST experiments (section 3), one step per recipe stage.

The steps and every setting are in :mod:`asr_kd.vision.mnist_steps` (its :class:`MnistConfig`
fields are the flags below); ``all`` runs them in order. A setting's flag overrides the full
run's value, or ``--quick``'s (a tiny subset and few epochs, for tests and smoke runs).
"""
from __future__ import annotations

import argparse

from asr_kd.config import Flag, add_flags, command_line, config_flags, config_values, quick_values
from asr_kd.vision.mnist_steps import STEPS, MnistConfig, run_steps

QUICK = Flag("quick", "--quick", False, "tiny subset and few epochs (minutes)", is_switch=True)
FLAGS = config_flags(MnistConfig, preset=True, extra_before={"force": QUICK})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=STEPS + ("all",), help="which experiment to run")
    add_flags(parser, FLAGS)


def config(args: argparse.Namespace) -> MnistConfig:
    """The config of parsed flags: the full run's or ``--quick``'s settings, then the flags given."""
    preset = quick_values(MnistConfig) if args.quick else {}
    return MnistConfig(**{**preset, **config_values(MnistConfig, args)})


def run(args: argparse.Namespace) -> int:
    command = command_line(["asr-kd", "mnist", args.step], args, FLAGS)
    run_steps(config(args), STEPS if args.step == "all" else [args.step], command)
    return 0
