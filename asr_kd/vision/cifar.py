"""CIFAR-100 in its official ``cifar-100-python`` layout: find, prepare, load, augment.

- :func:`prepare_cifar100`: make sure ``DATA_DIR/cifar-100-python/{train,test,meta}`` exist.
  Nothing is done when they are already there; otherwise the shared offline copy
  (``corpora/cifar100``) is converted with ``tools/cifar100_to_python.py`` beside it, and only if
  there is no such copy the official tarball is downloaded (md5-checked) and unpacked.
- :func:`load_cifar100`: one split as uint8 images ``[N, 3, 32, 32]`` (channel-major RGB, as in
  the pickles), fine labels, coarse (superclass) labels.
- :func:`load_meta`: the 100 fine and 20 coarse class names.
- :func:`train_val_split`: a seeded, class-stratified hold-out of the training set (hyperparameters
  are chosen on it, never on the test set).
- :class:`Normalize` / :func:`random_crop_flip`: per-channel standardisation of uint8 batches and
  the usual pad-4 random crop + horizontal flip, both batched and on the batch's device.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from asr_kd.utils import Pathlike, atomic_path

log = logging.getLogger(__name__)

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
LAYOUT = "cifar-100-python"
SPLITS = ("train", "test")
# Per-channel mean / std of the CIFAR-100 training images (pixel values in [0, 1]).
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


def official_dir(data_dir: Pathlike) -> Path:
    return Path(data_dir) / LAYOUT


def has_official_layout(data_dir: Pathlike) -> bool:
    root = official_dir(data_dir)
    return all((root / name).is_file() for name in ("train", "test", "meta"))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_shared_copy(corpus_dir: Pathlike, data_dir: Pathlike, tool: Optional[Pathlike] = None) -> None:
    """Write the official layout from the shared WebP copy with its conversion tool.

    ``tool`` defaults to ``corpus_dir/../../tools/cifar100_to_python.py`` (the shared tree's
    ``tools/`` beside ``corpora/``). The tool writes into a temporary directory that is renamed
    when it has finished, so an interrupted conversion leaves nothing behind.
    """
    corpus_dir = Path(corpus_dir)
    tool = Path(tool) if tool else corpus_dir.resolve().parent.parent / "tools" / "cifar100_to_python.py"
    if not tool.is_file():
        raise FileNotFoundError(f"conversion tool not found: {tool}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{LAYOUT}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    log.info("converting %s to the official layout with %s", corpus_dir, tool)
    subprocess.run([sys.executable, str(tool), str(tmp)], check=True)
    (tmp / LAYOUT).rename(official_dir(data_dir))
    tmp.rmdir()


def download_official(data_dir: Pathlike, url: str = CIFAR100_URL, md5: str = CIFAR100_MD5) -> None:
    """Download and unpack the official tarball (skipped when a verified tarball is there)."""
    data_dir = Path(data_dir)
    tarball = data_dir / Path(url).name
    if not (tarball.is_file() and _md5(tarball) == md5):
        log.info("downloading %s", url)
        with atomic_path(tarball) as tmp:
            urllib.request.urlretrieve(url, tmp)
        got = _md5(tarball)
        if got != md5:
            raise ValueError(f"{tarball}: md5 {got} does not match the official {md5}")
    with tarfile.open(tarball) as tar:
        tar.extractall(data_dir)


def prepare_cifar100(
    data_dir: Pathlike,
    corpus_dir: Optional[Pathlike] = None,
    download: bool = True,
) -> Path:
    """Return ``data_dir/cifar-100-python``, creating it from the shared copy or a download."""
    data_dir = Path(data_dir)
    if has_official_layout(data_dir):
        log.info("CIFAR-100 already in %s", official_dir(data_dir))
        return official_dir(data_dir)
    if corpus_dir is not None and (Path(corpus_dir) / "train.npz").is_file():
        convert_shared_copy(corpus_dir, data_dir)
    elif download:
        download_official(data_dir)
    else:
        raise FileNotFoundError(
            f"no CIFAR-100 in {official_dir(data_dir)}, no shared copy at {corpus_dir}, and download is off"
        )
    if not has_official_layout(data_dir):
        raise FileNotFoundError(f"{official_dir(data_dir)} is incomplete after preparation")
    return official_dir(data_dir)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing CIFAR-100 file {path} (run `asr-kd specialists prepare`)")
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    # Keys are bytes in the official pickles; accept str too.
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def load_cifar100(root: Pathlike, split: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images uint8 [N,3,32,32], fine int64 [N], coarse int64 [N])`` of ``split`` from the
    official layout directory ``root`` (``.../cifar-100-python``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    path = Path(root) / split
    d = _unpickle(path)
    try:
        data = np.asarray(d["data"], dtype=np.uint8)
        fine = np.asarray(d["fine_labels"], dtype=np.int64)
        coarse = np.asarray(d["coarse_labels"], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"{path}: not a CIFAR-100 pickle (missing {e})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(fine) != len(data) or len(coarse) != len(data):
        raise ValueError(f"{path}: unexpected shapes data {data.shape}, labels {len(fine)}/{len(coarse)}")
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(fine), torch.from_numpy(coarse)


def load_meta(root: Pathlike) -> Dict[str, List[str]]:
    d = _unpickle(Path(root) / "meta")
    return {
        k: [s.decode() if isinstance(s, bytes) else str(s) for s in d[k]]
        for k in ("fine_label_names", "coarse_label_names")
    }


def fine_to_coarse(fine: torch.Tensor, coarse: torch.Tensor, num_fine: int = 100) -> np.ndarray:
    """The superclass of each fine class, read off labelled examples."""
    out = np.full(num_fine, -1, dtype=np.int64)
    out[fine.numpy()] = coarse.numpy()
    return out


def train_val_split(labels: torch.Tensor, val_per_class: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)``: ``val_per_class`` random examples of each class held out."""
    g = torch.Generator().manual_seed(seed)
    val = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        val.append(idx[torch.randperm(len(idx), generator=g)[:val_per_class]])
    val_idx = torch.sort(torch.cat(val)).values if val else torch.zeros(0, dtype=torch.long)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


class Normalize:
    """uint8 ``[B,3,H,W]`` -> standardised float32 (on the batch's device)."""

    def __init__(self, mean=MEAN, std=STD):
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def random_crop_flip(x: torch.Tensor, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Per-example random ``pad``-pixel translation (zero padding) and horizontal flip of a batch.

    Draws from torch's global RNG (seeded by the trainer) on the batch's device.
    """
    b, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (pad, pad, pad, pad))
    i = torch.randint(0, 2 * pad + 1, (b,), device=dev)
    j = torch.randint(0, 2 * pad + 1, (b,), device=dev)
    rows = i[:, None] + torch.arange(h, device=dev)  # [B, H]
    cols = j[:, None] + torch.arange(w, device=dev)  # [B, W]
    if flip:
        flipped = torch.rand(b, device=dev) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class TrainTransform:
    """Normalise then augment: the trainer's ``augment`` for uint8 image tensors."""

    def __init__(self, augment: bool = True):
        self.normalize = Normalize()
        self.augment = augment

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        return random_crop_flip(x) if self.augment else x
