"""The chunked torch path of ``fused_linear_distill_loss`` against the float64 definition
applied to fully materialized logits."""

import pytest
import torch
from kdlang.runtime.kernels.fused_linear import chunk_rows
from kdlang.runtime.losses import fused_linear_distill_loss

from tests.runtime.losses.float64_reference import linear_loss_and_grads


@pytest.mark.parametrize("chunk_size", [1, 3, None])
@pytest.mark.parametrize("reduction", ["token_mean", "sum", "none"])
@pytest.mark.parametrize(
    "kind, params",
    [
        ("forward_kl", {}),
        ("reverse_kl", {}),
        ("jsd", {"beta": 0.3}),
        ("tvd", {}),
        ("skew_kl", {"alpha": 0.1}),
        ("skew_rkl", {"alpha": 0.9}),
    ],
)
def test_fused_linear_matches_materialized_logits(kind, params, reduction, chunk_size):
    torch.manual_seed(0)
    hs, ht, width = 8, 12, 23
    xs = torch.randn(2, 5, hs, dtype=torch.float64)
    xt = torch.randn(2, 5, ht, dtype=torch.float64)
    ws = torch.randn(width, hs, dtype=torch.float64)
    wt = torch.randn(width, ht, dtype=torch.float64)
    bs = torch.randn(width, dtype=torch.float64)
    labels = torch.randint(0, width, (2, 5))
    labels[1, 3] = -100
    grad_output = torch.rand(2, 5, dtype=torch.float64) if reduction == "none" else 0.7
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
        chunk_size=chunk_size,
        backend="torch",
        **params,
    )
    (loss * grad_output).sum().backward()
    ref = linear_loss_and_grads(
        kind,
        xs,
        ws,
        bs,
        xt,
        wt,
        temperature=2.0,
        labels=labels,
        reduction=reduction,
        grad_output=grad_output,
        **params,
    )
    for got, want in zip((loss, x.grad, w.grad, b.grad), ref, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-10, atol=1e-12)


def test_fused_linear_without_student_gradients_returns_the_loss_only():
    xs, ws = torch.randn(4, 6), torch.randn(9, 6)
    xt, wt = torch.randn(4, 5), torch.randn(9, 5)
    loss = fused_linear_distill_loss(xs, ws, xt, wt, backend="torch")
    assert loss.shape == () and torch.isfinite(loss)


def test_chunk_rows_bounds_the_logits_memory():
    rows = chunk_rows(8192, 128256, 4096, 2)
    assert rows % 64 == 0 and 256 <= rows <= 1024
    assert 2 * rows * 128256 * 2 <= 512 * 2**20
    assert chunk_rows(10, 1000, 64, 4) == 10


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"teacher_hidden": torch.randn(3, 5)}, "leading dims"),
        ({"student_weight": torch.randn(9, 7)}, r"student_weight must be \[V, 6\]"),
        ({"teacher_weight": torch.randn(8, 5)}, "teacher_weight"),
        ({"student_bias": torch.randn(8)}, "student_bias"),
        ({"kind": "jsd", "beta": 2.0}, "beta"),
        ({"reduction": "mean"}, "reduction"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_fused_linear_bad_arguments_raise(kwargs, message):
    args = {
        "student_hidden": torch.randn(4, 6),
        "student_weight": torch.randn(9, 6),
        "teacher_hidden": torch.randn(4, 5),
        "teacher_weight": torch.randn(9, 5),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        fused_linear_distill_loss(**args)


def test_fused_linear_second_backward_is_refused():
    x = torch.randn(4, 6, requires_grad=True)
    loss = fused_linear_distill_loss(x, torch.randn(9, 6), torch.randn(4, 5), torch.randn(9, 5))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="single time"):
        loss.backward()
