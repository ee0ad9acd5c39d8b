"""The sparse (top-k) teacher kernel against the float64 definition over the full
vocabulary, with the teacher's mass only on its k ids."""

import math

import pytest
import torch

triton = pytest.importorskip("triton")

from kdlang.runtime.kernels import entries  # noqa: E402
from kdlang.runtime.kernels.divergence import DivergenceSpec  # noqa: E402
from kdlang.runtime.kernels.topk import topk_divergence  # noqa: E402
from kdlang.runtime.losses import distill_loss  # noqa: E402
from kdlang.runtime.losses.distill import resolve_kind  # noqa: E402

from tests.runtime.losses.float64_reference import loss_and_grad  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
KINDS = [
    ("forward_kl", {}),
    ("jsd", {"beta": 0.0}),
    ("jsd", {"beta": 0.3}),
    ("tvd", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_kl", {"alpha": 0.9}),
    ("skew_rkl", {"alpha": 0.1}),
    ("skew_rkl", {"alpha": 0.9}),
]
KIND_IDS = [k + "".join(f"-{v}" for v in p.values()) for k, p in KINDS]

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter


def close(actual, expected, rtol=1e-5, floor=1e-7):
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(actual).all()
    atol = rtol * float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol, floor))


def teacher_topk(rows, width, k):
    ids = torch.stack([torch.randperm(width)[:k] for _ in range(rows)]).to(DEVICE)
    logprobs = torch.log_softmax(torch.randn(rows, k, dtype=torch.float64), -1).float()
    return ids, logprobs.to(DEVICE)


def run(
    kind,
    params,
    student,
    ids,
    logprobs,
    *,
    temperature,
    labels=None,
    reduction="token_mean",
    grad_output=None,
    block=None,
    block_k=None,
):
    mode_kind, weight = resolve_kind(kind, params, sparse=True)
    spec = DivergenceSpec(entries.MODES[mode_kind], temperature, weight, -100, reduction)
    z = student.clone().requires_grad_(True)
    loss = topk_divergence(z, ids, logprobs, spec, labels, block=block, block_k=block_k)
    weights = torch.ones_like(loss) if grad_output is None else grad_output
    (loss * weights).sum().backward()
    return loss, z.grad


@pytest.mark.parametrize("kind, params", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("k", [1, 8])
@pytest.mark.parametrize("width, temperature", [(17, 0.5), (1271, 1.0), (1271, 2.0)])
def test_topk_teacher(kind, params, k, width, temperature):
    student = torch.randn(5, width, dtype=torch.float64).float().to(DEVICE)
    ids, logprobs = teacher_topk(5, width, k)
    labels = torch.randint(0, width, (5,), device=DEVICE)
    labels[3] = -100
    loss, grad = run(
        kind,
        params,
        student,
        ids,
        logprobs,
        temperature=temperature,
        labels=labels,
        block=128,
        block_k=4,
    )
    ref, ref_grad = loss_and_grad(
        kind,
        student.cpu(),
        topk=(ids.cpu(), logprobs.cpu()),
        temperature=temperature,
        labels=labels.cpu(),
        **params,
    )
    close(loss, ref)
    close(grad, ref_grad)
    assert torch.equal(grad[3].cpu(), torch.zeros(width))


@pytest.mark.parametrize("kind, params", KINDS[::2], ids=KIND_IDS[::2])
def test_topk_none_reduction_masked_vocab_and_int32_ids(kind, params):
    width, k = 300, 8
    base = torch.randn(2, 4, width, dtype=torch.float64).float().to(DEVICE)
    base[..., 250:] = -math.inf  # masked vocabulary, never among the teacher's ids
    ids = torch.stack([torch.randperm(250)[:k] for _ in range(8)]).view(2, 4, k)
    ids = ids.to(torch.int32).to(DEVICE)
    logprobs = torch.log_softmax(torch.randn(2, 4, k), -1).to(DEVICE)
    logprobs[0, 0, -1] = -math.inf  # a cached entry with no mass
    g = torch.rand(2, 4, device=DEVICE)
    z = base.clone().requires_grad_(True)
    loss = distill_loss(
        z,
        kind=kind,
        teacher_topk=(ids, logprobs),
        temperature=2.0,
        reduction="none",
        backend="triton",
        **params,
    )
    (loss * g).sum().backward()
    ref, ref_grad = loss_and_grad(
        kind,
        base.cpu(),
        topk=(ids.cpu(), logprobs.cpu()),
        temperature=2.0,
        reduction="none",
        grad_output=g.cpu(),
        **params,
    )
    close(loss, ref)
    close(z.grad, ref_grad)
    assert torch.equal(z.grad[..., 250:].cpu(), torch.zeros(2, 4, 50))


def test_topk_bf16_student():
    student = torch.randn(4, 700).to(torch.bfloat16).to(DEVICE)
    ids, logprobs = teacher_topk(4, 700, 8)
    z = student.clone().requires_grad_(True)
    loss = distill_loss(
        z, kind="jsd", teacher_topk=(ids, logprobs), temperature=2.0, backend="triton"
    )
    loss.backward()
    ref, ref_grad = loss_and_grad(
        "jsd", student.cpu(), topk=(ids.cpu(), logprobs.cpu()), temperature=2.0
    )
    close(loss, ref)
    assert (z.grad.cpu().double() - ref_grad).abs().max() <= 2**-7 * ref_grad.abs().max()
