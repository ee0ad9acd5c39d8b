"""The divergence registry is the runtime's one list of the token-level losses: every IR loss
comparing with the teacher's distribution has its entry under its ``kernel_mode``, and the
dispatch (``resolve_kind``) reads options, limits and top-k finiteness from the entries."""

import pytest
import torch
from kdlang.runtime.losses import DIVERGENCES, distill_loss
from kdlang.runtime.losses.distill import resolve_kind
from kdlang.runtime.losses.reference import Divergence

from kdlang.ir import losses as ls
from kdlang.syntax.span import Span

SPAN = Span("test.kd", 1, 1, 1, 2)


def test_every_divergence_loss_has_an_entry_under_its_kernel_mode():
    modes = {cls.kernel_mode for cls in ls.LOSSES.values() if cls.teacher == "logits"}
    assert None not in modes
    assert modes == set(DIVERGENCES)


@pytest.mark.parametrize("name", [n for n, c in ls.LOSSES.items() if c.teacher == "logits"])
def test_the_irs_defaults_are_the_formulas_and_kernel_options_name_the_option(name):
    cls = ls.LOSSES[name]
    entry = DIVERGENCES[cls.kernel_mode]
    loss = cls(name=name, weight=1.0, span=SPAN)
    options = loss.kernel_options()
    assert set(options) == ({entry.option} if entry.option else set())
    for value in options.values():
        assert value == entry.default  # the IR's default and the formula's agree


def test_the_options_and_limits_come_from_the_entries():
    assert resolve_kind("jsd", {"beta": 0.3}, sparse=False) == ("jsd", 0.3)
    assert resolve_kind("jsd", {}, sparse=False) == ("jsd", DIVERGENCES["jsd"].default)
    assert resolve_kind("jsd", {"beta": 0.0}, sparse=False)[0] == "forward_kl"
    assert resolve_kind("jsd", {"beta": 1.0}, sparse=False)[0] == "reverse_kl"
    assert resolve_kind("skew_kl", {"alpha": 0.0}, sparse=False)[0] == "forward_kl"
    assert resolve_kind("skew_rkl", {"alpha": 0.0}, sparse=False)[0] == "reverse_kl"
    assert resolve_kind("skew_rkl", {"alpha": 0.4}, sparse=True) == ("skew_rkl", 0.4)


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("forward_kl", {"beta": 0.5}, "forward_kl takes no option"),
        ("jsd", {"alpha": 0.5}, "jsd takes only 'beta'"),
        ("skew_kl", {"alpha": 2.0}, "skew_kl needs 0 <= alpha <= 1"),
    ],
)
def test_options_a_divergence_does_not_take_are_refused(kind, options, message):
    with pytest.raises(ValueError, match=message):
        resolve_kind(kind, options, sparse=False)


def test_the_top_k_refusal_names_what_stays_finite():
    with pytest.raises(ValueError, match="infinite") as error:
        resolve_kind("jsd", {"beta": 1.0}, sparse=True)
    text = str(error.value)
    assert "jsd with beta != 1" in text and "skew_rkl with alpha != 0" in text
    assert "reverse_kl" not in text.split("use ")[-1]


def hellinger(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Hellinger distance 1 − Σ √(p q): a divergence no module of the runtime knows."""
    return 1.0 - torch.exp((a + b) / 2).sum(-1)


def test_a_registered_formula_is_all_the_torch_path_needs(monkeypatch):
    monkeypatch.setitem(DIVERGENCES, "hellinger", Divergence(hellinger))
    zs, zt = torch.randn(3, 11, dtype=torch.float64), torch.randn(3, 11, dtype=torch.float64)
    loss = distill_loss(zs, zt, "hellinger", temperature=2.0, backend="torch", reduction="sum")
    p, q = torch.softmax(zs / 2, -1), torch.softmax(zt / 2, -1)
    expected = (0.5 * (p.sqrt() - q.sqrt()).pow(2).sum(-1)).sum()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
