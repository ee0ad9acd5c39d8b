"""The fused-linear loss on the Triton kernel against float64 logits materialized in full."""

import pytest
import torch

triton = pytest.importorskip("triton")

from kdlang.runtime.kernels.scale import scale_inplace  # noqa: E402
from kdlang.runtime.losses import fused_linear_distill_loss  # noqa: E402

from tests.runtime.losses.float64_reference import linear_loss_and_grads  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
KINDS = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.3}),
    ("tvd", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_rkl", {"alpha": 0.9}),
]

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter


def close(actual, expected, rtol):
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(actual).all()
    atol = rtol * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol, 1e-7))


@pytest.mark.parametrize("kind, params", KINDS, ids=[k for k, _ in KINDS])
@pytest.mark.parametrize("reduction", ["token_mean", "none"])
def test_fused_linear_on_the_kernel(kind, params, reduction):
    torch.manual_seed(0)
    hs, ht, width = 16, 24, 257
    xs = torch.randn(3, 5, hs).to(DEVICE)
    xt = torch.randn(3, 5, ht).to(DEVICE)
    ws = (torch.randn(width, hs) / hs**0.5).to(DEVICE)
    wt = (torch.randn(width, ht) / ht**0.5).to(DEVICE)
    bs = (0.1 * torch.randn(width)).to(DEVICE)
    labels = torch.randint(0, width, (3, 5), device=DEVICE)
    labels[0, 2] = -100
    g = torch.rand(3, 5, device=DEVICE) if reduction == "none" else torch.tensor(0.5)
    x, w, b = (t.clone().requires_grad_(True) for t in (xs, ws, bs))
    loss = fused_linear_distill_loss(
        x,
        w,
        xt,
        wt,
        kind,
        temperature=2.0,
        labels=labels,
        reduction=reduction,
        student_bias=b,
        chunk_size=4,
        backend="triton",
        **params,
    )
    (loss * g.to(DEVICE)).sum().backward()
    ref = linear_loss_and_grads(
        kind,
        xs.cpu(),
        ws.cpu(),
        bs.cpu(),
        xt.cpu(),
        wt.cpu(),
        temperature=2.0,
        labels=labels.cpu(),
        reduction=reduction,
        grad_output=g.cpu(),
        **params,
    )
    # fp32 products (TF32 is off in torch by default) before an fp32 kernel.
    for got, want in zip((loss, x.grad, w.grad, b.grad), ref, strict=True):
        close(got, want, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_fused_linear_bf16_default_chunks():
    torch.manual_seed(0)
    n, hs, ht, width = 3000, 64, 96, 5003
    xs = torch.randn(n, hs, device="cuda").bfloat16()
    xt = torch.randn(n, ht, device="cuda").bfloat16()
    ws = (torch.randn(width, hs, device="cuda") / hs**0.5).bfloat16()
    wt = (torch.randn(width, ht, device="cuda") / ht**0.5).bfloat16()
    bs = torch.zeros(width, device="cuda").bfloat16()
    x, w = xs.clone().requires_grad_(True), ws.clone().requires_grad_(True)
    loss = fused_linear_distill_loss(x, w, xt, wt, "jsd", temperature=2.0, chunk_size=1024)
    loss.backward()
    ref = linear_loss_and_grads(
        "jsd", xs.cpu(), ws.cpu(), bs.cpu(), xt.cpu(), wt.cpu(), temperature=2.0, beta=0.5
    )
    # bf16 logits and gradient chunks: compare as norms.
    for got, want in zip((loss, x.grad, w.grad), ref[:3], strict=True):
        rel = (got.double().cpu() - want).norm() / want.norm()
        assert rel < 2e-2


def test_scale_inplace_is_a_device_side_multiply():
    x = torch.randn(10_000, device=DEVICE)
    y = x.clone()
    scale_inplace(y, torch.tensor([1.0], device=DEVICE))
    assert torch.equal(x, y)
    scale_inplace(y, torch.tensor([0.25], device=DEVICE))
    assert torch.equal(y, x * 0.25)
