"""Frame-level data for DNN acoustic models: all frames of a set in memory, spliced on the fly.

The paper's DNN sees 26 frames of 40 fbank and predicts the senone of the 21st (20 frames of
left context, 5 of right). :class:`FrameSet` holds the CMVN-normalized features of every frame of
a set of cuts as one tensor, their forced-alignment senone labels, and each frame's utterance
bounds; :meth:`FrameSet.splice` gathers context windows for any batch of frame indices (edges
replicate the utterance's first/last frame), so frames can be shuffled across utterances with no
copy of the spliced input ever stored. speechocean762's ~1M training frames take ~160 MB.

Cuts without labels, or whose label count differs from their feature frame count, are skipped
with a warning naming them and counted in the report; never truncated.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from asr_kd.data.features import Cmvn
from asr_kd.utils import Pathlike, atomic_path

log = logging.getLogger(__name__)

LABEL_FIELD = "senone"


@dataclass
class FrameSet:
    feats: torch.Tensor  # [N, D] float32, CMVN applied
    labels: torch.Tensor  # [N] int64 senone ids (-1 = unlabelled)
    utt_of_frame: torch.Tensor  # [N] int64
    starts: torch.Tensor  # [U] first frame of each utterance
    ends: torch.Tensor  # [U] one past its last frame
    cut_ids: List[str]
    speakers: List[str]

    def __len__(self) -> int:
        return int(self.feats.shape[0])

    @property
    def feat_dim(self) -> int:
        return int(self.feats.shape[1])

    @classmethod
    def from_cuts(
        cls,
        cuts,
        cmvn: Cmvn,
        label_field: Optional[str] = LABEL_FIELD,
        progress: bool = True,
    ) -> Tuple["FrameSet", dict]:
        """Load the frames of ``cuts``; ``label_field=None`` loads features only (labels -1)."""
        feats, labels, ids, speakers = [], [], [], []
        report = {"cuts": 0, "frames": 0, "no_labels": [], "length_mismatch": [], "non_finite": []}
        for cut in tqdm(cuts, desc="loading frames", unit="cut", disable=not progress):
            x = cmvn.apply_to_cut(cut)
            if not np.isfinite(x).all():
                report["non_finite"].append(cut.id)
                log.warning(f"cut {cut.id}: non-finite features; skipped")
                continue
            if label_field is not None:
                if not cut.has_custom(label_field):
                    report["no_labels"].append(cut.id)
                    continue
                y = np.asarray(cut.load_custom(label_field)).astype(np.int64).reshape(-1)
                if y.shape[0] != x.shape[0]:
                    report["length_mismatch"].append(cut.id)
                    log.warning(f"cut {cut.id}: {x.shape[0]} feature frames but {y.shape[0]} senone labels; skipped")
                    continue
            else:
                y = np.full(x.shape[0], -1, dtype=np.int64)
            feats.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            labels.append(torch.from_numpy(y))
            ids.append(cut.id)
            speakers.append(cut.supervisions[0].speaker if cut.supervisions else cut.id)
        if report["no_labels"]:
            log.warning(f"{len(report['no_labels'])} cuts have no '{label_field}' labels (not aligned); skipped, "
                        f"e.g. {report['no_labels'][:3]}")
        if not feats:
            raise ValueError(f"no usable cuts (report: { {k: len(v) if isinstance(v, list) else v for k, v in report.items()} })")
        lengths = torch.tensor([f.shape[0] for f in feats])
        ends = torch.cumsum(lengths, 0)
        starts = ends - lengths
        fs = cls(
            feats=torch.cat(feats),
            labels=torch.cat(labels),
            utt_of_frame=torch.repeat_interleave(torch.arange(len(feats)), lengths),
            starts=starts,
            ends=ends,
            cut_ids=ids,
            speakers=speakers,
        )
        report["cuts"] = len(ids)
        report["frames"] = len(fs)
        return fs, report

    def splice(self, idx: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """[B] frame indices -> [B, (left + 1 + right) * D] context windows."""
        utt = self.utt_of_frame[idx]
        offsets = torch.arange(-left, right + 1)
        win = idx[:, None] + offsets[None, :]
        win = torch.maximum(torch.minimum(win, (self.ends[utt] - 1)[:, None]), self.starts[utt][:, None])
        return self.feats[win].reshape(idx.shape[0], -1)

    def utterance(self, i: int) -> slice:
        return slice(int(self.starts[i]), int(self.ends[i]))

    def subset(self, utterances: Sequence[int]) -> "FrameSet":
        """A FrameSet of some utterances (by index), e.g. a dev split or a 3% subset."""
        sl = [self.utterance(i) for i in utterances]
        lengths = torch.tensor([s.stop - s.start for s in sl])
        ends = torch.cumsum(lengths, 0)
        return FrameSet(
            feats=torch.cat([self.feats[s] for s in sl]),
            labels=torch.cat([self.labels[s] for s in sl]),
            utt_of_frame=torch.repeat_interleave(torch.arange(len(sl)), lengths),
            starts=ends - lengths,
            ends=ends,
            cut_ids=[self.cut_ids[i] for i in utterances],
            speakers=[self.speakers[i] for i in utterances],
        )

    def save(self, path: Pathlike, source: Optional[str] = None) -> None:
        """Saved with the manifest it was read from (``source``), which :meth:`load` can check."""
        with atomic_path(path) as tmp:
            torch.save({**self.__dict__, "source": source}, tmp)

    @classmethod
    def load(cls, path: Pathlike, source: Optional[str] = None) -> Optional["FrameSet"]:
        """The saved set; None when ``source`` is given and is not the manifest it was read from
        (a cache written for another manifest, or before caches recorded theirs)."""
        d = torch.load(path)
        saved = d.pop("source", None)
        if source is not None and saved != source:
            return None
        return cls(**d)


def split_by_speaker(frames: FrameSet, dev_fraction: float, seed: int = 0) -> Tuple[List[int], List[int]]:
    """Utterance indices of (train, dev), dev being whole speakers (about ``dev_fraction`` of them)."""
    speakers = sorted(set(frames.speakers))
    rng = random.Random(seed)
    rng.shuffle(speakers)
    n_dev = max(1, round(dev_fraction * len(speakers))) if dev_fraction > 0 and len(speakers) > 1 else 0
    dev_spk = set(speakers[:n_dev])
    train = [i for i, s in enumerate(frames.speakers) if s not in dev_spk]
    dev = [i for i, s in enumerate(frames.speakers) if s in dev_spk]
    return train, dev


def subset_utterances(num_utts: int, fraction: float, seed: int = 0) -> List[int]:
    """A random ``fraction`` of utterances (the paper's 3% experiment), sorted."""
    rng = random.Random(seed)
    k = max(1, round(fraction * num_utts))
    return sorted(rng.sample(range(num_utts), k))


def frame_batches(
    num_frames: int,
    batch_size: int,
    epoch: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    labels: Optional[torch.Tensor] = None,
) -> Iterator[torch.Tensor]:
    """Shuffled frame indices for one epoch, the same permutation on every rank, each rank taking
    every ``world_size``-th index of it; every rank yields the same number of batches (DDP needs
    that). The ranks' i-th batches together are the i-th batch of one process with a batch
    ``world_size`` times larger, so N ranks train the model that one process would (to rounding).
    Unlabelled frames (label -1) are left out when ``labels`` is given."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(num_frames, generator=g)
    if labels is not None:
        perm = perm[labels[perm] >= 0]
    per_rank = len(perm) // world_size
    mine = perm[rank::world_size][:per_rank] if world_size > 1 else perm
    for i in range(0, per_rank, batch_size):
        yield mine[i : i + batch_size]
