"""The DNN acoustic model of the paper: spliced fbank in, N ReLU layers of width W, senone logits out.

Presets (every size is also a setting):

| preset | hidden | context (left, right) | parameters at 2000 senones | use |
|---|---|---|---|---|
| ``paper`` | 8 x 2560 | 20, 5 (26 frames) | ~53M (85M at 14000 senones) | the paper's shape; GPU |
| ``cpu`` | 4 x 1024 | 20, 5 | ~6.3M | speechocean762 on a 2-core CPU |
| ``small`` | 3 x 512 | 10, 5 | ~1.9M | quick recipes (fsdd, yesno) |
| ``tiny`` | 2 x 64 | 3, 2 | tiny | tests |

A saved model (``final.pt``) carries everything decoding needs: the config, the senone
log-priors, the CMVN statistics, the sampling rate and fbank settings, and the (absolute) path of
the GMM directory whose tree / transition model define its senones and whose phone set it shares.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from asr_kd.model_info import feature_config, resolve_path
from asr_kd.utils import Pathlike, atomic_path

# Metadata entries that are paths (a list for teachers): saved absolute, resolved when loaded.
META_PATHS = ("gmm_dir", "train_cuts", "teachers")

PRESETS: Dict[str, dict] = {
    "paper": dict(hidden_layers=8, hidden_dim=2560, left_context=20, right_context=5),
    "cpu": dict(hidden_layers=4, hidden_dim=1024, left_context=20, right_context=5),
    "small": dict(hidden_layers=3, hidden_dim=512, left_context=10, right_context=5),
    "tiny": dict(hidden_layers=2, hidden_dim=64, left_context=3, right_context=2),
}


@dataclass
class DnnConfig:
    num_senones: int
    feat_dim: int = 40
    hidden_layers: int = 8
    hidden_dim: int = 2560
    left_context: int = 20
    right_context: int = 5
    dropout: float = 0.0

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "DnnConfig":
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        kw = dict(PRESETS[preset])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    @property
    def input_dim(self) -> int:
        return (self.left_context + 1 + self.right_context) * self.feat_dim


class Dnn(nn.Module):
    def __init__(self, cfg: DnnConfig):
        super().__init__()
        self.cfg = cfg
        layers: List[nn.Module] = []
        dim = cfg.input_dim
        for _ in range(cfg.hidden_layers):
            layers += [nn.Linear(dim, cfg.hidden_dim), nn.ReLU()]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            dim = cfg.hidden_dim
        layers.append(nn.Linear(dim, cfg.num_senones))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, input_dim] spliced features -> [B, num_senones] logits."""
        return self.net(x)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_model(path: Pathlike, model: Dnn, meta: Optional[dict] = None) -> None:
    """The model with what decoding needs (``meta``: priors, cmvn, sampling rate, GMM dir...).

    Paths in ``meta`` are stored absolute, so the model decodes from any directory; the fbank
    settings of its sampling rate are added as ``meta["features"]``."""
    meta = dict(meta or {})
    for key in META_PATHS:
        if isinstance(meta.get(key), (list, tuple)):
            meta[key] = [str(Path(p).resolve()) for p in meta[key]]
        elif meta.get(key) is not None:
            meta[key] = str(Path(meta[key]).resolve())
    if meta.get("sampling_rate") and "features" not in meta:
        meta["features"] = feature_config(meta["sampling_rate"])
    with atomic_path(path) as tmp:
        torch.save({"config": asdict(model.cfg), "state_dict": model.state_dict(), "meta": meta}, tmp)


def load_model(path: Pathlike, device: str = "cpu") -> Dnn:
    """A saved model in eval mode; ``model.meta`` holds the saved metadata, ``model.path`` its file.

    Relative paths in the metadata (models saved before paths were stored absolute) are resolved
    as :func:`asr_kd.model_info.resolve_path`; one found nowhere is left as stored (see :func:`meta_path`).
    A model whose ``meta["paths_relative_to"]`` is ``"model_file"`` (written by ``asr-kd export``)
    has them resolved against its own directory only."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such model (run the training stage first)")
    d = torch.load(path, map_location=device)
    model = Dnn(DnnConfig(**d["config"]))
    model.load_state_dict(d["state_dict"])
    meta = d.get("meta", {})
    # An exported model (asr-kd export) stores its paths relative to its own file, so that the
    # export directory can be moved: they are resolved there, never against the current directory.
    beside = Path(path).resolve().parent if meta.get("paths_relative_to") == "model_file" else None

    def resolve(p):
        if beside is not None and not Path(p).is_absolute():
            return str((beside / p).resolve())
        return str(resolve_path(p, path) or p)

    for key in META_PATHS:
        value = meta.get(key)
        if isinstance(value, (list, tuple)):
            meta[key] = [resolve(p) for p in value]
        elif value is not None:
            meta[key] = resolve(value)
    model.meta, model.path = meta, Path(path)
    return model.to(device).eval()


def meta_path(model: Dnn, key: str) -> Path:
    """An existing path from the model's metadata, or FileNotFoundError saying where it was looked for."""
    value = model.meta.get(key)
    if value is None:
        raise ValueError(f"{model.path}: model metadata has no {key}; was it trained by asr-kd nnet?")
    p = Path(value)
    if not p.exists():
        where = "" if p.is_absolute() else f" (looked in {Path.cwd()} and beside {model.path.resolve()} and above)"
        raise FileNotFoundError(f"{model.path}: its {key} {value} does not exist{where}")
    return p


class Ensemble(nn.Module):
    """K models with the same input; ``forward`` returns their logits stacked [K, B, S]."""

    def __init__(self, models: Sequence[Dnn]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        cfgs = {(m.cfg.left_context, m.cfg.right_context, m.cfg.num_senones, m.cfg.feat_dim) for m in models}
        if len(cfgs) != 1:
            raise ValueError(f"ensemble members differ in context/senones/features: {cfgs}")
        self.members = nn.ModuleList(models)
        self.cfg = models[0].cfg
        self.meta = getattr(models[0], "meta", {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])
