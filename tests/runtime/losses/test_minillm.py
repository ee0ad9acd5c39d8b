"""MiniLLM's per-token quantities against float64 references written here: rewards, returns
(every advantage and length normalisation), whitening, the clipped surrogate and its clip
fraction, the importance weights, and the single-step part's gradient."""

from __future__ import annotations

import itertools

import pytest
import torch
from kdlang.runtime.losses import minillm as ml
from kdlang.runtime.losses.divergence_sums import divergence_sum

IGNORE = -100


def fixture(seed: int = 0):
    """Three rows of 5 positions; the rows sampled 5, 3 and 1 tokens."""
    g = torch.Generator().manual_seed(seed)
    student = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    teacher = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float64)
    return student, teacher, mask


def reference_returns(rewards, mask, gamma, advantage, length_norm):
    """The definition, one token at a time: the return from the next token on (future, the
    paper's R_{t+1}) or from t on (current), each discounted from its first reward."""
    rows = rewards.shape[0]
    out = torch.zeros_like(rewards)
    for b in range(rows):
        length = int(mask[b].sum())
        for t in range(length):
            first = t + 1 if advantage == "future" else t
            terms = range(first, length)
            total = sum(gamma ** (u - first) * float(rewards[b, u]) for u in terms)
            if length_norm == "count":
                by = len(terms)
            elif length_norm == "discounted":
                by = sum(gamma ** (u - first) for u in terms)
            else:
                by = 1.0
            out[b, t] = total / by if by else 0.0
    return out


def test_rewards_are_the_teacher_minus_student_log_probs():
    student, teacher, mask = fixture()
    rewards = ml.token_rewards(student, teacher, mask)
    for b, t in itertools.product(range(3), range(5)):
        expected = float(teacher[b, t] - student[b, t]) if mask[b, t] else 0.0
        assert float(rewards[b, t]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.0])
@pytest.mark.parametrize("advantage", ["future", "current"])
@pytest.mark.parametrize("length_norm", ["count", "discounted", "none"])
def test_returns_match_the_definition(gamma, advantage, length_norm):
    student, teacher, mask = fixture(1)
    rewards = ml.token_rewards(student, teacher, mask)
    got = ml.returns(rewards, mask, gamma=gamma, advantage=advantage, length_norm=length_norm)
    expected = reference_returns(rewards, mask, gamma, advantage, length_norm)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_a_hand_computed_return():
    rewards = torch.tensor([[1.0, 2.0, 4.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.float64)
    # future, gamma 0.5, count: t=0: (2 + 0.5*4) / 2 = 2.0; t=1: 4 / 1 = 4; t=2: nothing, 0
    got = ml.returns(rewards, mask, gamma=0.5, advantage="future", length_norm="count")
    assert got.tolist() == [[2.0, 4.0, 0.0]]
    # current, discounted: t=0: (1 + 1 + 1) / 1.75; t=1: (2 + 2) / 1.5; t=2: 4 / 1
    got = ml.returns(rewards, mask, gamma=0.5, advantage="current", length_norm="discounted")
    torch.testing.assert_close(got, torch.tensor([[3 / 1.75, 4 / 1.5, 4.0]], dtype=torch.float64))


def test_whitening_uses_the_counted_tokens_only():
    values = torch.tensor([[1.0, 3.0, 99.0], [5.0, 99.0, 99.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.float64)
    got = ml.whiten(values, mask, ml.moments(values, mask))
    mean, var = 3.0, ((1 - 3) ** 2 + 0 + (5 - 3) ** 2) / 3  # population variance of 1, 3, 5
    expected = torch.tensor([[1 - mean, 0.0, 0.0], [5 - mean, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(got, expected / (var + 1e-8) ** 0.5, rtol=1e-12, atol=1e-12)


def test_the_clipped_surrogate_and_its_clip_fraction_by_hand():
    eps = 0.2
    # ratios exp(new - old) * w: 1.5 (A > 0: clipped to 1.2), 0.5 (A > 0: not clipped, the
    # plain term is the larger loss), 0.5 (A < 0: clipped to 0.8), 1.1 (inside), masked
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.1, 3.0]], dtype=torch.float64)
    weights = torch.tensor([[1.0, 0.5, 2.0, 1.0, 1.0]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.5, -1.0]], dtype=torch.float64)
    new = old + torch.log(ratios / weights)
    advantages = torch.tensor([[2.0, 1.0, -1.0, -3.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.float64)
    new.requires_grad_(True)
    got = ml.clipped_surrogate(new, old, weights, advantages, mask, eps)
    # per token max(-A r, -A clip(r)): max(-3, -2.4) = -2.4; max(-0.5, -0.8) = -0.5;
    # max(0.5, 0.8) = 0.8; max(3.3, 3.3) = 3.3
    assert float(got.total.detach()) == pytest.approx(-2.4 - 0.5 + 0.8 + 3.3, abs=1e-12)
    assert got.clipped == 2 and got.tokens == 4
    assert got.ratio_sum == pytest.approx(1.5 + 0.5 + 0.5 + 1.1)
    assert (got.ratio_min, got.ratio_max) == pytest.approx((0.5, 1.5))
    got.total.backward()
    # d/d new of -A r (r = exp(new - old) w) is -A r where the plain term is taken, else 0
    expected = torch.tensor([[0.0, -1.0 * 0.5, 0.0, 3.0 * 1.1, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(new.grad, expected, rtol=1e-12, atol=1e-12)


def test_importance_weights_are_student_over_mixture():
    student, teacher, _ = fixture(2)
    alpha = 0.2
    got = ml.importance_weights(student, teacher, alpha)
    expected = student.exp() / ((1 - alpha) * student.exp() + alpha * teacher.exp())
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(ml.importance_weights(student, teacher, 0.0), torch.ones_like(student))
    mixed = ml.mixture_logprobs(student, teacher, alpha)
    torch.testing.assert_close(mixed.exp(), (1 - alpha) * student.exp() + alpha * teacher.exp())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_single_step_gradient_is_autograd_of_the_explicit_sum(temperature):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(2, 4, 7, generator=g, dtype=torch.float64)
    t = torch.randn(2, 4, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([[1, 2, IGNORE, 3], [IGNORE, 0, 6, IGNORE]])
    a = s.clone().requires_grad_(True)
    value = divergence_sum(
        a, labels, kind="reverse_kl", temperature=temperature, teacher_logits=t, backend="torch"
    )
    value.backward()
    b = s.clone().requires_grad_(True)
    keep = (labels != IGNORE).double()
    log_q = torch.log_softmax(b / temperature, -1)
    log_p = torch.log_softmax(t / temperature, -1)
    explicit = ((log_q.exp() * (log_q - log_p)).sum(-1) * keep).sum()
    explicit.backward()
    assert float(value.detach()) == pytest.approx(float(explicit.detach()), rel=1e-6)
    torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-5, atol=1e-7)


def test_trl_minillm_advantage_is_current_discounted():
    """TRL's ``_compute_advantage`` with length normalisation, written from its definition:
    cumulative sums from the end of r_i·γ^i and of m_i·γ^i, divided (TRL puts 1e-4 for the
    padding in the second sum, to avoid 0 / 0 there; the sampled tokens' values are these)."""
    student, teacher, mask = fixture(4)
    gamma = 0.8
    rewards = (teacher - student) * mask
    powers = gamma ** torch.arange(5, dtype=torch.float64)
    summed = (rewards * powers).flip(1).cumsum(1).flip(1)
    lengths = (mask * powers).flip(1).cumsum(1).flip(1)
    trl = torch.where(mask > 0, summed / lengths.clamp_min(1e-300), torch.zeros_like(summed))
    got = ml.returns(rewards, mask, gamma=gamma, advantage="current", length_norm="discounted")
    torch.testing.assert_close(got, trl, rtol=1e-12, atol=1e-12)


def test_lmops_minillm_advantage_is_current_count():
    """The released MiniLLM's returns: last = r_t + γ·last from the end, divided by the tokens
    from t to the row's end."""
    student, teacher, mask = fixture(5)
    gamma = 0.95
    rewards = (teacher - student) * mask
    last = torch.zeros(3, dtype=torch.float64)
    backwards = []
    for t in reversed(range(5)):
        last = rewards[:, t] + gamma * last
        backwards.append(last)
    summed = torch.stack(backwards[::-1], dim=1)
    left = mask - mask.cumsum(1) + mask.cumsum(1)[:, -1:]
    lmops = summed / left.masked_fill(left == 0, 1) * mask
    got = ml.returns(rewards, mask, gamma=gamma, advantage="current", length_norm="count")
    torch.testing.assert_close(got, lmops, rtol=1e-12, atol=1e-12)
