"""The fused divergence kernels against float64 definitions: value and gradient.

On a machine without CUDA the kernels run in Triton's interpreter (conftest.py); with CUDA
the same tests run the compiled kernels, plus the multi-chunk split kernel.
"""

import math

import pytest
import torch

triton = pytest.importorskip("triton")

from kdlang.runtime.kernels import terms  # noqa: E402
from kdlang.runtime.kernels.divergence import DivergenceSpec, divergence  # noqa: E402
from kdlang.runtime.kernels.divergence_rows import divergence_rows_kernel  # noqa: E402
from kdlang.runtime.kernels.divergence_split import divergence_split_kernel  # noqa: E402
from kdlang.runtime.kernels.layout import as_rows  # noqa: E402
from kdlang.runtime.losses import distill_loss  # noqa: E402
from kdlang.runtime.losses.distill import resolve_kind  # noqa: E402

from tests.runtime.losses.float64_reference import loss_and_grad  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
STRATEGIES = [("rows", 64), ("split", None)]
if CUDA:
    STRATEGIES.append(("split", 256))  # several programs per row, meeting at the barrier
STRATEGY_IDS = ["rows", "split", "split-chunked"][: len(STRATEGIES)]
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
    strategy,
    block,
    temperature=1.0,
    labels=None,
    reduction="token_mean",
    grad_output=None,
    **params,
):
    """(loss, grad) of the fused kernel for ``kind`` with the given strategy."""
    mode_kind, weight = resolve_kind(
        kind, params.get("beta", 0.5), params.get("alpha", 0.1), sparse=False
    )
    spec = DivergenceSpec(terms.MODES[mode_kind], temperature, weight, -100, reduction)
    z = student.clone().requires_grad_(True)
    loss = divergence(z, teacher, spec, labels, strategy=strategy, block=block)
    weights = torch.ones_like(loss) if grad_output is None else grad_output
    (loss * weights).sum().backward()
    return loss, z.grad


def check(kind, width, temperature, strategy, block, **params):
    zs, zt = random_logits(4, width), random_logits(4, width)
    labels = torch.randint(0, width, (4,), device=DEVICE)
    labels[2] = -100
    loss, grad = run(
        kind,
        zs,
        zt,
        strategy=strategy,
        block=block,
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
    "width, temperature, strategy, block",
    [(w, t, s, b) for w in WIDTHS for t in TEMPERATURES for (s, b) in STRATEGIES],
    ids=[f"V{w}-T{t}-{i}" for w in WIDTHS for t in TEMPERATURES for i in STRATEGY_IDS],
)


@cases
def test_forward_kl(width, temperature, strategy, block):
    check("forward_kl", width, temperature, strategy, block)


@cases
def test_reverse_kl(width, temperature, strategy, block):
    check("reverse_kl", width, temperature, strategy, block)


@cases
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_jsd(width, temperature, strategy, block, beta):
    check("jsd", width, temperature, strategy, block, beta=beta)


@cases
def test_tvd(width, temperature, strategy, block):
    check("tvd", width, temperature, strategy, block)


@cases
@pytest.mark.parametrize("alpha", [0.1, 0.9])
def test_skew_kl(width, temperature, strategy, block, alpha):
    check("skew_kl", width, temperature, strategy, block, alpha=alpha)


@cases
@pytest.mark.parametrize("alpha", [0.1, 0.9])
def test_skew_rkl(width, temperature, strategy, block, alpha):
    check("skew_rkl", width, temperature, strategy, block, alpha=alpha)


KINDS = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jsd", {"beta": 0.3}),
    ("tvd", {}),
    ("skew_kl", {"alpha": 0.1}),
    ("skew_rkl", {"alpha": 0.9}),
]
kinds = pytest.mark.parametrize("kind, params", KINDS, ids=[k for k, _ in KINDS])
strategies = pytest.mark.parametrize("strategy, block", STRATEGIES, ids=STRATEGY_IDS)


@kinds
@strategies
def test_all_ignored_rows_give_zero_loss_and_zero_grad(kind, params, strategy, block):
    zs, zt = random_logits(3, 40), random_logits(3, 40)
    labels = torch.full((3,), -100, device=DEVICE)
    loss, grad = run(kind, zs, zt, strategy=strategy, block=block, labels=labels, **params)
    assert loss.item() == 0.0
    assert torch.equal(grad.cpu(), torch.zeros(3, 40))


@kinds
@strategies
def test_masked_vocabulary(kind, params, strategy, block):
    zs, zt = random_logits(4, 300), random_logits(4, 300)
    for z in (zs, zt):
        z[:, 7:19] = -math.inf
        z[:, 256:] = -math.inf  # a whole column block of −inf
    loss, grad = run(kind, zs, zt, strategy=strategy, block=block, temperature=2.0, **params)
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=2.0, **params)
    close(loss, ref)
    close(grad, ref_grad)
    assert torch.equal(grad[:, 7:19].cpu(), torch.zeros(4, 12))


@kinds
@strategies
def test_large_magnitude_logits(kind, params, strategy, block):
    sign = torch.where(torch.rand(4, 200) < 0.5, 1.0, -1.0).double()
    zs = (sign * 1e4 + torch.randn(4, 200, dtype=torch.float64)).float().to(DEVICE)
    zt = (sign * 1e4 + torch.randn(4, 200, dtype=torch.float64)).float().to(DEVICE)
    loss, grad = run(kind, zs, zt, strategy=strategy, block=block, temperature=0.5, **params)
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=0.5, **params)
    close(loss, ref)
    close(grad, ref_grad)


@kinds
@strategies
def test_non_contiguous_inputs_are_read_in_place(kind, params, strategy, block):
    base_s = torch.randn(2, 6, 2 * 90, dtype=torch.float64).float().to(DEVICE)
    base_t = torch.randn(2, 7, 90, dtype=torch.float64).float().to(DEVICE)
    student = base_s[:, :-1, ::2]  # shifted positions, strided vocabulary
    teacher = base_t[:, 1:-1]  # shifted positions
    assert as_rows(student).tensor.data_ptr() == student.data_ptr()
    assert as_rows(teacher).tensor.data_ptr() == teacher.data_ptr()
    labels = torch.randint(0, 90, (2, 5), device=DEVICE)
    labels[1, 0] = -100
    leaf = base_s.clone().requires_grad_(True)
    mode_kind, weight = resolve_kind(
        kind, params.get("beta", 0.5), params.get("alpha", 0.1), sparse=False
    )
    spec = DivergenceSpec(terms.MODES[mode_kind], 2.0, weight)
    loss = divergence(leaf[:, :-1, ::2], teacher, spec, labels, strategy=strategy, block=block)
    loss.backward()
    ref, ref_grad = loss_and_grad(
        kind, student.cpu(), teacher.cpu(), temperature=2.0, labels=labels.cpu(), **params
    )
    close(loss, ref)
    close(leaf.grad[:, :-1, ::2], ref_grad)
    assert torch.equal(leaf.grad[:, -1].cpu(), torch.zeros(2, 180))


@kinds
@strategies
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_reductions_with_grad_output(kind, params, strategy, block, reduction):
    zs, zt = random_logits(5, 33), random_logits(5, 33)
    labels = torch.tensor([1, -100, 3, 4, 5], device=DEVICE)
    g = torch.rand(5, device=DEVICE) if reduction == "none" else torch.tensor(0.25, device=DEVICE)
    loss, grad = run(
        kind,
        zs,
        zt,
        strategy=strategy,
        block=block,
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

    assert isinstance(divergence_rows_kernel, InterpretedFunction)
    assert isinstance(divergence_split_kernel, InterpretedFunction)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("strategy", ["rows", "split"])
@pytest.mark.parametrize("kind, params", [("forward_kl", {}), ("jsd", {"beta": 0.5})])
def test_wide_rows(kind, params, strategy):
    width = 262_147  # > 2^18, odd
    zs = random_logits(3, width, dtype=torch.bfloat16)
    zt = random_logits(3, width, dtype=torch.bfloat16)
    loss, grad = run(kind, zs, zt, strategy=strategy, block=None, temperature=2.0, **params)
    ref, ref_grad = loss_and_grad(kind, zs.cpu(), zt.cpu(), temperature=2.0, **params)
    close(loss, ref)
    err = (grad.cpu().double() - ref_grad).abs().max()
    assert err <= 2**-8 * ref_grad.abs().max()
