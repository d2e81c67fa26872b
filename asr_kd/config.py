"""Settings as dataclasses, and the command-line flags made from them.

A config class declares each setting once, with its default and help (:func:`option`); the
commands make their argparse flags from it (:func:`config_flags`, :func:`add_flags`) and build the
config back from the parsed arguments (:func:`config_values`), so a default lives in one place and
every flag has a help line. :func:`command_line` writes the command that reproduces a run (the
options that differ from their defaults), as RESULTS.md rows quote it.

- :func:`option`: a dataclass field with its help (and optionally ``choices``, an argparse
  ``group``, a ``metavar``, ``flag=False`` for fields with no flag of their own, ``flag="--name"``
  for a flag not named after its field, ``quick=`` for a ``--quick`` preset value,
  ``setting=True`` for fields whose default is a preset's).
- :class:`Flag`, :func:`config_flags`, :func:`add_flags`: one flag per field (``--exp-dir`` for
  ``exp_dir``; ``bool`` fields are switches: ``--name`` sets one that defaults to False,
  ``--no-name`` clears one that defaults to True; tuples are comma-separated lists). A command may
  take a subset of the fields, and its defaults from an instance (e.g. a per-step schedule).
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple


def option(default: Any = None, help: str = "", *, default_factory: Optional[Callable[[], Any]] = None,
           **meta: Any) -> Any:
    """A config field: ``default`` (or ``default_factory``) and the metadata its flag is made from."""
    metadata = dict(meta, help=help)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def quick_values(cls: type) -> Dict[str, Any]:
    """``{field: value}`` of the ``--quick`` preset (fields declared with ``quick=``)."""
    return {f.name: f.metadata["quick"] for f in dataclasses.fields(cls) if "quick" in f.metadata}


@dataclasses.dataclass(frozen=True)
class Flag:
    """One command-line option: ``dest`` in the namespace, ``option`` on the command line."""

    dest: str
    option: str
    default: Any
    help: str
    is_switch: bool = False  # store_true (store_false when the default is True: --no-NAME)
    parse: Optional[Callable[[str], Any]] = None
    format: Callable[[Any], str] = str
    choices: Optional[Sequence[str]] = None
    group: Optional[str] = None
    metavar: Optional[str] = None
    preset: bool = False  # the default is the preset's (argparse leaves the flag out when not given)


def _comma_list(item: type) -> Tuple[Callable[[str], tuple], Callable[[Any], str]]:
    def parse(text: str) -> tuple:
        return tuple(item(v) for v in text.split(",") if v)

    def fmt(values) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    return parse, fmt


def _parse_format(hint: Any) -> Tuple[Optional[Callable[[str], Any]], Callable[[Any], str]]:
    if typing.get_origin(hint) is typing.Union:  # Optional[X]
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return _comma_list(typing.get_args(hint)[0])
    return hint, str


def config_flags(cls: type, preset: bool = False, extra_before: Optional[Mapping[str, Flag]] = None, *,
                 defaults: Any = None, fields: Optional[Sequence[str]] = None) -> List[Flag]:
    """The flags of config dataclass ``cls``, in field order (fields with ``flag=False`` have none).

    ``preset=True``: fields declared with ``setting=True`` default to "the preset's value" (the
    full run's, or ``--quick``'s) and appear in the namespace only when given. ``extra_before``
    inserts command-only flags (e.g. ``--quick``) before the named field's flag. ``defaults``: an
    instance of ``cls`` whose values are the flags' defaults instead of the fields' (e.g. the
    schedule of one training step). ``fields``: only these fields get a flag.
    """
    hints = typing.get_type_hints(cls)
    extra_before = extra_before or {}
    unknown = set(fields or ()) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
    flags = []
    for f in dataclasses.fields(cls):
        if f.name in extra_before:
            flags.append(extra_before[f.name])
        if not f.metadata.get("flag", True) or (fields is not None and f.name not in fields):
            continue
        default = field_default(f) if defaults is None else getattr(defaults, f.name)
        is_preset = preset and f.metadata.get("setting", False)
        is_switch = hints[f.name] is bool
        parse, fmt = (None, str) if is_switch else _parse_format(hints[f.name])
        help_ = f.metadata.get("help", "")
        if is_preset:
            shown = [f"full run: {default if default is None else fmt(default)}"]
            if "quick" in f.metadata:
                shown.append(f"--quick: {fmt(f.metadata['quick'])}")
            help_ += f" ({'; '.join(shown)})"
        if isinstance(f.metadata.get("flag"), str):
            flag_name = f.metadata["flag"]  # not named after its field (e.g. a name the recipes use)
        elif is_switch and default is True:
            flag_name = "--no-" + f.name.replace("_", "-")
        else:
            flag_name = "--" + f.name.replace("_", "-")
        flags.append(Flag(
            dest=f.name, option=flag_name, default=default, help=help_, is_switch=is_switch, parse=parse, format=fmt,
            choices=f.metadata.get("choices"), group=f.metadata.get("group"), metavar=f.metadata.get("metavar"),
            preset=is_preset,
        ))
    return flags


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    groups: Dict[str, Any] = {}
    for flag in flags:
        target = parser
        if flag.group:
            target = groups.get(flag.group) or groups.setdefault(flag.group, parser.add_argument_group(flag.group))
        default = argparse.SUPPRESS if flag.preset else flag.default
        if flag.is_switch:
            action = "store_false" if flag.default is True else "store_true"
            target.add_argument(flag.option, dest=flag.dest, action=action, default=default, help=flag.help)
            continue
        if isinstance(default, tuple):
            default = flag.format(default)  # shown as typed (1,2,3); argparse parses a string default
        target.add_argument(flag.option, dest=flag.dest, type=flag.parse, default=default, choices=flag.choices,
                            metavar=flag.metavar, help=flag.help)


def command_line(words: Sequence[str], args: argparse.Namespace, flags: Sequence[Flag]) -> str:
    """``words`` (e.g. ``asr-kd mnist teacher``) and every flag of ``args`` that differs from its
    default, shell-quoted: the command that reproduces the run."""
    out = list(words)
    for flag in flags:
        value = getattr(args, flag.dest, None)
        if value is None or value == flag.default:
            continue
        out += [flag.option] if flag.is_switch else [flag.option, flag.format(value)]
    return " ".join(shlex.quote(w) for w in out)


def argv_command() -> str:
    """The command this process was started with (``asr-kd ...``, or ``script.py ...``)."""
    return " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])


def config_values(cls: type, args: argparse.Namespace) -> Dict[str, Any]:
    """The fields of ``cls`` present in ``args`` (flags given, or with a plain default)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
