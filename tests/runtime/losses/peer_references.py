"""Float64 references of the peers' loss conventions, written in probability space from their
definitions (none of them calls ``kdlang.runtime.losses``), the fixtures they run on, and the
check of torchtune's pinned values (run on each backend)."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.losses import distill_loss


def xlogy_ratio(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ w·log(x / y) over the last dim, 0 where w == 0."""
    live = w > 0
    one = torch.ones_like(w)
    ratio = torch.where(live, x, one).log() - torch.where(live, y, one).log()
    return torch.where(live, w * ratio, torch.zeros_like(w)).sum(-1)


def ref_divergence(kind: str, p, q, beta: float = 0.5, alpha: float = 0.1) -> torch.Tensor:
    """Per-position divergence of student probabilities p and teacher probabilities q (either
    may have mass < 1: the formulas are used as written)."""
    if kind == "forward_kl":
        return xlogy_ratio(q, q, p)
    if kind == "reverse_kl":
        return xlogy_ratio(p, p, q)
    if kind == "teacher_ce":
        return xlogy_ratio(q, torch.ones_like(p), p)
    if kind == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if kind == "jsd":
        m = beta * q + (1 - beta) * p
        return beta * xlogy_ratio(q, q, m) + (1 - beta) * xlogy_ratio(p, p, m)
    if kind == "skew_kl":
        return xlogy_ratio(q, q, alpha * q + (1 - alpha) * p)
    if kind == "skew_rkl":
        return xlogy_ratio(p, p, alpha * p + (1 - alpha) * q)
    raise KeyError(kind)


def ref_topk_teacher(ids, logprobs, width: int, temperature: float, mass: str):
    """The dense teacher of a top-k cache under ``topk_mass``: the raw probabilities e^ℓ at
    the ids and the missing mass 1 − M, raised to 1/T and normalized together (renormalize:
    the ids alone); ``uniform`` spreads the rest's share evenly over the other V − k ids."""
    e = logprobs.double().exp()
    k = ids.shape[-1]
    if mass == "renormalize":
        share = e ** (1 / temperature)
        q_ids = share / share.sum(-1, keepdim=True)
        rest = torch.zeros_like(q_ids[..., :1])
    else:
        missing = (1 - e.sum(-1, keepdim=True)).clamp(min=0)
        parts = torch.cat([e, missing], -1) ** (1 / temperature)
        parts = parts / parts.sum(-1, keepdim=True)
        q_ids, rest = parts[..., :k], parts[..., k:]
        if mass == "keep":
            rest = torch.zeros_like(rest)
    dense = (rest / (width - k)).expand(*ids.shape[:-1], width).clone()
    return dense.scatter(-1, ids.long(), q_ids)


def ref_topk_student(z, ids, temperature: float, mass: str):
    """The student as the divergence sees it: softmax(z / T); under ``uniform`` its mass
    outside the teacher's ids spread evenly over them too (DistillKit's symmetric handling)."""
    p = torch.softmax(z / temperature, -1)
    if mass != "uniform":
        return p
    at_ids = p.gather(-1, ids.long())
    rest = 1 - at_ids.sum(-1, keepdim=True)
    spread = (rest / (z.shape[-1] - ids.shape[-1])).expand_as(p).clone()
    return spread.scatter(-1, ids.long(), at_ids)


def reduce_ref(per, labels, reduction: str, k: int = 1):
    """The reductions, from their definitions (``distill_loss``'s docstring)."""
    counted = labels != -100
    per = torch.where(counted, per, torch.zeros_like(per))
    total, n = per.sum(), counted.sum()
    if reduction == "token_mean":
        return total / n
    if reduction == "sum":
        return total
    if reduction == "batchmean":
        return total / per.shape[0]
    if reduction == "topk_entries":
        return total / (n * k)
    if reduction == "sequence_mean":
        means = [per[b].sum() / counted[b].sum() for b in range(per.shape[0]) if counted[b].any()]
        return torch.stack(means).mean()
    raise KeyError(reduction)


def ref_topk_loss_and_grad(
    kind, params, z, ids, logprobs, labels, *, temperature, mass, reduction="token_mean"
):
    zz = z.detach().double().requires_grad_(True)
    per = ref_topk_per_position(kind, params, zz, ids, logprobs, temperature, mass)
    loss = reduce_ref(per, labels, reduction, ids.shape[-1])
    loss.backward()
    return loss.detach(), zz.grad


def ref_topk_per_position(kind, params, z, ids, logprobs, temperature, mass):
    """The divergences compare the two distributions over the vocabulary. Under ``uniform``
    that equals the divergence over the k + 1 outcomes (the ids, the rest) for the
    divergences, which are homogeneous in (p, q); the cross-entropy ``teacher_ce`` is not, and
    is defined over the k + 1 outcomes: −Σ_k q_k log p_k − q_rest log p_rest."""
    width = z.shape[-1]
    q = ref_topk_teacher(ids, logprobs, width, temperature, mass)
    p = ref_topk_student(z, ids, temperature, mass)
    if kind == "teacher_ce" and mass == "uniform":
        q_ids, p_ids = q.gather(-1, ids.long()), p.gather(-1, ids.long())
        q_rest, p_rest = 1 - q_ids.sum(-1), 1 - p_ids.sum(-1)
        return -(q_ids * p_ids.log()).sum(-1) - q_rest * p_rest.log()
    return ref_divergence(kind, p, q, **params)


def close(actual, expected, rtol=1e-5, floor=1e-7):
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(actual).all()
    atol = rtol * float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol, floor))


# -- fixtures ---------------------------------------------------------------------------------


def cached_teacher(batch: int, length: int, width: int, k: int, seed: int = 0):
    """A top-k cache as a teacher_logits stage writes it: the k most likely ids of a full
    teacher distribution and their log-probs over the whole vocabulary (mass < 1)."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(batch, length, width, generator=gen, dtype=torch.float64) * 2.0
    logprobs, ids = torch.log_softmax(teacher, -1).topk(k, dim=-1)
    return ids, logprobs.float()


def padded_labels(batch: int, length: int, lengths: list[int]) -> torch.Tensor:
    """Labels of right-padded sequences of the given lengths (−100 after each)."""
    labels = torch.zeros(batch, length, dtype=torch.long)
    for b, n in enumerate(lengths):
        labels[b, n:] = -100
    return labels


KINDS = [
    ("forward_kl", {}),
    ("teacher_ce", {}),
    ("tvd", {}),
    ("jsd", {"beta": 0.3}),
    ("skew_kl", {"alpha": 0.2}),
    ("skew_rkl", {"alpha": 0.3}),
]
"""The divergences checked, with their options."""

B, L, V, K = 3, 5, 41, 6
LENGTHS = [5, 2, 4]


def dense_ref(kind, params, student, teacher, labels, reduction, temperature=2.0):
    z = student.detach().double().requires_grad_(True)
    p = torch.softmax(z / temperature, -1)
    q = torch.softmax(teacher.double() / temperature, -1)
    loss = reduce_ref(ref_divergence(kind, p, q, **params), labels, reduction)
    loss.backward()
    return loss.detach(), z.grad


# torchtune's KD loss test fixture (tests/torchtune/modules/loss/test_kd_losses.py, bf16 logits,
# labels all counted): ForwardKLLoss 1.7209, ReverseKLLoss 0.6775, SymmetricKLLoss (its
# default ratio 0.5) 1.1992, checked there with rtol = atol = 1e-2. torchtune's forward KL is
# the cross-entropy to the teacher, −Σ p_T log p_S (kdlang's teacher_ce); its reverse KL is
# KL(p_S ‖ p_T).
TT_STUDENT = [
    [
        [1.1250, -0.4102, -0.0879, -2.5000],
        [0.2676, 0.3535, 0.8711, -1.4688],
        [-0.1084, 1.6641, 0.0084, 0.1196],
        [0.5000, -0.6406, -0.2236, -1.5938],
    ],
    [
        [-1.5312, -1.9219, 0.0000, -0.5039],
        [-1.5391, 1.5312, 0.5820, 0.2695],
        [-0.3887, 1.2188, 0.0000, 0.6055],
        [0.5000, 1.3828, 0.1309, -1.0312],
    ],
]
TT_TEACHER = [
    [
        [-0.0381, -1.2578, -1.2031, 0.0947],
        [-0.7852, 0.4492, 1.5547, 0.0972],
        [0.8203, 0.0012, 0.7656, 0.3477],
        [-1.5781, 0.4297, 0.5977, 0.3926],
    ],
    [
        [1.5156, 0.1641, 2.0781, -0.7734],
        [-0.5898, 0.4453, -0.7969, 0.6328],
        [0.6289, -0.8359, 0.9258, 0.2109],
        [0.0006, 0.5195, 3.2344, -1.5781],
    ],
]
TT_LABELS = [[0, 3, 3, 1], [1, 1, 1, 1]]


def check_torchtune_fixture(backend: str, device: str = "cpu") -> None:
    student = torch.tensor(TT_STUDENT, dtype=torch.bfloat16, device=device)
    teacher = torch.tensor(TT_TEACHER, dtype=torch.bfloat16, device=device)
    labels = torch.tensor(TT_LABELS, device=device)

    def run(kind):
        return float(distill_loss(student, teacher, kind, labels=labels, backend=backend))

    forward, reverse = run("teacher_ce"), run("reverse_kl")
    assert forward == pytest.approx(1.7209, rel=1e-2, abs=1e-2)
    assert reverse == pytest.approx(0.6775, rel=1e-2, abs=1e-2)
    # SymmetricKLLoss: `loss teacher_ce weight 0.5` + `loss reverse_kl weight 0.5`
    assert 0.5 * forward + 0.5 * reverse == pytest.approx(1.1992, rel=1e-2, abs=1e-2)
    # and the float64 definitions on the same (bf16-rounded) numbers, tighter
    p = torch.softmax(student.double().cpu(), -1)
    q = torch.softmax(teacher.double().cpu(), -1)
    assert forward == pytest.approx(float((-(q * p.log()).sum(-1)).mean()), rel=1e-5)
    assert reverse == pytest.approx(float((p * (p.log() - q.log())).sum(-1).mean()), rel=1e-5)
