"""The distillation core: tempered softmax, the paper's loss, logit matching, ensembles."""
import math

import pytest
import torch

from asr_kd.distill import (
    DistillationLoss,
    distillation_loss,
    ensemble_probs,
    logit_matching_loss,
    soft_cross_entropy,
    tempered_softmax,
)


def zero_mean(x):
    return x - x.mean(-1, keepdim=True)


def test_tempered_softmax_softens():
    z = torch.tensor([[4.0, 1.0, 0.0]])
    p1, p5 = tempered_softmax(z, 1), tempered_softmax(z, 5)
    assert torch.allclose(p1.sum(-1), torch.ones(1)) and torch.allclose(p5.sum(-1), torch.ones(1))
    assert p5.max() < p1.max() and p5.min() > p1.min()
    assert torch.allclose(tempered_softmax(z, 1e6), torch.full((1, 3), 1 / 3), atol=1e-5)


def test_soft_cross_entropy_gradient_is_q_minus_p_over_T():
    torch.manual_seed(0)
    z = torch.randn(1, 7, requires_grad=True)
    v = torch.randn(1, 7)
    T = 3.0
    p = tempered_softmax(v, T)
    soft_cross_entropy(z, p, T).backward()
    q = tempered_softmax(z.detach(), T)
    assert torch.allclose(z.grad, (q - p) / T, atol=1e-6)


@pytest.mark.parametrize("T", [20.0, 50.0])
def test_high_temperature_gradient_is_logit_difference(T):
    """dC/dz_i -> (z_i - v_i) / (N T^2) for zero-meaned logits (paper, eq. 4)."""
    torch.manual_seed(1)
    n = 10
    z = zero_mean(torch.randn(1, n)).requires_grad_()
    v = zero_mean(torch.randn(1, n))
    soft_cross_entropy(z, tempered_softmax(v, T), T).backward()
    expected = (z.detach() - v) / (n * T**2)
    assert torch.allclose(z.grad, expected, rtol=0.05, atol=1e-3 / T**2)


def test_t_squared_scaling_keeps_gradient_size():
    torch.manual_seed(2)
    z0 = zero_mean(torch.randn(4, 10))
    v = zero_mean(torch.randn(4, 10))
    norms = {}
    for T in (2.0, 10.0, 50.0):
        z = z0.clone().requires_grad_()
        distillation_loss(z, tempered_softmax(v, T), temperature=T, hard_weight=0).backward()
        norms[T] = z.grad.norm().item()
    # Without T^2 the gradient would shrink 625x from T=2 to T=50; with it, it converges.
    assert 0.5 < norms[50.0] / norms[2.0] < 2.0
    assert abs(norms[50.0] / norms[10.0] - 1) < 0.05


def test_high_temperature_distillation_equals_logit_matching():
    torch.manual_seed(3)
    z0 = torch.randn(3, 8)
    v = torch.randn(3, 8)
    T = 100.0
    z1 = z0.clone().requires_grad_()
    distillation_loss(z1, tempered_softmax(v, T), temperature=T, hard_weight=0).backward()
    z2 = z0.clone().requires_grad_()
    distillation_loss(z2, teacher_logits=v, logit_matching=True, hard_weight=0).backward()
    assert torch.allclose(z1.grad, z2.grad, rtol=0.02, atol=1e-5)
    assert logit_matching_loss(v + 5.0, v).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant


def test_distillation_loss_combines_soft_and_hard_terms():
    torch.manual_seed(4)
    z = torch.randn(5, 6)
    p = tempered_softmax(torch.randn(5, 6), 2.0)
    y = torch.tensor([0, 1, 2, -100, 4])
    soft = soft_cross_entropy(z, p, 2.0)
    hard = torch.nn.functional.cross_entropy(z, y, ignore_index=-100)
    loss = DistillationLoss(temperature=2.0, hard_weight=0.5)(z, hard_labels=y, soft_targets=p)
    assert loss.item() == pytest.approx(4 * soft.item() + 0.5 * hard.item(), rel=1e-6)
    assert distillation_loss(z, None, y, soft_weight=0, hard_weight=1).item() == pytest.approx(hard.item(), rel=1e-6)
    with pytest.raises(ValueError):
        distillation_loss(z, None, y)
    with pytest.raises(ValueError):
        distillation_loss(z, logit_matching=True)


def test_soft_targets_equal_to_student_minimize_the_loss():
    torch.manual_seed(5)
    v = torch.randn(2, 5)
    T = 4.0
    p = tempered_softmax(v, T)
    at_teacher = soft_cross_entropy(v, p, T)
    for _ in range(5):
        assert soft_cross_entropy(v + 0.3 * torch.randn_like(v), p, T) > at_teacher


def test_ensemble_arithmetic_and_geometric_means():
    torch.manual_seed(6)
    logits = [torch.randn(3, 4) for _ in range(5)]
    T = 2.0
    probs = torch.stack([tempered_softmax(z, T) for z in logits])
    arith = ensemble_probs(logits, T, "arithmetic")
    assert torch.allclose(arith, probs.mean(0), atol=1e-6)
    geo = ensemble_probs(logits, T, "geometric")
    prod = probs.prod(0) ** (1 / len(logits))  # the geometric mean, renormalized
    assert torch.allclose(geo, prod / prod.sum(-1, keepdim=True), atol=1e-6)
    for p in (arith, geo):
        assert torch.allclose(p.sum(-1), torch.ones(3), atol=1e-6)
    # One model: both means are that model's tempered distribution.
    assert torch.allclose(ensemble_probs(logits[:1], T, "geometric"), probs[0], atol=1e-6)
    assert torch.allclose(ensemble_probs(torch.stack(logits[:1]), T), probs[0], atol=1e-6)
    with pytest.raises(ValueError):
        ensemble_probs(logits, T, "median")


def test_geometric_mean_is_softmax_of_mean_logits():
    torch.manual_seed(7)
    logits = torch.randn(4, 2, 9)
    T = 5.0
    assert torch.allclose(ensemble_probs(logits, T, "geometric"), tempered_softmax(logits.mean(0), T), atol=1e-6)
    assert math.isclose(ensemble_probs(logits, T).sum().item(), 2.0, rel_tol=1e-6)


def test_the_loss_object_tempers_and_combines_the_teachers_itself():
    """Given teacher logits, DistillationLoss applies its own temperature (once) and ensemble mean:
    the same as the tempered targets computed by hand; logit matching uses the mean teacher logits."""
    torch.manual_seed(5)
    z, v = torch.randn(5, 6), torch.randn(3, 5, 6)  # a student; an ensemble of 3 teachers
    y = torch.tensor([0, 1, 2, 3, 4])
    for method in ("arithmetic", "geometric"):
        loss = DistillationLoss(temperature=3.0, hard_weight=0.5, ensemble_method=method)
        by_hand = distillation_loss(z, ensemble_probs(v, 3.0, method), y, temperature=3.0, hard_weight=0.5)
        assert loss(z, teacher_logits=v, hard_labels=y).item() == pytest.approx(by_hand.item(), rel=1e-6)
    one = DistillationLoss(temperature=2.0)
    assert one(z, teacher_logits=v[0], hard_labels=y).item() == pytest.approx(
        one(z, hard_labels=y, soft_targets=tempered_softmax(v[0], 2.0)).item(), rel=1e-6)
    lm = DistillationLoss(logit_matching=True, hard_weight=0.0)
    assert lm(z, teacher_logits=v).item() == pytest.approx(logit_matching_loss(z, v.mean(0)).item(), rel=1e-6)
    assert DistillationLoss()(z, hard_labels=y).item() == pytest.approx(
        torch.nn.functional.cross_entropy(z, y).item(), rel=1e-6)
