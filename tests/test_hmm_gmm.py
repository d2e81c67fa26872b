import math

import numpy as np
import torch

from asr_kd.hmm.gmm import DiagGmmSet
from asr_kd.hmm.topology import HmmTopology, TransitionModel


def _direct_loglike(x, means, vars_, logw):
    # [T, P, G] by the textbook formula
    d = x[:, None, None, :] - means[None]
    ll = -0.5 * ((d**2) / vars_[None] + torch.log(2 * math.pi * vars_[None])).sum(-1) + logw[None]
    return torch.logsumexp(ll, dim=2)


def test_loglikes_match_the_direct_formula():
    torch.manual_seed(0)
    P, G, D = 4, 3, 5
    means = torch.randn(P, G, D)
    vars_ = torch.rand(P, G, D) + 0.2
    logw = torch.log_softmax(torch.randn(P, G), dim=1)
    logw[1, 2] = -math.inf  # an unused slot
    gmm = DiagGmmSet(means, vars_, logw)
    x = torch.randn(50, D, dtype=torch.float64)
    ref = _direct_loglike(x, means.double(), vars_.double(), logw.double())
    np.testing.assert_allclose(gmm.loglikes(x, chunk=16).numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gmm.loglikes(x.float()).double().numpy(), ref.numpy(), rtol=1e-4, atol=1e-3)


def test_em_recovers_a_two_component_mixture():
    rng = np.random.RandomState(0)
    D = 3
    x0 = rng.randn(4000, D) * 0.5 + 4.0
    x1 = rng.randn(4000, D) * 1.0 - 4.0
    y = rng.randn(3000, D) * 2.0 + 1.0  # second pdf: one Gaussian
    x = torch.from_numpy(np.concatenate([x0, x1, y]))
    pdfs = torch.tensor([0] * 8000 + [1] * 3000)
    gmm = DiagGmmSet.single_gaussian(x.mean(0), x.var(0), 2)
    accs = gmm.new_accs()
    gmm.accumulate(x, pdfs, accs)
    gmm.update(accs)
    np.testing.assert_allclose(gmm.means[1, 0].numpy(), 1.0, atol=0.15)
    np.testing.assert_allclose(gmm.vars[1, 0].numpy(), 4.0, rtol=0.1)
    # mix up to 3 Gaussians in total: the pdf with more data gets the new one
    gmm.split(3, accs.pdf_occupancy())
    assert gmm.num_gauss().tolist() == [2, 1]
    prev = -math.inf
    for _ in range(15):
        accs = gmm.new_accs()
        like = gmm.accumulate(x, pdfs, accs)
        assert like >= prev - 1e-6  # EM never decreases the likelihood
        prev = like
        gmm.update(accs)
    m = sorted(gmm.means[0, :, 0].tolist())
    np.testing.assert_allclose(m, [-4.0, 4.0], atol=0.1)
    w = torch.exp(gmm.log_weights[0]).numpy()
    np.testing.assert_allclose(w, [0.5, 0.5], atol=0.02)


def test_update_floors_variances_and_skips_low_counts():
    x = torch.zeros(100, 2, dtype=torch.float64)  # zero variance data
    x[:, 1] = 3.0
    gmm = DiagGmmSet.single_gaussian(torch.zeros(2), torch.ones(2), 2)
    accs = gmm.new_accs()
    gmm.accumulate(torch.cat([x, x[:5]]), torch.tensor([0] * 100 + [1] * 5), accs)
    stats = gmm.update(accs, var_floor=torch.tensor([0.5, 0.5]), min_gaussian_occupancy=10)
    assert torch.allclose(gmm.vars[0, 0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert stats["floored_dims"] == 2
    # pdf 1 saw only 5 frames (< 10): its Gaussian keeps the old parameters
    assert torch.allclose(gmm.means[1, 0], torch.zeros(2, dtype=torch.float64))


def test_split_respects_min_count_and_target():
    gmm = DiagGmmSet.single_gaussian(torch.zeros(2), torch.ones(2), 3)
    occ = torch.tensor([1000.0, 100.0, 0.0])
    total = gmm.split(20, occ, min_count=20)
    n = gmm.num_gauss().tolist()
    assert total == sum(n) == 20
    assert n[2] == 1 and n[1] <= 5 and n[0] > n[1]
    # weights stay normalised
    np.testing.assert_allclose(torch.logsumexp(gmm.log_weights, 1).numpy(), 0.0, atol=1e-9)


def test_transition_reestimation():
    topo = HmmTopology.build([1, 2], silence_phones=[1], num_states=3, num_sil_states=5)
    assert topo[1] == 5 and topo[2] == 3
    tm = TransitionModel.init(topo)
    accs = tm.new_accs()
    # phone 2: state durations 4, 2, 10 frames -> self-loop probs 3/4, 1/2, 9/10 (x 10 utterances)
    phones = [2] * 16
    states = [0] * 4 + [1] * 2 + [2] * 10
    start = [True] + [False] * 15
    for _ in range(10):
        accs.add_alignment(phones, states, start)
    tm.update(accs, min_count=5)
    np.testing.assert_allclose(tm.loop[2], [0.75, 0.5, 0.9])
    assert tm.loop[1][0] == 0.75  # no data: unchanged
    # two consecutive instances of the same phone are not a self-loop
    accs = tm.new_accs()
    accs.add_alignment([2] * 6, [0, 1, 2, 0, 1, 2], [True, False, False, True, False, False])
    assert accs.counts[2][:, 0].sum() == 0 and accs.counts[2][:, 1].sum() == 6
