"""MiniLLM's policy-gradient objective, as functions of per-token tensors (Gu et al., 2024).

Shapes are ``[B, T]`` over a rollout batch's sampled tokens, ``mask`` 1 where a token was
sampled (0 after a row's end). With the student p_S and the teacher p_T:

- reward ``r_t = log p_T(y_t | y_<t) − log p_S(y_t | y_<t)`` (:func:`token_rewards`): its
  expectation over y_t is −KL(p_S ‖ p_T) at that position;
- return: the discounted sum of the rewards from the next token on, ``R_{t+1} = Σ_{t'>t}
  γ^{t'−t−1} r_{t'}`` (``advantage = "future"``, the paper's: token t's own reward is the
  single-step part), or from t on, ``Σ_{t'≥t} γ^{t'−t} r_{t'}`` (``"current"``, the released
  code and TRL) (:func:`returns`); length normalisation divides it by the
  number of rewards summed (``"count"``, MiniLLM), by the sum of their discounts
  (``"discounted"``, TRL), or not at all (``"none"``); a token with nothing to sum gets 0;
- advantages: the returns, standardised over the batch's tokens when ``whiten`` (MiniLLM);
- the long-term part (:func:`clipped_surrogate`): with ρ_t = exp(log π_θ(y_t) − log π_old(y_t))
  · w_t (``w_t`` the teacher-mixed importance weight p_S / mixture, 1 without mixing),
  Σ_t max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε)), PPO's pessimistic clipped surrogate;
- the single-step part: Σ_t KL(p_S(·|y_<t) ‖ p_T(·|y_<t)), the exact expectation over the
  next token, differentiated (``divergence_sums.divergence_sum`` with ``reverse_kl``).

Sums, not means: the train loop divides by the step's sampled tokens over every process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def token_rewards(
    student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """``r_t = log p_T(y_t) − log p_S(y_t)`` where ``mask``, 0 elsewhere."""
    return (teacher_logprobs - student_logprobs) * mask


def returns(
    rewards: torch.Tensor,
    mask: torch.Tensor,
    *,
    gamma: float,
    advantage: str = "future",
    length_norm: str = "count",
) -> torch.Tensor:
    """Each token's discounted (and length-normalised) return (module docstring)."""
    rewards, mask = rewards * mask, mask.to(rewards.dtype)
    total = torch.zeros_like(rewards[:, 0])
    count = torch.zeros_like(total)  # rewards summed
    weight = torch.zeros_like(total)  # their discounts summed
    out = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        if advantage == "future":  # the sums over t' > t, before token t joins them
            out[:, t] = _normalised(total, count, weight, length_norm)
        total = rewards[:, t] + gamma * total
        count = mask[:, t] + count
        weight = mask[:, t] + gamma * weight
        if advantage == "current":
            out[:, t] = _normalised(total, count, weight, length_norm)
    return out * mask


def _normalised(total, count, weight, length_norm: str) -> torch.Tensor:
    if length_norm == "none":
        return total.clone()
    by = count if length_norm == "count" else weight
    return torch.where(by > 0, total / by.clamp_min(1e-30), torch.zeros_like(total))


def whiten(values: torch.Tensor, mask: torch.Tensor, moments: tuple[float, float, float]):
    """``values`` standardised with the batch's ``moments`` (sum, sum of squares, count over
    every process's masked tokens), 0 where not masked."""
    total, squares, count = moments
    if count <= 0:
        return torch.zeros_like(values)
    mean = total / count
    variance = max(squares / count - mean * mean, 0.0)
    return (values - mean) * (variance + 1e-8) ** -0.5 * mask


def moments(values: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float]:
    """(sum, sum of squares, count) of ``values`` where ``mask`` (one process's share)."""
    kept = values[mask.bool()].double()
    return float(kept.sum()), float((kept * kept).sum()), float(kept.numel())


@dataclass
class Surrogate:
    """The clipped surrogate's sum over the counted tokens (differentiable), and what the
    step records: how many tokens the clip took (their gradient is zero), and the ratios'
    sum, least and largest value."""

    total: torch.Tensor
    clipped: int
    ratio_sum: float
    ratio_min: float
    ratio_max: float
    tokens: int


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    weights: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
) -> Surrogate:
    """PPO's clipped surrogate of the long-term part (module docstring), summed where
    ``mask``. A token counts as clipped where the clipped term is the larger loss, i.e. where
    the ratio left [1 − ε, 1 + ε] on the side its advantage pushes it to (TRL's measure)."""
    keep = mask.bool()
    ratio = torch.exp((logprobs - old_logprobs) * mask) * weights
    plain = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    total = torch.where(keep, torch.maximum(plain, clipped), torch.zeros_like(plain)).sum()
    taken = keep & (clipped > plain)
    kept = ratio.detach()[keep]
    return Surrogate(
        total=total,
        clipped=int(taken.sum()),
        ratio_sum=float(kept.double().sum()),
        ratio_min=float(kept.min()) if kept.numel() else 1.0,
        ratio_max=float(kept.max()) if kept.numel() else 1.0,
        tokens=int(keep.sum()),
    )


def mixture_logprobs(
    student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, alpha: float
) -> torch.Tensor:
    """log((1 − α) p_S + α p_T), elementwise, from the two log-probabilities."""
    if alpha <= 0.0:
        return student_logprobs.clone()
    if alpha >= 1.0:
        return teacher_logprobs.clone()
    return torch.logaddexp(
        student_logprobs + math.log1p(-alpha), teacher_logprobs + math.log(alpha)
    )


def importance_weights(
    student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``w_t = p_S(y_t) / ((1 − α) p_S(y_t) + α p_T(y_t))``: what turns an expectation under
    the teacher-mixed sampler into one under the student (1 everywhere when α = 0)."""
    if alpha <= 0.0:
        return torch.ones_like(student_logprobs)
    mixed = mixture_logprobs(student_logprobs, teacher_logprobs, alpha)
    return torch.exp(student_logprobs - mixed)
