"""MNIST for the paper's section 3: the IDX files, their checksums, jitter, and the MLPs.

- :data:`MNIST_FILES`: the four original IDX files with their md5 sums.
- :func:`read_idx`: parse an IDX file (gzipped or not) into a numpy array, checking its header.
- :func:`verify_file` / :func:`md5sum`: checksum check, :class:`ChecksumError` names the file.
- :func:`prepare_mnist`: find verified files in a local directory (used in place, never copied)
  or download them into ``download_dir`` (skipped when verified files are already there).
- :func:`load_mnist`: images as float32 ``[N, 784]`` in ``[0, 1]`` and int64 labels.
- :func:`jitter` / :func:`shift_images`: translate each image by up to ``max_shift`` pixels in any
  direction (zero fill), the teacher's input augmentation.
- :class:`MLP`: ReLU nets with optional input/hidden dropout (784-1200-1200-10 teacher,
  784-800-800-10 students, ...). The max-norm constraint is
  :func:`asr_kd.training.apply_max_norm`, applied after each step by the trainer.
"""
from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import struct
import urllib.request
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from asr_kd.utils import Pathlike, atomic_path

log = logging.getLogger(__name__)

# name -> (file name, md5 of the gzipped file)
MNIST_FILES: Dict[str, tuple] = {
    "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
IMAGE_SIZE = 28
NUM_CLASSES = 10

# IDX type byte -> numpy big-endian dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class ChecksumError(ValueError):
    """A file's md5 differs from the expected one (corrupt or truncated download)."""


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file."""


def md5sum(path: Pathlike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Pathlike, md5: str) -> None:
    """Raise :class:`ChecksumError` (naming ``path``) unless its md5 is ``md5``."""
    got = md5sum(path)
    if got != md5:
        raise ChecksumError(f"{path}: md5 {got} does not match the expected {md5} (corrupt or wrong file)")


def _open(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: Pathlike, md5: Optional[str] = None) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` or raw); with ``md5``, verify the file first.

    Format: two zero bytes, a type byte, the number of dimensions, then one big-endian int32 per
    dimension and the data in row-major order.
    """
    path = Path(path)
    if md5 is not None:
        verify_file(path, md5)
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise IDXFormatError(f"{path}: cannot read ({e})") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"{path}: not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise IDXFormatError(f"{path}: unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}i", data[4:header])
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IDXFormatError(
            f"{path}: {len(data) - header} data bytes, expected {expected} for shape {tuple(shape)}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _files_ok(directory: Path) -> bool:
    for name, md5 in MNIST_FILES.values():
        p = directory / name
        if not p.is_file():
            return False
        verify_file(p, md5)  # a present but corrupt file is an error, not a reason to download
    return True


def download_file(url: str, dest: Path, md5: str, timeout: float = 60.0) -> None:
    """Fetch ``url`` to ``dest`` atomically and verify it."""
    with atomic_path(dest) as tmp:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        verify_file(tmp, md5)


def prepare_mnist(
    mnist_dir: Optional[Pathlike] = None,
    download_dir: Optional[Pathlike] = None,
    mirrors: Sequence[str] = MIRRORS,
) -> Path:
    """The directory holding the four verified IDX files.

    A local ``mnist_dir`` that has all four files is used in place (after checking their md5s).
    Otherwise each file missing from ``download_dir`` is downloaded there (files already present
    are verified and kept). Raises :class:`ChecksumError` for a corrupt file.
    """
    if mnist_dir is not None:
        d = Path(mnist_dir)
        if d.is_dir() and _files_ok(d):
            log.info("MNIST: verified IDX files in %s", d)
            return d
        if download_dir is None:
            raise FileNotFoundError(f"{d}: the MNIST IDX files are not all there, and no download dir was given")
        log.info("MNIST: %s does not hold all four files; downloading to %s", d, download_dir)
    if download_dir is None:
        raise ValueError("give mnist_dir or download_dir")
    d = Path(download_dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, md5 in MNIST_FILES.values():
        dest = d / name
        if dest.is_file():
            verify_file(dest, md5)
            log.info("MNIST: %s already there, verified", dest)
            continue
        errors = []
        for mirror in mirrors:
            try:
                log.info("MNIST: downloading %s%s", mirror, name)
                download_file(mirror + name, dest, md5)
                break
            except Exception as e:  # try the next mirror
                errors.append(f"{mirror}: {e}")
        else:
            raise RuntimeError(f"could not download {name} (without internet, point --mnist-dir at a local copy "
                               "of the four IDX files): " + "; ".join(errors))
    return d


def load_mnist(directory: Pathlike, verify: bool = True) -> Dict[str, torch.Tensor]:
    """``train_x``, ``test_x`` (float32 ``[N, 784]`` in [0, 1]) and ``train_y``, ``test_y`` (int64)."""
    d = Path(directory)
    out = {}
    for key, (name, md5) in MNIST_FILES.items():
        arr = read_idx(d / name, md5 if verify else None)
        split, kind = key.split("_")
        if kind == "images":
            if arr.ndim != 3 or arr.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
                raise IDXFormatError(f"{d / name}: expected [N, 28, 28] images, got {arr.shape}")
            out[f"{split}_x"] = torch.from_numpy(arr.reshape(arr.shape[0], -1).astype(np.float32) / 255.0)
        else:
            out[f"{split}_y"] = torch.from_numpy(arr.astype(np.int64))
    for split in ("train", "test"):
        if out[f"{split}_x"].shape[0] != out[f"{split}_y"].shape[0]:
            raise IDXFormatError(f"{d}: {split} images and labels differ in number")
    return out


def shift_images(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Translate image ``i`` by ``dx[i]`` pixels right and ``dy[i]`` pixels down, filling with 0.

    ``x`` is ``[B, size*size]`` or ``[B, size, size]``; the output has the same shape.
    """
    shape = x.shape
    b = shape[0]
    img = x.reshape(b, size, size)
    m = int(max(dx.abs().max(), dy.abs().max())) if b else 0
    padded = torch.nn.functional.pad(img, (m, m, m, m))
    ar = torch.arange(size, device=x.device)
    # output pixel (r, c) comes from input (r - dy, c - dx), i.e. padded (r - dy + m, c - dx + m)
    rows = (ar[None, :] - dy[:, None] + m)[:, :, None]  # [B, size, 1]
    cols = (ar[None, :] - dx[:, None] + m)[:, None, :]  # [B, 1, size]
    out = padded[torch.arange(b, device=x.device)[:, None, None], rows, cols]
    return out.reshape(shape)


def jitter(x: torch.Tensor, max_shift: int = 2, size: int = IMAGE_SIZE) -> torch.Tensor:
    """Shift each image by a random integer offset in ``[-max_shift, max_shift]`` on each axis."""
    if max_shift <= 0:
        return x
    b = x.shape[0]
    dx = torch.randint(-max_shift, max_shift + 1, (b,), device=x.device)
    dy = torch.randint(-max_shift, max_shift + 1, (b,), device=x.device)
    return shift_images(x, dx, dy, size)


class Jitter:
    """:func:`jitter` as an augmentation callable for :func:`asr_kd.vision.train.train_classifier`."""

    def __init__(self, max_shift: int = 2, size: int = IMAGE_SIZE):
        self.max_shift = max_shift
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return jitter(x, self.max_shift, self.size)


class MLP(nn.Sequential):
    """ReLU multilayer perceptron ``sizes[0] - ... - sizes[-1]`` with optional dropout.

    ``input_dropout`` drops input pixels, ``hidden_dropout`` each hidden layer's units (Hinton et
    al. 2012 use 0.2 and 0.5). The last layer gives logits.
    """

    def __init__(self, sizes: Sequence[int], input_dropout: float = 0.0, hidden_dropout: float = 0.0):
        if len(sizes) < 2:
            raise ValueError("an MLP needs at least input and output sizes")
        layers = []
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
                if hidden_dropout > 0:
                    layers.append(nn.Dropout(hidden_dropout))
        super().__init__(*layers)
        self.sizes = list(sizes)
        self.input_dropout, self.hidden_dropout = input_dropout, hidden_dropout

    def config(self) -> dict:
        """What rebuilds this net: ``MLP(**net.config())``."""
        return {"sizes": self.sizes, "input_dropout": self.input_dropout, "hidden_dropout": self.hidden_dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(x.shape[0], -1))


def mlp(hidden: Sequence[int], input_dropout: float = 0.0, hidden_dropout: float = 0.0) -> MLP:
    """An MNIST MLP ``784 - hidden... - 10``."""
    return MLP([IMAGE_SIZE * IMAGE_SIZE, *hidden, NUM_CLASSES], input_dropout, hidden_dropout)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def split_train_valid(data: Dict[str, torch.Tensor], valid_size: int = 10000) -> Dict[str, torch.Tensor]:
    """Hold out the last ``valid_size`` training images as the validation ("dev") set."""
    n = data["train_x"].shape[0]
    if not 0 <= valid_size < n:
        raise ValueError(f"valid_size {valid_size} must be in [0, {n})")
    k = n - valid_size
    out = dict(data)
    out["train_x"], out["train_y"] = data["train_x"][:k], data["train_y"][:k]
    out["valid_x"], out["valid_y"] = data["train_x"][k:], data["train_y"][k:]
    return out


def shifted_errors(
    logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[int], shifts: torch.Tensor
) -> torch.Tensor:
    """Error count for each bias ``shift`` added to the logits of ``classes`` (``[len(shifts)]``)."""
    z = logits.float()
    onehot = torch.zeros(z.shape[-1])
    onehot[list(classes)] = 1.0
    errs = torch.empty(len(shifts), dtype=torch.long)
    for i, s in enumerate(shifts.tolist()):
        errs[i] = int(((z + s * onehot).argmax(-1) != labels).sum())
    return errs


def best_bias_shift(
    logits: torch.Tensor,
    labels: torch.Tensor,
    classes: Sequence[int],
    shifts: Optional[torch.Tensor] = None,
) -> tuple:
    """The bias shift of ``classes``' logits with the fewest errors on (``logits``, ``labels``).

    Searches the grid ``shifts`` (default -20..20 in steps of 0.1). The error count is piecewise
    constant in the shift, so among the best shifts we return the middle of the first run of
    consecutive grid points that reach the minimum (less sensitive to where the grid falls).
    Returns ``(shift, errors)``.
    """
    if shifts is None:
        shifts = torch.arange(-200, 201, dtype=torch.float64) / 10.0
    errs = shifted_errors(logits, labels, classes, shifts)
    best = int(errs.min())
    first = int((errs == best).nonzero()[0])
    last = first
    while last + 1 < len(errs) and int(errs[last + 1]) == best:
        last += 1
    shift = float(shifts[(first + last) // 2])
    return shift, best
