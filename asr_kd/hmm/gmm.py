"""A set of diagonal-covariance GMMs, one per pdf-id (Kaldi's ``AmDiagGmm``), in torch.

Parameters are stored padded, ``[num_pdfs, max_gauss, dim]``; unused slots have log-weight
-inf. Log-likelihoods use the quadratic expansion (one matmul of ``[x^2, x]`` against
``[-0.5/var, mean/var]``), as Kaldi's ``DiagGmm::LogLikelihoods`` does. Statistics are
accumulated in float64.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

LOG_2PI = math.log(2 * math.pi)


@dataclass
class GmmAccs:
    """Zeroth, first and second order statistics per Gaussian: ``occ [P, G]``, ``x [P, G, D]``,
    ``x2 [P, G, D]`` (float64)."""

    occ: torch.Tensor
    x: torch.Tensor
    x2: torch.Tensor

    @classmethod
    def zeros(cls, num_pdfs: int, max_gauss: int, dim: int, device="cpu") -> "GmmAccs":
        z = dict(dtype=torch.float64, device=device)
        return cls(torch.zeros(num_pdfs, max_gauss, **z), torch.zeros(num_pdfs, max_gauss, dim, **z),
                   torch.zeros(num_pdfs, max_gauss, dim, **z))

    def __getstate__(self) -> dict:  # numpy, not torch's shared memory (see DiagGmmSet.__getstate__)
        return {k: getattr(self, k).cpu().numpy() for k in ("occ", "x", "x2")}

    def __setstate__(self, d: dict) -> None:
        for k, v in d.items():
            setattr(self, k, torch.from_numpy(v))

    def merge(self, other: "GmmAccs") -> None:
        self.occ += other.occ
        self.x += other.x
        self.x2 += other.x2

    def pdf_occupancy(self) -> torch.Tensor:
        return self.occ.sum(1)


class DiagGmmSet:
    """Diagonal GMMs for ``num_pdfs`` pdfs (senones)."""

    def __init__(self, means: torch.Tensor, variances: torch.Tensor, log_weights: torch.Tensor):
        self.means = means.double()  # [P, G, D]
        self.vars = variances.double()  # [P, G, D]
        self.log_weights = log_weights.double()  # [P, G]; -inf = unused slot
        self._cache = None
        self._acc_cache = None

    # What a GMM job is sent: the parameters (not the caches), as numpy arrays. A torch tensor
    # pickled by multiprocessing is moved to shared memory instead (torch.multiprocessing's
    # reductions), and two job queues doing that to the same tensor at once crash the process.
    def __getstate__(self) -> dict:
        return {k: getattr(self, k).cpu().numpy() for k in ("means", "vars", "log_weights")}

    def __setstate__(self, d: dict) -> None:
        self.__init__(torch.from_numpy(d["means"]), torch.from_numpy(d["vars"]), torch.from_numpy(d["log_weights"]))

    # ---- construction / io ----
    @classmethod
    def single_gaussian(cls, mean: torch.Tensor, var: torch.Tensor, num_pdfs: int) -> "DiagGmmSet":
        """Every pdf one Gaussian with the given mean and variance (flat start)."""
        D = mean.shape[-1]
        means = mean.double().reshape(1, 1, D).repeat(num_pdfs, 1, 1)
        vars_ = var.double().reshape(1, 1, D).repeat(num_pdfs, 1, 1)
        return cls(means, vars_, torch.zeros(num_pdfs, 1, dtype=torch.float64))

    @property
    def num_pdfs(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[2]

    @property
    def max_gauss(self) -> int:
        return self.means.shape[1]

    def num_gauss(self) -> torch.Tensor:
        return torch.isfinite(self.log_weights).sum(1)

    def total_gauss(self) -> int:
        return int(self.num_gauss().sum())

    def state_dict(self) -> dict:
        return {"means": self.means, "vars": self.vars, "log_weights": self.log_weights}

    @classmethod
    def from_state_dict(cls, d: dict) -> "DiagGmmSet":
        return cls(d["means"], d["vars"], d["log_weights"])

    def to(self, device) -> "DiagGmmSet":
        return DiagGmmSet(self.means.to(device), self.vars.to(device), self.log_weights.to(device))

    # ---- likelihoods ----
    def _params(self, device, dtype=torch.float32):
        """Cached ``(W [2D, P*G], const [P*G])`` for the quadratic-expansion log-likelihood."""
        key = (str(device), dtype)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        prec = 1.0 / self.vars
        P, G, D = self.means.shape
        W = torch.cat([-0.5 * prec, self.means * prec], dim=2).reshape(P * G, 2 * D).t()
        const = self.log_weights - 0.5 * (D * LOG_2PI + torch.log(self.vars).sum(2) + (self.means**2 * prec).sum(2))
        out = (W.to(device=device, dtype=dtype).contiguous(), const.reshape(-1).to(device=device, dtype=dtype))
        self._cache = (key, out)
        return out

    def component_loglikes(self, x: torch.Tensor) -> torch.Tensor:
        """All Gaussians' weighted log-likelihoods ``[T, P, G]`` (unused slots -inf)."""
        W, const = self._params(x.device, x.dtype)
        xx = torch.cat([x * x, x], dim=1)
        return (xx @ W + const).reshape(x.shape[0], self.num_pdfs, self.max_gauss)

    def loglikes(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Per-pdf log-likelihoods ``[T, P]`` of frames ``x [T, D]`` (computed in ``x``'s dtype)."""
        out = []
        for s in range(0, x.shape[0], chunk):
            out.append(torch.logsumexp(self.component_loglikes(x[s : s + chunk]), dim=2))
        if not out:
            return x.new_zeros(0, self.num_pdfs)
        return torch.cat(out)

    def loglikes_subset(self, x: torch.Tensor, pdfs: torch.Tensor) -> torch.Tensor:
        """Log-likelihoods ``[T, len(pdfs)]`` of only the given pdfs (an utterance's training graph
        uses a small fraction of a triphone system's pdfs)."""
        W, const = self._params(x.device, x.dtype)
        G = self.max_gauss
        idx = (pdfs.to(x.device).long()[:, None] * G + torch.arange(G, device=x.device)).reshape(-1)
        xx = torch.cat([x * x, x], dim=1)
        ll = (xx @ W[:, idx] + const[idx]).reshape(x.shape[0], len(pdfs), G)
        return torch.logsumexp(ll, dim=2)

    # ---- training ----
    def accumulate(self, x: torch.Tensor, pdfs: torch.Tensor, accs: GmmAccs, chunk: int = 200000) -> float:
        """Viterbi-style accumulation: frame t belongs to pdf ``pdfs[t]``; within the pdf, Gaussian
        posteriors. Frames are grouped by pdf (stable sort: the order of a pdf's frames is theirs
        in ``x``) so each pdf costs two small matmuls (float64); ``chunk`` frames at a time bound
        the memory. The same frames in the same order give the same sums bit for bit (the GMM
        jobs rely on it: :mod:`asr_kd.hmm.jobs`). Returns the total log-likelihood."""
        return sum(self._accumulate(x[s : s + chunk], pdfs[s : s + chunk], accs) for s in range(0, x.shape[0], chunk))

    def _acc_params(self):
        """Cached ``(W [P, 2D, G], const [P, G])`` of the accumulation (float64; unused slots -inf)."""
        if self._acc_cache is None:
            prec = 1.0 / self.vars
            D = self.dim
            W = torch.cat([-0.5 * prec, self.means * prec], dim=2).transpose(1, 2).contiguous()
            const = self.log_weights - 0.5 * (D * LOG_2PI + torch.log(self.vars).sum(2) + (self.means**2 * prec).sum(2))
            const = torch.where(torch.isfinite(self.log_weights), const, torch.full_like(const, -math.inf))
            self._acc_cache = (W, const)
        return self._acc_cache

    def _accumulate(self, x: torch.Tensor, pdfs: torch.Tensor, accs: GmmAccs) -> float:
        if x.shape[0] == 0:
            return 0.0
        W, const = self._acc_params()
        x = x.to(self.means.device, torch.float64)
        pdfs = pdfs.to(self.means.device).long()
        order = torch.argsort(pdfs, stable=True)
        xs = x[order]
        xx = torch.cat([xs * xs, xs], dim=1)  # [x^2, x]: the statistics of one matmul
        uniq, counts = torch.unique_consecutive(pdfs[order], return_counts=True)
        P, G, D = self.means.shape
        stats = torch.zeros(P, G, 2 * D, dtype=torch.float64, device=x.device)
        tot = []
        start = 0
        for p, n in zip(uniq.tolist(), counts.tolist()):
            xp = xx[start : start + n]
            start += n
            ll = torch.addmm(const[p], xp, W[p])  # [n, G]; unused slots -inf, posterior 0
            fl = torch.logsumexp(ll, dim=1)
            tot.append(fl.sum())
            post = ll.sub_(fl[:, None]).exp_()
            accs.occ[p] += post.sum(0)
            stats[p] += post.t() @ xp
        accs.x2 += stats[:, :, :D]
        accs.x += stats[:, :, D:]
        return float(torch.stack(tot).sum())

    def new_accs(self) -> GmmAccs:
        return GmmAccs.zeros(self.num_pdfs, self.max_gauss, self.dim, self.means.device)

    def update(
        self,
        accs: GmmAccs,
        var_floor: Optional[torch.Tensor] = None,
        min_gaussian_occupancy: float = 10.0,
        min_gaussian_weight: float = 1e-5,
        min_variance: float = 1e-3,
    ) -> dict:
        """MLE update (Kaldi's ``MleDiagGmmUpdate``): Gaussians with too little occupancy keep their
        means/variances; Gaussians whose weight falls below ``min_gaussian_weight`` are removed
        (unless it is the pdf's last one); variances are floored at ``var_floor`` (per dimension)
        and ``min_variance``. Returns counts of what happened."""
        occ = accs.occ
        pdf_occ = occ.sum(1, keepdim=True)
        used = torch.isfinite(self.log_weights)
        ok_pdf = pdf_occ[:, 0] > 0
        new_w = torch.where(pdf_occ > 0, occ / pdf_occ.clamp_min(1e-300), torch.exp(self.log_weights))
        upd = used & (occ >= min_gaussian_occupancy) & ok_pdf[:, None]
        safe = occ.clamp_min(1e-300)[..., None]
        mean = accs.x / safe
        var = accs.x2 / safe - mean**2
        floor = torch.full((self.dim,), min_variance, dtype=torch.float64, device=var.device)
        if var_floor is not None:
            floor = torch.maximum(floor, var_floor.to(var))
        n_floored = int(((var < floor) & upd[..., None]).sum())
        var = torch.maximum(var, floor)
        self.means = torch.where(upd[..., None], mean, self.means)
        self.vars = torch.where(upd[..., None], var, self.vars)
        # remove low-weight Gaussians (never the last of a pdf)
        remove = used & (new_w < min_gaussian_weight) & ok_pdf[:, None]
        keep_last = remove.sum(1) >= used.sum(1)
        remove &= ~keep_last[:, None]
        new_w = torch.where(used & ~remove, new_w, torch.zeros_like(new_w))
        new_w = new_w / new_w.sum(1, keepdim=True).clamp_min(1e-300)
        self.log_weights = torch.where(used & ~remove, torch.log(new_w.clamp_min(1e-300)),
                                       torch.full_like(new_w, -math.inf))
        self._cache = self._acc_cache = None
        return {"updated_gauss": int(upd.sum()), "floored_dims": n_floored, "removed_gauss": int(remove.sum()),
                "pdfs_without_data": int((~ok_pdf).sum())}

    def split(self, target_total: int, pdf_occ: torch.Tensor, power: float = 0.2, perturb: float = 0.01,
              min_count: float = 20.0) -> int:
        """Mix up to ``target_total`` Gaussians (Kaldi's ``AmDiagGmm::SplitByCount``): targets per pdf
        proportional to occupancy^power (a pdf gets no more than occ/min_count Gaussians); each split
        takes the pdf's heaviest Gaussian and moves the two halves +-perturb standard deviations
        apart. Returns the new total."""
        cur = self.num_gauss().tolist()
        targets = _split_targets(pdf_occ.double().cpu().numpy(), cur, target_total, power, min_count)
        newG = max(max(targets), self.max_gauss)
        if newG > self.max_gauss:
            pad = newG - self.max_gauss
            P, G, D = self.means.shape
            self.means = torch.cat([self.means, self.means.new_zeros(P, pad, D)], 1)
            self.vars = torch.cat([self.vars, self.vars.new_ones(P, pad, D)], 1)
            self.log_weights = torch.cat([self.log_weights, self.log_weights.new_full((P, pad), -math.inf)], 1)
        for p, (n, t) in enumerate(zip(cur, targets)):
            if t <= n:
                continue
            lw = self.log_weights[p]
            for _ in range(t - n):
                used = torch.isfinite(lw).nonzero()[:, 0]
                free = int((~torch.isfinite(lw)).nonzero()[0, 0])
                g = int(used[torch.argmax(lw[used])])
                delta = perturb * torch.sqrt(self.vars[p, g])
                self.means[p, free] = self.means[p, g] + delta
                self.means[p, g] = self.means[p, g] - delta
                self.vars[p, free] = self.vars[p, g]
                lw[g] = lw[g] - math.log(2.0)
                lw[free] = lw[g]
        self._cache = self._acc_cache = None
        return self.total_gauss()


def _split_targets(occ: np.ndarray, cur, target_total: int, power: float, min_count: float):
    """Kaldi's ``GetSplitTargets``: greedily give the next Gaussian to the pdf with the largest
    occ^power / num_gauss, respecting occ / min_count per pdf."""
    targets = list(cur)
    total = sum(targets)
    heap = []
    for p, o in enumerate(occ):
        if o > 0:
            heapq.heappush(heap, (-(o**power) / targets[p], p))
    while total < target_total and heap:
        _, p = heapq.heappop(heap)
        if (targets[p] + 1) * min_count > occ[p]:
            continue  # not enough data for another Gaussian
        targets[p] += 1
        total += 1
        heapq.heappush(heap, (-(occ[p] ** power) / targets[p], p))
    return targets


def global_mean_var(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    mean = x.mean(0)
    return mean, (x * x).mean(0) - mean * mean
