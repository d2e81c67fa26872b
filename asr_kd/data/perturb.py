"""Speed perturbation (Ko et al., 2015) of a cuts manifest, the Kaldi way.

Each factor ``f`` adds a copy of every cut whose audio is resampled on load (lhotse's ``Speed``
transform, no torchaudio needed) so that it plays ``f`` times faster: shorter and higher for
``f > 1``. As in Kaldi's ``perturb_data_dir_speed.sh`` the copies are new utterances *and new
speakers* (``sp0.9-<speaker>``), so per-speaker CMVN never mixes speeds, and ids get the same
prefix. Factor 1.0 keeps the original cuts unchanged.

    asr-kd perturb data/manifests/X_cuts_train.jsonl.gz data/manifests/X_cuts_train_sp.jsonl.gz \\
        --factors 0.9 1.0 1.1

Features come next (``asr-kd fbank --splits train_sp``), then the GMM aligns the copies
(``asr-kd gmm align``): each copy gets its own alignment, not a stretched one.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from lhotse import CutSet

from asr_kd.utils import atomic_path, load_cuts

log = logging.getLogger(__name__)


def prefix(factor: float) -> str:
    return f"sp{factor:g}-"


def speed_perturb(cuts: CutSet, factors: Sequence[float]) -> CutSet:
    """The cuts at each speed factor (1.0 = as they are), speakers and ids prefixed ``sp<f>-``."""
    parts = []
    for f in factors:
        if f <= 0:
            raise ValueError(f"speed factor must be positive, not {f}")
        if f == 1.0:
            parts.append(cuts)
            continue
        p = prefix(f)
        perturbed = cuts.perturb_speed(f, affix_id=False)

        def rename(cut, p=p):
            cut = cut.with_id(p + cut.id)
            cut.recording.id = p + cut.recording.id  # a new recording: features must not be shared
            for s in cut.supervisions:
                s.id, s.recording_id = p + s.id, cut.recording.id
                if s.speaker is not None:
                    s.speaker = p + s.speaker
            return cut

        parts.append(perturbed.map(rename))
    return CutSet.from_cuts(c for part in parts for c in part)


def add_arguments(parser) -> None:
    parser.add_argument("cuts", type=Path, help="input cuts manifest (audio, supervisions)")
    parser.add_argument("out_cuts", type=Path, help="output cuts manifest with every speed's copy")
    parser.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1],
                        help="speed factors; 1.0 keeps the original cuts")
    parser.add_argument("--force", action="store_true", help="rewrite out_cuts even if it exists")


def run(args) -> int:
    if args.out_cuts.exists() and not args.force:
        log.info(f"{args.out_cuts} exists; skipping (use --force to redo)")
        return 0
    cuts = load_cuts(args.cuts, "run the manifests stage first")
    out = speed_perturb(cuts, args.factors)
    with atomic_path(args.out_cuts) as tmp:
        out.to_file(tmp)
    hours = sum(c.duration for c in out) / 3600
    log.info(f"{args.out_cuts}: {len(out)} cuts ({hours:.2f} h) at speeds {' '.join(f'{f:g}' for f in args.factors)}")
    return 0
