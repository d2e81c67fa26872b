"""Generalist + specialists (Hinton, Vinyals & Dean 2015, section 5 and 6.1), model-agnostic parts.

- Clusters of confusable classes: :func:`prediction_covariance` (covariance of the generalist's
  predicted probabilities; no true labels), :func:`online_kmeans` (MacQueen's on-line K-means,
  restarts, k-means++ seeding) over the covariance's columns, :func:`cluster_classes` (several
  runs -> possibly overlapping specialist subsets), and comparisons with known groupings
  (:func:`adjusted_rand_index`, :func:`cluster_purity`).
- Dustbin specialists: :func:`dustbin_labels` maps a class id to the specialist's output (its
  special classes first, in order, then one dustbin for every other class);
  :func:`oversampling_log_factor` and :func:`correct_dustbin_bias` undo the bias of training on
  batches that are half special (the paper increments the dustbin logit by the log of the factor
  by which the special data was oversampled).
- Section 6.1 targets: :func:`special_hard_soft_targets` (hard targets among the special classes,
  the generalist's soft targets among the others) for full-softmax specialists.
- Inference: :func:`active_specialists` (specialists whose subset meets the generalist's top-n
  classes) and :func:`combine_kl` (``q = softmax(z)`` minimising ``KL(p_g, q) + sum_m KL(p_m, q_m)``
  where ``q_m`` is ``q`` with the non-special classes of specialist ``m`` summed into its dustbin;
  gradient descent on ``z``, batched over images).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

# ----------------------------------------------------------------------------- clustering


def prediction_covariance(probs: torch.Tensor) -> torch.Tensor:
    """``[C, C]`` covariance of the predicted class probabilities ``probs`` ``[N, C]``.

    Entry ``(i, j)`` is large when the model tends to give probability to ``i`` and ``j`` on the
    same images, i.e. when it confuses them.
    """
    p = probs.double()
    p = p - p.mean(0, keepdim=True)
    return (p.T @ p / max(p.shape[0] - 1, 1)).float()


def _kmeanspp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    n = len(points)
    centers = [points[rng.integers(n)]]
    d2 = ((points - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        i = rng.integers(n) if total <= 0 else rng.choice(n, p=d2 / total)
        centers.append(points[i])
        d2 = np.minimum(d2, ((points - points[i]) ** 2).sum(1))
    return np.array(centers, dtype=np.float64)


def online_kmeans(
    points: np.ndarray,
    k: int,
    passes: int = 20,
    restarts: int = 10,
    seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray, float]:
    """MacQueen's on-line K-means: ``(assignment [n], centroids [k, d], inertia)``.

    Points are visited one at a time in a random order; each moves its nearest centroid towards
    itself by ``1/count``. Several passes (stopping early when no assignment changes), ``restarts``
    k-means++ seedings, the lowest within-cluster sum of squares kept. The final assignment is to
    the nearest centroid; clusters left empty are removed and the ids compacted.
    """
    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    rng = np.random.default_rng(seed)
    best = None
    for _ in range(restarts):
        cent = _kmeanspp(x, k, rng)
        counts = np.ones(k)
        prev = None
        for _ in range(passes):
            assign = np.empty(n, dtype=np.int64)
            for i in rng.permutation(n):
                j = int(((cent - x[i]) ** 2).sum(1).argmin())
                counts[j] += 1
                cent[j] += (x[i] - cent[j]) / counts[j]
                assign[i] = j
            if prev is not None and np.array_equal(prev, assign):
                break
            prev = assign
        d2 = ((x[:, None, :] - cent[None]) ** 2).sum(-1)
        assign = d2.argmin(1)
        inertia = float(d2[np.arange(n), assign].sum())
        if best is None or inertia < best[2]:
            best = (assign, cent, inertia)
    assign, cent, inertia = best
    used = np.unique(assign)
    remap = np.full(k, -1)
    remap[used] = np.arange(len(used))
    return remap[assign], cent[used], inertia


def covariance_columns(cov: torch.Tensor, normalize: bool = True) -> np.ndarray:
    """The points K-means clusters: the covariance's columns, optionally scaled to unit length
    (so that a class's overall variance does not decide its cluster, only its pattern of
    co-occurrence)."""
    cols = cov.double().numpy().T.copy()
    if normalize:
        cols /= np.maximum(np.linalg.norm(cols, axis=1, keepdims=True), 1e-12)
    return cols


def cluster_classes(
    cov: torch.Tensor,
    num_clusters: int,
    runs: int = 1,
    min_size: int = 2,
    normalize: bool = True,
    seed: int = 0,
    restarts: int = 10,
    max_size: Optional[int] = None,
) -> Tuple[List[List[int]], List[np.ndarray]]:
    """Specialist subsets from ``runs`` on-line K-means clusterings of the covariance columns.

    Each run partitions the classes; the subsets of all runs (duplicates removed, those smaller
    than ``min_size`` or larger than ``max_size`` dropped) become the specialists, so a class is
    covered by up to ``runs`` specialists (a cluster of most classes is no specialty). Returns ``(subsets, assignments of each run)``.
    """
    points = covariance_columns(cov, normalize)
    subsets, seen, partitions = [], set(), []
    for r in range(runs):
        assign, _, _ = online_kmeans(points, num_clusters, seed=seed + 1000 * r, restarts=restarts)
        partitions.append(assign)
        for c in range(assign.max() + 1):
            s = tuple(int(i) for i in np.nonzero(assign == c)[0])
            if len(s) >= min_size and (max_size is None or len(s) <= max_size) and s not in seen:
                seen.add(s)
                subsets.append(list(s))
    return subsets, partitions


def within_covariance(cov: torch.Tensor, subset: Sequence[int]) -> float:
    """Mean off-diagonal covariance inside ``subset``: how much the generalist confuses it."""
    s = list(subset)
    if len(s) < 2:
        return 0.0
    block = cov[s][:, s].double()
    return float((block.sum() - block.diagonal().sum()) / (len(s) * (len(s) - 1)))


def adjusted_rand_index(a: Sequence[int], b: Sequence[int]) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings of the same items (1 = identical)."""
    a = np.asarray(a)
    b = np.asarray(b)
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)

    def comb2(x):
        return (x * (x - 1) / 2.0).sum()

    n = len(a)
    index = comb2(table)
    rows, cols = comb2(table.sum(1)), comb2(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2.0)
    maximum = (rows + cols) / 2.0
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))


def cluster_purity(assign: Sequence[int], truth: Sequence[int]) -> float:
    """Fraction of items whose cluster's most common true group is their own."""
    assign = np.asarray(assign)
    truth = np.asarray(truth)
    hits = 0
    for c in np.unique(assign):
        hits += np.bincount(truth[assign == c]).max()
    return float(hits / len(assign))


# ----------------------------------------------------------------------------- dustbin


def dustbin_labels(labels: torch.Tensor, classes: Sequence[int], num_classes: int) -> torch.Tensor:
    """Map class ids to a dustbin specialist's outputs: ``classes[i] -> i``, anything else ->
    ``len(classes)`` (the dustbin)."""
    table = torch.full((num_classes,), len(classes), dtype=torch.long)
    table[torch.as_tensor(list(classes), dtype=torch.long)] = torch.arange(len(classes))
    return table[labels.long()]


def oversampling_log_factor(special_fraction_data: float, special_fraction_train: float = 0.5) -> float:
    """log of the factor by which the special data is oversampled, measured in odds.

    With special examples a fraction ``f`` of the data but ``f'`` (one half) of the training
    batches, Bayes' rule says the trained model's odds of "special class" over "dustbin" are
    ``(f'/(1-f')) / (f/(1-f))`` times too high; adding the log of that to the dustbin logit restores
    the data's priors. (For small ``f`` this is about ``log(f'/f) + log 2``; the paper's wording,
    "the log of the proportion by which the specialist data is oversampled", reads as ``log(f'/f)``.)
    """
    f, g = special_fraction_data, special_fraction_train
    if not (0 < f < 1 and 0 < g < 1):
        raise ValueError("fractions must be in (0, 1)")
    return math.log(g / (1 - g)) - math.log(f / (1 - f))


@torch.no_grad()
def correct_dustbin_bias(head: torch.nn.Linear, log_factor: float) -> None:
    """Add ``log_factor`` to the dustbin (last) logit, folded into the specialist's output layer (its
    dustbin bias)."""
    head.bias[-1] += log_factor


# ----------------------------------------------------------------------------- section 6.1


def special_hard_soft_targets(
    generalist_probs: torch.Tensor, labels: torch.Tensor, classes: Sequence[int]
) -> torch.Tensor:
    """Targets of a full-softmax specialist: hard among its special classes, soft among the others.

    The generalist's distribution ``p`` is kept on the non-special classes; the mass it gives to
    the special classes is moved to the true class. For an image of a special class, the special
    classes thus get the hard target (all their mass on the label); for any other image they get
    the hard target's zero. Rows sum to one.
    """
    p = generalist_probs.float().clone()
    special = torch.zeros(p.shape[-1], dtype=torch.bool)
    special[torch.as_tensor(list(classes), dtype=torch.long)] = True
    mass = p[:, special].sum(1)
    p[:, special] = 0.0
    p[torch.arange(len(p)), labels.long()] += mass
    return p


# ----------------------------------------------------------------------------- inference


def active_specialists(generalist_probs: torch.Tensor, subsets: Sequence[Sequence[int]], top_n: int = 1) -> torch.Tensor:
    """``[B, M]`` bool: specialist ``m`` is active on an image when its subset contains one of the
    generalist's ``top_n`` most probable classes for that image."""
    num_classes = generalist_probs.shape[-1]
    member = torch.zeros(len(subsets), num_classes, dtype=torch.bool)
    for m, s in enumerate(subsets):
        member[m, list(s)] = True
    top = generalist_probs.topk(top_n, dim=-1).indices  # [B, n]
    return member[:, top].any(-1).T  # [M, B, n] -> [B, M]


def _specialist_log_q(log_q: torch.Tensor, special: torch.Tensor) -> torch.Tensor:
    """log of ``q`` with the non-special classes summed into a trailing dustbin entry."""
    rest = log_q.masked_fill(special, -math.inf)
    return torch.cat([log_q[:, special], torch.logsumexp(rest, dim=-1, keepdim=True)], dim=-1)


def _terms(subsets, active, num_classes, device):
    """Per specialist: the rows (images) where it is active and its special-class mask."""
    out = []
    for m, s in enumerate(subsets):
        rows = torch.nonzero(active[:, m]).flatten()
        special = torch.zeros(num_classes, dtype=torch.bool, device=device)
        special[list(s)] = True
        out.append((rows, special))
    return out


def kl_objective(
    z: torch.Tensor,
    generalist_probs: torch.Tensor,
    specialist_probs: Sequence[torch.Tensor],
    subsets: Sequence[Sequence[int]],
    active: torch.Tensor,
    full_cover: bool = False,
    terms=None,
) -> torch.Tensor:
    """Per-image ``KL(p_g, q) + sum_m active_m KL(p_m, q_m)`` up to the constant entropies
    (i.e. the cross-entropies), ``q = softmax(z)``. ``full_cover=True`` treats each ``p_m`` as a
    distribution over all classes (no dustbin)."""
    log_q = torch.log_softmax(z, dim=-1)
    loss = -(generalist_probs * log_q).sum(-1)
    if terms is None:
        terms = _terms(subsets, active, z.shape[-1], z.device)
    for p_m, (rows, special) in zip(specialist_probs, terms):
        if rows.numel() == 0:  # only the images this specialist sees count
            continue
        lq = log_q[rows]
        if not full_cover:
            lq = _specialist_log_q(lq, special)
        loss = loss.index_add(0, rows, -(p_m[rows] * lq).sum(-1))
    return loss


def combine_kl(
    generalist_probs: torch.Tensor,
    specialist_probs: Sequence[torch.Tensor],
    subsets: Sequence[Sequence[int]],
    active: Optional[torch.Tensor] = None,
    steps: int = 300,
    lr: float = 0.3,
    full_cover: bool = False,
) -> torch.Tensor:
    """The combined distribution ``q`` ``[B, C]`` of the generalist and the active specialists.

    ``specialist_probs[m]`` is ``[B, |S_m|+1]`` (special classes in the order of ``subsets[m]``,
    then the dustbin; rows of inactive images are ignored). ``active`` ``[B, M]`` defaults to all
    active. ``q = softmax(z)`` minimises ``KL(p_g, q) + sum_m KL(p_m, q_m)``, the paper's
    objective, by Adam on ``z`` (per-coordinate, so the images of a batch do not interact),
    starting from ``z = log p_g`` with a cosine-decayed step size. With every model covering every
    class (``full_cover=True``) the minimiser is the arithmetic mean of the distributions.
    """
    pg = generalist_probs.float()
    b = pg.shape[0]
    if active is None:
        active = torch.ones(b, len(subsets), dtype=torch.bool, device=pg.device)
    sp = [p.float() for p in specialist_probs]
    z = torch.log(pg.clamp_min(1e-8)).detach().requires_grad_(True)
    if b == 0 or not active.any():
        return pg.clone()
    terms = _terms(subsets, active, pg.shape[-1], pg.device)
    opt = torch.optim.Adam([z], lr=lr)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = kl_objective(z, pg, sp, subsets, active, full_cover, terms).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(z.detach(), dim=-1)
