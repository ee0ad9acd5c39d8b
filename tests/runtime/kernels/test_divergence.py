"""The fused divergence kernels against float64 definitions: value and gradient.

On a machine without CUDA the kernels run in Triton's interpreter (conftest.py); with CUDA
the same tests run the compiled kernels, plus the multi-chunk split kernel.
"""

import math

import pytest
import torch

triton = pytest.importorskip("triton")

from kdlang.runtime.kernels import entries  # noqa: E402
from kdlang.runtime.kernels.divergence import DivergenceSpec, divergence  # noqa: E402
from kdlang.runtime.kernels.divergence_kernel import divergence_kernel  # noqa: E402
from kdlang.runtime.kernels.layout import as_rows  # noqa: E402
from kdlang.runtime.kernels.topk import topk_divergence_kernel  # noqa: E402
from kdlang.runtime.losses import distill_loss  # noqa: E402
from kdlang.runtime.losses.distill import resolve_kind  # noqa: E402

from tests.runtime.losses.float64_reference import loss_and_grad  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# (block, segment): one program per row walking blocks of 64, or one block per row; on a
# GPU also rows cut into segments of 256 columns whose programs meet at the row's barrier.
LAYOUTS = [(64, None), (2048, None)]
if CUDA:
    LAYOUTS.append((64, 256))
LAYOUT_IDS = ["row-64", "row-2048", "seg-256"][: len(LAYOUTS)]
WIDTHS = [1, 17, 1271]
TEMPERATURES = [0.5, 1.0, 2.0]

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, in the interpreter


def close(actual, expected, rtol=1e-5, floor=1e-7):
    """|actual − expected| <= rtol·|expected| + max(rtol·max|expected|, floor): fp32
    rounding of O(1) terms leaves ~1e-7 even where the exact value is 0."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.isfinite(actual).all()
    atol = rtol * float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol, floor))


def random_logits(rows, width, *, scale=1.0, dtype=torch.float32):
    return (torch.randn(rows, width, dtype=torch.float64) * scale).to(dtype).to(DEVICE)


def run(
    kind,
    student,
    teacher,
    *,
    block,
    segment,
    temperature=1.0,
    labels=None,
    reduction="token_mean",
    grad_output=None,
    **params,
):
    """(loss, grad) of the fused kernel for ``kind`` with the given layout."""
    mode_kind, weight = resolve_kind(kind, params, sparse=False)
    spec = DivergenceSpec(entries.MODES[mode_kind], temperature, weight, -100, reduction)
    z = student.clone().requires_grad_(True)
    loss = divergence(z, teacher, spec, labels, block=block, segment=segment)
    weights = torch.ones_like(loss) if grad_output is None else grad_output
    (loss * weights).sum().backward()
    return loss, z.grad


def check(kind, width, temperature, block, segment, **params):
    zs, zt = random_logits(4, width), random_logits(4, width)
    labels = torch.randint(0, width, (4,), device=DEVICE)
    labels[2] = -100
    loss, grad = run(
        kind,
        zs,
        zt,
        block=block,
        segment=segment,
        temperature=temperature,
        labels=labels,
        **params,
    )
    ref, ref_grad = loss_and_grad(
        kind, zs.cpu(), zt.cpu(), temperature=temperature, labels=labels.cpu(), **params
    )
    close(loss, ref)
    close(grad, ref_grad)
    assert torch.equal(grad[2].cpu(), torch.zeros(width))


cases = pytest.mark.parametrize(
    "width, temperature, block, segment",
    [(w, t, b, s) for w in WIDTHS for t in TEMPERATURES for (b, s) in LAYOUTS],
    ids=[f"V{w}-T{t}-{i}" for w in WIDTHS for t in TEMPERATURES for i in LAYOUT_IDS],
)


@cases
def test_forward_kl(width, temperature, block, segment):
    check("forward_kl", width, temperature, block, segment)


@cases
def test_reverse_kl(width, temperature, block, segment):
    check("reverse_kl", width, temperature, block, segment)


@cases
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_jsd(width, temperature, block, segment, beta):
    check("jsd", width, temperature, block, segment, beta=beta)


@cases
def test_tvd(width, temperature, block, segment):
    check("tvd", width, temperature, block, segment)


@cases
@pytest.mark.parametrize("alpha", [0.1, 0.9])
def test_skew_kl(width, temperature, block, segment, alpha):
    check("skew_kl", width, temperature, block, segment, alpha=alpha)


@cases
@pytest.mark.parametrize("alpha", [0.1, 0.9])
def test_skew_rkl(width, temperature, block, segment, alpha):
    check("skew_rkl", width, temperature, block, segment, alpha=alpha)


KINDS = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.3}),
    ("tvd", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_rkl", {"alpha": 0.9}),
]
kinds = pytest.mark.parametrize("kind, params", KINDS, ids=[k for k, _ in KINDS])
layouts = pytest.mark.parametrize("block, segment", LAYOUTS, ids=LAYOUT_IDS)


@kinds
@layouts
def test_all_ignored_rows_give_zero_loss_and_zero_grad(kind, params, block, segment):
    zs, zt = random_logits(3, 40), random_logits(3, 40)
    labels = torch.full((3,), -100, device=DEVICE)
    loss, grad = run(kind, zs, zt, block=block, segment=segment, labels=labels, **params)
    assert loss.item() == 0.0
    assert torch.equal(grad.cpu(), torch.zeros(3, 40))


@kinds
@layouts
def test_masked_vocabulary(kind, params, block, segment):
    zs, zt = random_logits(4, 300), random_logits(4, 300)
    for z in (zs, zt):
        z[:, 7:19] = -math.inf
        z[:, 256:] = -math.inf  # a whole column block of −inf
    loss, grad = run(kind, zs, zt, block=block, segment=segment, temperature=2.0, **params)
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=2.0, **params)
    close(loss, ref)
    close(grad, ref_grad)
    assert torch.equal(grad[:, 7:19].cpu(), torch.zeros(4, 12))


@kinds
@layouts
def test_large_magnitude_logits(kind, params, block, segment):
    sign = torch.where(torch.rand(4, 200) < 0.5, 1.0, -1.0).double()
    zs = (sign * 1e4 + torch.randn(4, 200, dtype=torch.float64)).float().to(DEVICE)
    zt = (sign * 1e4 + torch.randn(4, 200, dtype=torch.float64)).float().to(DEVICE)
    loss, grad = run(kind, zs, zt, block=block, segment=segment, temperature=0.5, **params)
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=0.5, **params)
    close(loss, ref)
    close(grad, ref_grad)


@kinds
@layouts
def test_non_contiguous_inputs_are_read_in_place(kind, params, block, segment):
    base_s = torch.randn(2, 6, 2 * 90, dtype=torch.float64).float().to(DEVICE)
    base_t = torch.randn(2, 7, 90, dtype=torch.float64).float().to(DEVICE)
    student = base_s[:, :-1, ::2]  # shifted positions, strided vocabulary
    teacher = base_t[:, 1:-1]  # shifted positions
    assert as_rows(student).tensor.data_ptr() == student.data_ptr()
    assert as_rows(teacher).tensor.data_ptr() == teacher.data_ptr()
    labels = torch.randint(0, 90, (2, 5), device=DEVICE)
    labels[1, 0] = -100
    leaf = base_s.clone().requires_grad_(True)
    mode_kind, weight = resolve_kind(kind, params, sparse=False)
    spec = DivergenceSpec(entries.MODES[mode_kind], 2.0, weight)
    loss = divergence(leaf[:, :-1, ::2], teacher, spec, labels, block=block, segment=segment)
    loss.backward()
    ref, ref_grad = loss_and_grad(
        kind, student.cpu(), teacher.cpu(), temperature=2.0, labels=labels.cpu(), **params
    )
    close(loss, ref)
    close(leaf.grad[:, :-1, ::2], ref_grad)
    assert torch.equal(leaf.grad[:, -1].cpu(), torch.zeros(2, 180))


@kinds
@layouts
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_reductions_with_grad_output(kind, params, block, segment, reduction):
    zs, zt = random_logits(5, 33), random_logits(5, 33)
    labels = torch.tensor([1, -100, 3, 4, 5], device=DEVICE)
    g = torch.rand(5, device=DEVICE) if reduction == "none" else torch.tensor(0.25, device=DEVICE)
    loss, grad = run(
        kind,
        zs,
        zt,
        block=block,
        segment=segment,
        labels=labels,
        reduction=reduction,
        grad_output=g,
        **params,
    )
    ref, ref_grad = loss_and_grad(
        kind,
        zs.cpu(),
        zt.cpu(),
        labels=labels.cpu(),
        reduction=reduction,
        grad_output=g.cpu(),
        **params,
    )
    assert loss.shape == ref.shape
    close(loss, ref)
    close(grad, ref_grad)


@kinds
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_within_the_torch_error(kind, params, dtype):
    zs, zt = random_logits(6, 500, dtype=dtype), random_logits(6, 500, dtype=dtype)
    z = zs.clone().requires_grad_(True)
    loss = distill_loss(z, zt, kind, temperature=2.0, backend="triton", **params)
    loss.backward()
    assert z.grad.dtype == dtype
    torch_z = zs.clone().requires_grad_(True)
    distill_loss(torch_z, zt, kind, temperature=2.0, backend="torch", **params).backward()
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=2.0, **params)
    close(loss, ref)  # statistics are fp32 on exactly representable inputs
    torch_error = (torch_z.grad.cpu().double() - ref_grad).abs().max()
    kernel_error = (z.grad.cpu().double() - ref_grad).abs().max()
    # torch rounds its fp32 gradient to the half type: at most u·|g| (u the unit roundoff).
    # The GPU rounds to nearest as well; Triton's interpreter truncates (up to 2u·|g|).
    unit_roundoff = torch.finfo(dtype).eps / 2
    torch_bound = max(float(torch_error), unit_roundoff * float(ref_grad.abs().max()))
    assert kernel_error <= (1.5 if CUDA else 2.0) * torch_bound


def test_public_entry_point_on_three_dims():
    zs, zt = random_logits(6, 50).view(2, 3, 50), random_logits(6, 50).view(2, 3, 50)
    z = zs.clone().requires_grad_(True)
    loss = distill_loss(z, zt, "tvd", temperature=2.0, backend="triton", reduction="none")
    loss.sum().backward()
    ref, ref_grad = loss_and_grad("tvd", zs.cpu(), zt.cpu(), temperature=2.0, reduction="none")
    close(loss, ref)
    close(z.grad, ref_grad)


@pytest.mark.skipif(CUDA, reason="checks the CPU interpreter")
def test_kernels_run_in_the_interpreter_without_cuda():
    from triton.runtime.interpreter import InterpretedFunction

    assert isinstance(divergence_kernel, InterpretedFunction)
    assert isinstance(topk_divergence_kernel, InterpretedFunction)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("segment", [2**20, 16384], ids=["row", "seg-16384"])
@pytest.mark.parametrize("kind, params", [("forward_kl", {}), ("jsd", {"beta": 0.5})])
def test_wide_rows(kind, params, segment):
    width = 262_147  # > 2^18, odd
    zs = random_logits(3, width, dtype=torch.bfloat16)
    zt = random_logits(3, width, dtype=torch.bfloat16)
    loss, grad = run(kind, zs, zt, block=None, segment=segment, temperature=2.0, **params)
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=2.0, **params)
    close(loss, ref)
    err = (grad.cpu().double() - ref_grad).abs().max()
    assert err <= 2**-8 * ref_grad.abs().max()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_no_step_synchronizes_with_the_host():
    from kdlang.runtime.losses import fused_linear_distill_loss

    zs, zt = random_logits(64, 40_000, dtype=torch.bfloat16), random_logits(64, 40_000)
    labels = torch.randint(0, 40_000, (64,), device=DEVICE)
    ids = torch.randint(0, 40_000, (64, 8), device=DEVICE)
    x = torch.randn(64, 32, device=DEVICE, requires_grad=True)
    w = torch.randn(999, 32, device=DEVICE, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        z = zs.clone().requires_grad_(True)
        (0.5 * distill_loss(z, zt.bfloat16(), "jsd", labels=labels)).backward()
        distill_loss(z, teacher_topk=(ids, torch.zeros(64, 8, device=DEVICE))).backward()
        fused_linear_distill_loss(x, w, x.detach(), w.detach(), "tvd", chunk_size=16).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_a_second_backward_through_the_same_graph_is_refused():
    z = random_logits(3, 20).requires_grad_(True)
    loss = distill_loss(z, random_logits(3, 20), "tvd", backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="single time"):
        loss.backward()
