"""HMM topology and transition model.

Every phone is a left-to-right HMM with self-loops (Kaldi's 3-state topology; silence phones
may have more states). The transition model holds, for each (phone, HMM state), the
probability of staying (self-loop) and of moving on, and re-estimates them from alignment
counts as Kaldi's ``MleUpdate`` does (with a count threshold and a probability floor).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Sequence

import numpy as np


@dataclass
class HmmTopology:
    """Number of emitting states per phone id (phone 0 is epsilon and has no HMM)."""

    num_states: Dict[int, int]

    @classmethod
    def build(
        cls, phones: Iterable[int], silence_phones: Iterable[int] = (), num_states: int = 3, num_sil_states: int = 3
    ) -> "HmmTopology":
        sil = set(silence_phones)
        return cls({int(p): (num_sil_states if p in sil else num_states) for p in phones if p != 0})

    @property
    def phones(self) -> List[int]:
        return sorted(self.num_states)

    def __getitem__(self, phone: int) -> int:
        return self.num_states[phone]

    def to_dict(self) -> dict:
        return {"num_states": {str(k): v for k, v in self.num_states.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "HmmTopology":
        return cls({int(k): int(v) for k, v in d["num_states"].items()})


@dataclass
class TransitionModel:
    """Self-loop probabilities per (phone, state); the forward probability is 1 - self-loop.

    ``loop[phone]`` is an array over the phone's HMM states. Leaving the last state of a phone
    goes into the next phone (or the end of the utterance).
    """

    topo: HmmTopology
    loop: Dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def init(cls, topo: HmmTopology, self_loop_prob: float = 0.75) -> "TransitionModel":
        return cls(topo, {p: np.full(n, self_loop_prob) for p, n in topo.num_states.items()})

    def new_accs(self) -> "TransitionAccs":
        return TransitionAccs({p: np.zeros((n, 2)) for p, n in self.topo.num_states.items()})

    def update(self, accs: "TransitionAccs", min_count: float = 5.0, floor: float = 0.01) -> float:
        """MLE update from (self-loop, forward) counts; returns the average log-prob per frame
        of the transitions under the new model (Kaldi prints the same objective)."""
        tot_obj, tot_count = 0.0, 0.0
        for p, c in accs.counts.items():
            for s in range(c.shape[0]):
                n = c[s].sum()
                if n < min_count:
                    continue
                prob = np.clip(c[s, 0] / n, floor, 1.0 - floor)
                self.loop[p][s] = prob
                tot_obj += c[s, 0] * math.log(prob) + c[s, 1] * math.log(1 - prob)
                tot_count += n
        return tot_obj / max(tot_count, 1.0)

    def to_dict(self) -> dict:
        return {"topo": self.topo.to_dict(), "loop": {str(p): v.tolist() for p, v in self.loop.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "TransitionModel":
        return cls(HmmTopology.from_dict(d["topo"]), {int(p): np.asarray(v, dtype=np.float64) for p, v in d["loop"].items()})


@dataclass
class TransitionAccs:
    """Counts of self-loops (column 0) and forward transitions (column 1) per (phone, state)."""

    counts: Dict[int, np.ndarray]

    def add_alignment(self, phones: Sequence[int], states: Sequence[int], phone_start: Sequence[bool]) -> None:
        """Count transitions along one aligned state sequence: frame t -> t+1 is a self-loop when
        the same HMM state continues, and the last frame leaves its state (to the final state)."""
        phones = np.asarray(phones)
        states = np.asarray(states)
        start = np.asarray(phone_start, dtype=bool)
        T = len(phones)
        if T == 0:
            return
        # frame t is followed by a self-loop iff t+1 stays in the same state of the same phone copy
        same = np.zeros(T, dtype=bool)
        same[:-1] = (phones[1:] == phones[:-1]) & (states[1:] == states[:-1]) & ~start[1:]
        for p in np.unique(phones):
            m = phones == p
            acc = self.counts[int(p)]
            np.add.at(acc[:, 0], states[m & same], 1.0)
            np.add.at(acc[:, 1], states[m & ~same], 1.0)

    def merge(self, other: "TransitionAccs") -> None:
        for p, c in other.counts.items():
            self.counts[p] += c
