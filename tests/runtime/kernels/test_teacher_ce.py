"""``loss teacher_ce``: the cross-entropy to the teacher, −Σ p_T log p_S, on every path.

The float64 reference is written here from the definition (softmax of the logits over T,
teacher-weighted student log-probabilities). Its gradient must be forward KL's: the two differ
by the teacher's entropy, which the student does not move. On a machine without CUDA the Triton
kernels run in Triton's interpreter (conftest.py).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from kdlang.runtime.losses import distill_loss
from kdlang.runtime.train.objective import Objective

from kdlang.ir.losses import LOSSES, TeacherCE
from tests.runtime.train.support import loss as loss_line

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def logits(*shape, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def reference(zs, zt, temperature, labels=None):
    """Mean over counted positions of −Σ_v q_v log p_v (float64), with its gradient in zs."""
    z = zs.double().clone().requires_grad_(True)
    q = torch.softmax(zt.double() / temperature, -1)
    per = -(q * torch.log_softmax(z / temperature, -1)).sum(-1)
    mask = torch.ones(per.shape, dtype=torch.bool) if labels is None else labels != -100
    value = per[mask].mean()
    value.backward()
    return value.detach(), z.grad


def entropy(zt, temperature, mask):
    q = torch.softmax(zt.double() / temperature, -1)
    return -(q * torch.log(q)).sum(-1)[mask].mean()


def test_the_descriptor_is_a_token_level_loss_with_forward_kl_options():
    assert LOSSES["teacher_ce"] is TeacherCE
    assert TeacherCE.teacher == "logits" and TeacherCE.accepts_topk and TeacherCE.on_policy
    assert set(TeacherCE.model_fields) == set(LOSSES["forward_kl"].model_fields)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_value_and_gradient_against_the_definition(backend, temperature):
    zs, zt = logits(3, 5, 37, seed=1), logits(3, 5, 37, seed=2)
    labels = torch.randint(0, 37, (3, 5), generator=torch.Generator().manual_seed(3))
    labels[0, :2] = -100
    z = zs.float().to(DEVICE).requires_grad_(True)
    value = distill_loss(
        z,
        zt.float().to(DEVICE),
        "teacher_ce",
        temperature=temperature,
        labels=labels.to(DEVICE),
        backend=backend,
    )
    value.backward()
    ref, ref_grad = reference(zs, zt, temperature, labels)
    # fp32 logits: the softmaxes are exact to ~1e-7 relative; 1e-5 leaves two orders of margin
    torch.testing.assert_close(value.double().cpu(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double().cpu(), ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_it_is_forward_kl_plus_the_teacher_entropy_with_the_same_gradient(backend):
    zs, zt = logits(6, 29, seed=4), logits(6, 29, seed=5)
    values, grads = {}, {}
    for kind in ("teacher_ce", "forward_kl"):
        z = zs.float().to(DEVICE).requires_grad_(True)
        values[kind] = distill_loss(
            z, zt.float().to(DEVICE), kind, temperature=2.0, backend=backend
        )
        values[kind].backward()
        grads[kind] = z.grad.double().cpu()
    mask = torch.ones(6, dtype=torch.bool)
    gap = (values["teacher_ce"] - values["forward_kl"]).double().cpu()
    torch.testing.assert_close(gap, entropy(zt, 2.0, mask), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["teacher_ce"], grads["forward_kl"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_a_top_k_teacher_weighs_its_ids_only(backend):
    width, k = 31, 6
    zs = logits(4, width, seed=6)
    ids = torch.stack(
        [torch.randperm(width, generator=torch.Generator().manual_seed(i))[:k] for i in range(4)]
    )
    lp = torch.log_softmax(logits(4, k, seed=7), -1)
    z = zs.float().to(DEVICE).requires_grad_(True)
    value = distill_loss(
        z,
        kind="teacher_ce",
        teacher_topk=(ids.to(DEVICE), lp.float().to(DEVICE)),
        temperature=2.0,
        backend=backend,
    )
    value.backward()
    # the teacher re-softened at T over its k ids, nothing elsewhere
    q = torch.softmax(lp / 2.0, -1)
    zr = zs.clone().requires_grad_(True)
    logp = torch.log_softmax(zr / 2.0, -1).gather(-1, ids)
    ref = -(q * logp).sum(-1).mean()
    ref.backward()
    torch.testing.assert_close(value.double().cpu(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z.grad.double().cpu(), zr.grad, rtol=1e-4, atol=1e-7)


def test_the_objective_computes_it_from_its_descriptor_alone():
    line = loss_line("teacher_ce", 0.7, temperature=2.0)
    objective = Objective([line], total_steps=4, teacher="online", backend="torch")
    settled = objective.at_step(0)
    assert settled.metrics() == {
        "on_policy": 0.0,
        "weight/teacher_ce": 0.7,
        "temperature/teacher_ce": 2.0,
    }
