"""The torch path of ``distill_loss`` against float64 formulas written from the definitions."""

import math
import subprocess
import sys

import pytest
import torch
from kdlang.runtime.losses import DIVERGENCES, distill_loss

from tests.runtime.losses.float64_reference import loss_and_grad

KIND_PARAMS = {
    "forward_kl": [{}],
    "reverse_kl": [{}],
    "jsd": [{"beta": 0.0}, {"beta": 0.3}, {"beta": 1.0}],
    "tvd": [{}],
    "skew_kl": [{"alpha": 0.1}, {"alpha": 0.9}],
    "skew_rkl": [{"alpha": 0.1}, {"alpha": 0.9}],
    "teacher_ce": [{}],  # its own tests: tests/runtime/kernels/test_teacher_ce.py
}


def close(actual, expected, rtol):
    actual, expected = actual.detach().double(), expected.detach().double()
    assert torch.isfinite(actual).all()
    atol = rtol * float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol, 1e-300))


def logits(*shape, scale=3.0, dtype=torch.float32, seed=None):
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


def check_kind(kind, params, *, dtype=torch.float32, temperature=2.0, width=37, labels=True):
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    zs, zt = logits(3, 5, width, dtype=dtype), logits(3, 5, width, dtype=dtype)
    lab = torch.randint(0, width, (3, 5)) if labels else None
    if labels:
        lab[0, :2] = -100
    z = zs.clone().requires_grad_(True)
    loss = distill_loss(z, zt, kind, temperature=temperature, labels=lab, backend="torch", **params)
    loss.backward()
    ref, ref_grad = loss_and_grad(kind, zs, zt, temperature=temperature, labels=lab, **params)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    close(loss, ref, rtol)
    close(z.grad, ref_grad, rtol)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_kl(dtype, temperature):
    check_kind("forward_kl", {}, dtype=dtype, temperature=temperature)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reverse_kl(dtype):
    check_kind("reverse_kl", {}, dtype=dtype)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jsd(dtype, beta):
    check_kind("jsd", {"beta": beta}, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tvd(dtype):
    check_kind("tvd", {}, dtype=dtype, labels=False)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.9, 1.0])
def test_skew_kl(alpha):
    check_kind("skew_kl", {"alpha": alpha}, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.9, 1.0])
def test_skew_rkl(alpha):
    check_kind("skew_rkl", {"alpha": alpha}, dtype=torch.float64)


def test_registry_keys_are_the_dsl_words():
    assert set(DIVERGENCES) == set(KIND_PARAMS)
    for name, fn in DIVERGENCES.items():
        assert fn.__name__ == name


@pytest.mark.parametrize("kind", ["forward_kl", "jsd", "tvd", "skew_kl", "skew_rkl"])
@pytest.mark.parametrize("k", [1, 8])
def test_topk_teacher(kind, k):
    width = 29
    zs = logits(4, width, dtype=torch.float64)
    ids = torch.stack([torch.randperm(width)[:k] for _ in range(4)])
    lp = torch.log_softmax(logits(4, k), -1)
    params = {"beta": 0.3} if kind == "jsd" else {"alpha": 0.1} if "skew" in kind else {}
    z = zs.clone().requires_grad_(True)
    loss = distill_loss(
        z, kind=kind, teacher_topk=(ids, lp), temperature=2.0, backend="torch", **params
    )
    loss.backward()
    ref, ref_grad = loss_and_grad(kind, zs, topk=(ids, lp), temperature=2.0, **params)
    close(loss, ref, 1e-10)
    close(z.grad, ref_grad, 1e-10)


@pytest.mark.parametrize(
    "kind, params", [("reverse_kl", {}), ("jsd", {"beta": 1.0}), ("skew_rkl", {"alpha": 0.0})]
)
def test_topk_infinite_divergences_raise(kind, params):
    ids = torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(ValueError, match="infinite"):
        distill_loss(logits(2, 10), kind=kind, teacher_topk=(ids, torch.zeros(2, 3)), **params)


def test_all_ignored_positions_give_zero_loss_and_zero_grad():
    z = logits(4, 11).requires_grad_(True)
    labels = torch.full((4,), -100)
    loss = distill_loss(z, logits(4, 11), "jsd", labels=labels, backend="torch")
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("kind", list(KIND_PARAMS))
def test_masked_vocabulary_is_exact(kind):
    zs, zt = logits(3, 20, dtype=torch.float64), logits(3, 20, dtype=torch.float64)
    zs[:, 5:9] = -math.inf
    zt[:, 5:9] = -math.inf
    z = zs.clone().requires_grad_(True)
    loss = distill_loss(z, zt, kind, temperature=0.5, backend="torch")
    loss.backward()
    keep = [i for i in range(20) if not 5 <= i < 9]
    ref = distill_loss(zs[:, keep], zt[:, keep], kind, temperature=0.5, backend="torch")
    close(loss, ref, 1e-12)
    assert torch.equal(z.grad[:, 5:9], torch.zeros(3, 4, dtype=torch.float64))
    assert torch.isfinite(z.grad).all()


def test_reductions_and_leading_dims():
    zs, zt = logits(2, 3, 13), logits(2, 3, 13)
    labels = torch.tensor([[1, -100, 2], [3, 4, -100]])
    per = distill_loss(zs, zt, labels=labels, reduction="none", backend="torch")
    assert per.shape == (2, 3)
    assert per[0, 1] == 0 and per[1, 2] == 0
    total = distill_loss(zs, zt, labels=labels, reduction="sum", backend="torch")
    mean = distill_loss(zs, zt, labels=labels, backend="torch")
    close(total, per.sum(), 1e-6)
    close(mean, per.sum() / 4, 1e-6)


def test_value_is_not_scaled_by_temperature_squared():
    zs, zt = logits(4, 9, dtype=torch.float64), logits(4, 9, dtype=torch.float64)
    loss = distill_loss(zs, zt, temperature=3.0, backend="torch")
    ref, _ = loss_and_grad("forward_kl", zs, zt, temperature=3.0)
    close(loss, ref, 1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda z: distill_loss(z, z, "kl"), "unknown divergence"),
        (lambda z: distill_loss(z), "exactly one"),
        (lambda z: distill_loss(z, z[:, :5]), "differ"),
        (lambda z: distill_loss(z, z, temperature=0.0), "temperature"),
        (lambda z: distill_loss(z, z, "jsd", beta=1.5), "beta"),
        (lambda z: distill_loss(z, z, "skew_kl", alpha=-0.1), "alpha"),
        (lambda z: distill_loss(z, z, reduction="mean"), "reduction"),
        (lambda z: distill_loss(z, z, backend="cuda"), "backend"),
        (lambda z: distill_loss(z, z, labels=torch.zeros(3, dtype=torch.long)), "labels"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(logits(4, 7))


def test_import_does_not_load_triton(tmp_path):
    code = "import sys, kdlang.runtime.losses; print('triton' in sys.modules)"
    # Run away from the checkout, whose kdlang/ folder has no runtime/ (it maps in on install).
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
