"""What a saved model records about how it was made, and the checks made with it when it is used.

- **Phone set**: the real phones (no ``<eps>``, no ``#k`` disambiguation symbols) of the lang's
  ``phones.txt``, with their ids and a digest. A GMM's ``final.mdl`` records it; a DNN follows its
  ``gmm_dir``. A model and a lang (or a graph built from it) must agree on every phone and id:
  :func:`check_phones` raises one clear error naming both files and the first differences.
- **Feature configuration**: the sampling rate and the fbank (and, for a GMM, MFCC) settings the
  model was trained on; audio is resampled to that rate and featurized with those settings.
- **Paths** in a model's metadata (its GMM directory, training cuts, teachers) are stored
  absolute; a relative one (older models) is looked up in the current directory, then beside the
  model file and in the directories above it (the recipe directory it was trained from).
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from lhotse import FbankConfig, load_manifest_lazy

from asr_kd.data.features import fbank_config
from asr_kd.lang.prepare_lang import read_symbol_table
from asr_kd.utils import Pathlike

log = logging.getLogger(__name__)

_warned_unrecorded = set()


def phone_table(lang_dir: Pathlike) -> dict:
    """The phone set of a lang directory: ``{"phones_txt", "symbols": [[phone, id], ...], "sha256"}``."""
    path = Path(lang_dir) / "phones.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {lang_dir} is not a lang directory (run the lang stage first)")
    table = read_symbol_table(path)
    symbols = sorted(([p, i] for p, i in table.items() if i != 0 and not p.startswith("#")), key=lambda x: x[1])
    return {"phones_txt": str(path.resolve()), "symbols": symbols,
            "sha256": hashlib.sha256(json.dumps(symbols).encode()).hexdigest()}


def _differences(model: Sequence, lang: Sequence, limit: int = 3) -> List[str]:
    by_id_m, by_id_l = {i: p for p, i in model}, {i: p for p, i in lang}
    out = []
    for i in sorted(set(by_id_m) | set(by_id_l)):
        a, b = by_id_m.get(i), by_id_l.get(i)
        if a != b:
            out.append(f"phone {i} is {a or 'absent'} in the model, {b or 'absent'} in the lang")
            if len(out) == limit:
                break
    return out


def check_phones(model_phones: Optional[dict], model_name: str, lang_dir: Pathlike,
                 model_phone_ids: Optional[Iterable[int]] = None) -> None:
    """Raise ValueError unless the model's phone set (``phone_table`` of its training lang) is the
    lang's. A model that records none (trained before this was saved) is checked on its phone ids
    (``model_phone_ids``, those with an HMM) only, with a warning."""
    lang = phone_table(lang_dir)
    if model_phones is None:
        if model_phone_ids is None:
            return
        model_ids, lang_ids = sorted(int(i) for i in model_phone_ids), [i for _, i in lang["symbols"]]
        if model_ids != lang_ids:
            extra = sorted(set(model_ids) ^ set(lang_ids))[:3]
            raise ValueError(f"phone sets differ: {model_name} has {len(model_ids)} phones, {lang['phones_txt']} has "
                             f"{len(lang_ids)} (ids in only one of them: {extra}): use the lang directory the model "
                             "was trained with")
        if model_name not in _warned_unrecorded:
            _warned_unrecorded.add(model_name)
            log.warning(f"{model_name} records no phone names (trained before they were saved): only its phone ids "
                        f"were checked against {lang['phones_txt']}")
        return
    if model_phones["sha256"] == lang["sha256"]:
        return
    diffs = "; ".join(_differences(model_phones["symbols"], lang["symbols"]))
    raise ValueError(f"phone sets differ: {model_name} (trained with {model_phones['phones_txt']}, "
                     f"{len(model_phones['symbols'])} phones) and {lang['phones_txt']} ({len(lang['symbols'])} phones): "
                     f"{diffs}; use the lang directory the model was trained with")


def feature_config(sampling_rate: int, mfcc: Optional[dict] = None) -> dict:
    """What a model records of its features: sampling rate, fbank settings, MFCC settings (GMM)."""
    out = {"sampling_rate": int(sampling_rate), "fbank": fbank_config(int(sampling_rate)).to_dict()}
    if mfcc is not None:
        out["mfcc"] = dict(mfcc)
    return out


def fbank_of(features: dict) -> FbankConfig:
    return FbankConfig.from_dict(features["fbank"])


def cuts_sampling_rate(cuts_path: Pathlike) -> int:
    """The sampling rate of a cuts manifest (its first cut)."""
    for cut in load_manifest_lazy(cuts_path):
        return int(cut.sampling_rate)
    raise ValueError(f"{cuts_path}: no cuts")


def resolve_path(value: Pathlike, model_path: Pathlike) -> Optional[Path]:
    """A path from a model's metadata: absolute as stored, else relative to the current directory,
    else to the model file's directory or one above it; None if it is in none of them."""
    p = Path(value)
    if p.is_absolute():
        return p if p.exists() else None
    for base in (Path.cwd(), *Path(model_path).resolve().parents):
        if (base / p).exists():
            return (base / p).resolve()
    return None
