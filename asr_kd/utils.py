"""Small helpers every module shares: atomic writes, locks, user errors, manifests, logging,
seeding, JSON.

lhotse, numpy and torch are imported inside the functions that use them, not at the top:
``asr_kd.cli`` imports this module, and ``asr-kd --help`` should not wait the ~2 s that
lhotse or torch take to import.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import random
import signal
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence, Union

Pathlike = Union[str, os.PathLike]

_UMASK = os.umask(0)
os.umask(_UMASK)

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class UserError(Exception):
    """A mistake in the input (a missing or corrupt file, a wrong option): ``asr-kd`` prints the
    message as one line, without a traceback."""


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr in the icefall/Kaldi style (time, level, module, message)."""
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")


@contextlib.contextmanager
def atomic_path(path: Pathlike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary name keeps the final suffixes (``.jsonl.gz``, ``.npz``...) so that libraries
    which choose a format from the extension (lhotse, numpy) write the right thing. Nothing is
    left half-written: on an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffixes}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def exclusive_lock(path: Pathlike, blocking: bool = True, busy: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created if missing) for the block.

    Blocking by default (waits for the other holder); with ``blocking=False`` a lock held
    elsewhere raises :class:`UserError` with ``busy`` as its message. The lock goes with the
    process, so a killed holder never leaves a stale lock; the file itself is left in place
    (removing it would let two processes lock two different files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(busy or f"{path} is locked by another process") from None
        yield


def training_lock(target: Pathlike):
    """:func:`exclusive_lock` that fails at once if another process trains into ``target`` (a model
    directory or a checkpoint file). The lock file sits beside it (``.NAME.train.lock``), so that
    a model directory holds only the model."""
    path = Path(target).resolve()
    lock = path.with_name(f".{path.name}.train.lock")
    return exclusive_lock(lock, blocking=False, busy=f"another process is training in {target} (lock {lock})")


def die_with_parent(parent_pid: int) -> None:
    """Worker-process initializer: the kernel kills this process when its parent dies (Linux's
    PR_SET_PDEATHSIG), so that a killed stage leaves no worker behind that goes on writing.
    Elsewhere (no prctl) it does nothing."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is None:
        return
    if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def error_text(e: BaseException) -> str:
    """An exception's message on one line, without the description of the whole cut that lhotse
    appends ("[extra info] When calling: MonoCut.load_features(...)")."""
    return " ".join(str(e).split("[extra info]")[0].split()) or type(e).__name__


def load_cuts(path: Pathlike, missing_hint: str = ""):
    """The CutSet in the manifest ``path``, or a one-line :class:`UserError` naming the file when
    it is missing (``missing_hint`` says which stage makes it), truncated, corrupt or not cuts."""
    from lhotse import CutSet, load_manifest  # lazy: see the module docstring

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found" + (f": {missing_hint}" if missing_hint else ""))
    try:
        manifest = load_manifest(path)
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError) as e:  # gzip, JSON, lhotse schema
        raise UserError(f"{path}: unreadable manifest ({type(e).__name__}: {e}): truncated or not a "
                        "manifest; redo the stage that wrote it") from e
    if not isinstance(manifest, CutSet):
        raise UserError(f"{path}: a {type(manifest).__name__} manifest, not cuts")
    return manifest


def iter_cuts(path: Pathlike, missing_hint: str = "") -> Iterator[Any]:
    """The cuts of the manifest ``path`` read lazily (one at a time: for a manifest too big to
    hold), with :func:`load_cuts`'s one-line errors; a truncated file fails when it is reached."""
    from lhotse import load_manifest_lazy  # lazy: see the module docstring

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found" + (f": {missing_hint}" if missing_hint else ""))
    try:
        yield from load_manifest_lazy(path)
    except (OSError, EOFError, zlib.error, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: unreadable manifest ({type(e).__name__}: {e}): truncated or not a "
                        "manifest; redo the stage that wrote it") from e


def write_text(path: Pathlike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Pathlike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Pathlike) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e}); redo the stage that wrote it") from e


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) for a reproducible run."""
    import numpy as np  # lazy (numpy, torch): see the module docstring
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fast_bf16(device: str = "cpu") -> bool:
    """Whether bf16 matmuls are fast here: a CUDA GPU with bf16, or a CPU with AVX-512 BF16 / AMX.

    Without those instructions (e.g. an AVX2-only CPU) oneDNN emulates bf16 and autocast is
    ~20x *slower* than fp32, so ``dtype="auto"`` must pick fp32 there.
    """
    import torch  # lazy: see the module docstring

    if str(device).startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` where it is fast (see :func:`fast_bf16`), else ``fp32``."""
    if dtype == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"unknown dtype {dtype!r}; choose from ('auto', 'bf16', 'fp32')")
    return dtype


def autocast(device: str, dtype: str = "auto"):
    """bf16 autocast on ``device`` (CPU or CUDA), or a no-op for fp32; ``auto`` as :func:`resolve_dtype`.

    fp32 master weights stay fp32; only the matmuls run in bf16."""
    import torch  # lazy: see the module docstring

    if resolve_dtype(dtype, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=torch.bfloat16)


def outputs_exist(*paths: Pathlike) -> bool:
    """True when every output of a stage is already there (outputs are written atomically,
    so existence means the stage finished)."""
    return all(Path(p).exists() for p in paths)


def outputs_fresh(outputs: Sequence[Pathlike], inputs: Sequence[Pathlike]) -> bool:
    """True when every output exists and none is older than an input that exists (make's rule):
    a stage whose inputs were rebuilt (a retrained model, a new alignment) runs again."""
    if not outputs_exist(*outputs):
        return False
    newest_input = max((Path(p).stat().st_mtime for p in inputs if Path(p).exists()), default=0.0)
    return all(Path(p).stat().st_mtime >= newest_input for p in outputs)
