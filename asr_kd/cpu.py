"""Which matrix-product path the CPU takes, decided before torch loads MKL.

k2 pins torch 1.13.1, whose bundled MKL 2020.0 runs sgemm through a slow generic path on any CPU
whose vendor is not Intel (measured on an AVX2 AMD EPYC: 17 GFLOP/s instead of 65, one thread).
That MKL still honours ``MKL_DEBUG_CPU_TYPE=5``, which selects its AVX2 kernels; products agree
with the default path to rounding. The variable is read once, when MKL initialises, so it has to
be in the environment before the first ``import torch`` of the process: ``asr_kd/__init__.py``
calls :func:`configure` first thing, and child processes (jobs, torchrun ranks) inherit it.

Rules (:func:`mkl_cpu_type`): set ``5`` only on an x86 CPU that has AVX2 and FMA and whose vendor
is not Intel; never elsewhere (on a CPU without AVX2 the AVX2 kernels would fault). A value the
user already exported wins. ``ASR_KD_MKL_OVERRIDE=0`` turns the override off.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Mapping, Optional, Tuple

OPT_OUT = "ASR_KD_MKL_OVERRIDE"
MKL_VAR = "MKL_DEBUG_CPU_TYPE"
AVX2_TYPE = "5"

# What configure() decided, for the log line: (path, reason).
_decision: Tuple[str, str] = ("default", "not decided")


def cpu_vendor_and_flags(cpuinfo: str) -> Tuple[str, set]:
    """(vendor_id, flags) of the first processor listed in a /proc/cpuinfo text."""
    vendor, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if vendor and flags:
            break
    return vendor, flags


def mkl_cpu_type(cpuinfo: str, machine: str, environ: Mapping[str, str]) -> Tuple[Optional[str], str]:
    """(value to give MKL_DEBUG_CPU_TYPE or None, why), from the CPU description and environment."""
    if environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off"):
        return None, f"{OPT_OUT}={environ[OPT_OUT]}"
    if MKL_VAR in environ:
        return None, f"{MKL_VAR}={environ[MKL_VAR]} set by the user"
    if machine.lower() not in ("x86_64", "amd64", "i686", "i386"):
        return None, f"{machine} CPU (MKL is x86 only)"
    vendor, flags = cpu_vendor_and_flags(cpuinfo)
    if not vendor:
        return None, "CPU vendor unknown"
    if vendor == "GenuineIntel":
        return None, "Intel CPU (MKL picks its fast kernels itself)"
    if not {"avx2", "fma"} <= flags:
        return None, f"{vendor} CPU without AVX2+FMA"
    return AVX2_TYPE, f"{vendor} CPU with AVX2+FMA"


def configure() -> Tuple[str, str]:
    """Set MKL_DEBUG_CPU_TYPE for this process (and its children) where it is safe; returns the
    (path, reason) pair that :func:`describe` logs."""
    global _decision
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    value, why = mkl_cpu_type(cpuinfo, platform.machine(), os.environ)
    if value is None:
        path = f"MKL AVX2 kernels ({MKL_VAR}={os.environ[MKL_VAR]})" if os.environ.get(MKL_VAR) == AVX2_TYPE \
            else "MKL's own choice"
        _decision = (path, why)
    elif "torch" in sys.modules:  # too late: MKL may already have read its environment
        _decision = ("MKL's own choice", f"{why}, but torch was imported before asr_kd; "
                     f"export {MKL_VAR}={value} in the shell")
    else:
        os.environ[MKL_VAR] = value
        _decision = (f"MKL AVX2 kernels ({MKL_VAR}={value})", f"{why}; {OPT_OUT}=0 turns this off")
    return _decision


def describe() -> str:
    """One line for the log: which sgemm path is in force and why."""
    path, why = _decision
    return f"matrix products: {path} ({why})"
