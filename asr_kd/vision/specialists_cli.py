"""``asr-kd specialists <step>``: the CIFAR-100 generalist + specialists recipe (paper sections 5, 6.1).

The steps and every setting are in :mod:`asr_kd.vision.specialist_steps` (its
:class:`SpecialistsConfig` fields are the flags below). ``--quick`` sets tiny sizes that run in
minutes; they replace the sizes given with it.
"""
from __future__ import annotations

import argparse

from asr_kd.config import Flag, add_flags, command_line, config_flags, config_values, quick_values
from asr_kd.vision.specialist_steps import DATA, STEPS, SpecialistsConfig, run_step

QUICK = Flag("quick", "--quick", False, f"tiny settings that run in minutes: {quick_values(SpecialistsConfig)}",
             is_switch=True, group=DATA)
FLAGS = config_flags(SpecialistsConfig, extra_before={"force": QUICK})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=STEPS, help="the recipe step to run")
    add_flags(parser, FLAGS)


def config(args: argparse.Namespace) -> SpecialistsConfig:
    """The config of parsed flags (with ``--quick``, its sizes replace those given)."""
    quick = quick_values(SpecialistsConfig) if args.quick else {}
    return SpecialistsConfig(**{**config_values(SpecialistsConfig, args), **quick})


def run(args: argparse.Namespace) -> int:
    command = command_line(["asr-kd", "specialists", args.step], args, FLAGS)
    run_step(config(args), args.step, command)
    return 0
