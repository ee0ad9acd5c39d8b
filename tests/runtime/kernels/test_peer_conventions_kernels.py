"""The peers' conventions on the Triton kernels (their interpreter on CPU): ``topk_mass``
against a top-k teacher, the reductions with padding, torchtune's pinned values — against the
float64 references of ``tests/runtime/losses/peer_references.py``."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")

from kdlang.runtime.losses import distill_loss  # noqa: E402

from tests.runtime.losses.peer_references import (  # noqa: E402
    KINDS,
    LENGTHS,
    B,
    L,
    V,
    cached_teacher,
    check_torchtune_fixture,
    close,
    dense_ref,
    padded_labels,
    ref_topk_loss_and_grad,
    ref_topk_per_position,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
KIND_IDS = [k + "".join(f"-{v}" for v in p.values()) for k, p in KINDS]


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    ids, logprobs = cached_teacher(B, L, V, 6)
    return student, ids, logprobs, padded_labels(B, L, LENGTHS)


@pytest.mark.parametrize("kind, params", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("mass", ["keep", "uniform"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_mass_in_the_kernel(batch, kind, params, mass, temperature):
    student, ids, logprobs, labels = batch
    device = DEVICE
    ref, ref_grad = ref_topk_loss_and_grad(
        kind, params, student, ids, logprobs, labels, temperature=temperature, mass=mass
    )
    z = student.float().to(device).requires_grad_(True)
    loss = distill_loss(
        z,
        kind=kind,
        teacher_topk=(ids.to(device), logprobs.to(device)),
        temperature=temperature,
        labels=labels.to(device),
        topk_mass=mass,
        backend="triton",
        **params,
    )
    loss.backward()
    close(loss, ref, rtol=2e-5)
    close(z.grad, ref_grad, rtol=2e-5)
    # reduction "none" recomputes the gradient in backward, with a weight per position
    g = torch.rand(B, L, dtype=torch.float64)
    z2 = student.float().to(device).requires_grad_(True)
    per = distill_loss(
        z2,
        kind=kind,
        teacher_topk=(ids.to(device), logprobs.to(device)),
        temperature=temperature,
        labels=labels.to(device),
        topk_mass=mass,
        reduction="none",
        backend="triton",
        **params,
    )
    (per * g.float().to(device)).sum().backward()
    zz = student.detach().clone().requires_grad_(True)
    ref_per = ref_topk_per_position(kind, params, zz, ids, logprobs, temperature, mass)
    ref_per = torch.where(labels != -100, ref_per, torch.zeros_like(ref_per))
    (ref_per * g).sum().backward()
    close(per, ref_per.detach(), rtol=2e-5)
    close(z2.grad, zz.grad, rtol=2e-5)


@pytest.mark.parametrize("kind, params", [("forward_kl", {}), ("jsd", {"beta": 0.4})])
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "batchmean", "sequence_mean"])
def test_reductions_with_padding_in_the_kernel(kind, params, reduction):
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    teacher = torch.randn(B, L, V, generator=gen, dtype=torch.float64)
    labels = padded_labels(B, L, LENGTHS)
    ref, ref_grad = dense_ref(kind, params, student, teacher, labels, reduction)
    z = student.float().to(DEVICE).requires_grad_(True)
    loss = distill_loss(
        z,
        teacher.float().to(DEVICE),
        kind,
        temperature=2.0,
        labels=labels.to(DEVICE),
        reduction=reduction,
        backend="triton",
        **params,
    )
    loss.backward()
    close(loss, ref, rtol=2e-5)
    close(z.grad, ref_grad, rtol=2e-5)


@pytest.mark.parametrize("reduction", ["topk_entries", "sequence_mean", "batchmean"])
def test_topk_reductions_in_the_kernel(batch, reduction):
    student, ids, logprobs, labels = batch
    ref, ref_grad = ref_topk_loss_and_grad(
        "forward_kl",
        {},
        student,
        ids,
        logprobs,
        labels,
        temperature=1.0,
        mass="keep",
        reduction=reduction,
    )
    z = student.float().to(DEVICE).requires_grad_(True)
    loss = distill_loss(
        z,
        teacher_topk=(ids.to(DEVICE), logprobs.to(DEVICE)),
        labels=labels.to(DEVICE),
        topk_mass="keep",
        reduction=reduction,
        backend="triton",
    )
    loss.backward()
    close(loss, ref, rtol=2e-5)
    close(z.grad, ref_grad, rtol=2e-5)


def test_torchtune_fixture_in_the_kernel():
    check_torchtune_fixture("triton", DEVICE)


@pytest.mark.parametrize("kind, params", KINDS, ids=KIND_IDS)
def test_uniform_with_a_student_on_the_ids_alone_stays_finite(kind, params):
    """A student that puts (in fp32) all its mass on the teacher's ids has no rest to compare:
    its rest is floored (REST_FLOOR) on both paths, which agree and stay finite."""
    student, ids, logprobs, labels = (t for t in _peaked())
    results = []
    for backend, device in (("torch", "cpu"), ("triton", DEVICE)):
        z = student.clone().to(device).requires_grad_(True)
        loss = distill_loss(
            z,
            kind=kind,
            teacher_topk=(ids.to(device), logprobs.to(device)),
            labels=labels.to(device),
            topk_mass="uniform",
            backend=backend,
            **params,
        )
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
        results.append((loss.detach().cpu(), z.grad.cpu()))
    close(results[1][0], results[0][0], rtol=1e-4)
    close(results[1][1], results[0][1], rtol=2e-3)


def _peaked():
    gen = torch.Generator().manual_seed(29)
    ids, logprobs = cached_teacher(2, 3, V, 4, seed=3)
    student = torch.randn(2, 3, V, generator=gen)
    student.scatter_(-1, ids, 40.0)  # the rest is below 1e-15: 0 in fp32, floored
    return student, ids, logprobs, padded_labels(2, 3, [3, 2])
