"""The settings that act on a cached top-k teacher alone (``topk_mass``, KD0320; ``reduction =
topk_entries``, KD0321) are errors where the teacher is online; on a ``teacher_logits`` stage's
cache they are fine, and ``topk_mass`` changes nothing about which losses stay finite there
(KD0307)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.check.support import HEADER, diagnose, found

PROMPT = 'prompt solve = "Q: {{ question }}"\n'  # line 5
CACHE = "stage soft = teacher_logits(problems) { teacher = teacher  prompt = solve  target = answer }\n"  # line 6


def check(project: Path, *lines: str, cached: bool) -> list:
    """A train block whose loss line is line 9 (cached: after the stage) or 8 (online)."""
    data = "soft" if cached else "problems"
    teacher = "" if cached else "  teacher = teacher"
    block = (
        f"train distill {{\n  student = student  data = {data}  prompt = solve  target = answer"
        f"{teacher}\n" + "".join(f"  {line}\n" for line in lines) + "}\n"
    )
    return diagnose(project, HEADER + PROMPT + (CACHE if cached else "") + block, [])


@pytest.fixture(autouse=True)
def _server_url(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("URL", "http://127.0.0.1:9/v1")


@pytest.mark.parametrize("mass", ["renormalize", "keep", "uniform"])
def test_topk_mass_against_an_online_teacher(project: Path, mass: str):
    diagnostics = check(project, f"loss forward_kl(topk_mass = {mass}) weight 1.0", cached=False)
    assert found(diagnostics) == [("KD0320", 8, 31)]
    (d,) = diagnostics
    assert d.message.startswith("`topk_mass` has no effect here: `forward_kl` compares with")


def test_topk_entries_against_an_online_teacher(project: Path):
    line = "loss jsd(beta = 0.2, reduction = topk_entries) weight 1.0"
    assert found(check(project, line, cached=False)) == [("KD0321", 8, 36)]


@pytest.mark.parametrize(
    "line",
    [
        "loss forward_kl(topk_mass = keep, reduction = topk_entries) weight 1.0",
        "loss tvd(topk_mass = uniform) weight 1.0 temperature 2.0",
        "loss skew_rkl(alpha = 0.2, topk_mass = uniform, reduction = sum) weight 1.0",
    ],
)
def test_top_k_settings_on_a_cached_teacher(project: Path, line: str):
    assert check(project, line, cached=True) == []


def test_online_teacher_token_mean_and_sum_are_fine(project: Path):
    lines = (
        "loss forward_kl(reduction = sum) weight 1.0",
        "loss tvd(reduction = token_mean) weight 1.0",
    )
    assert check(project, *lines, cached=False) == []


def test_uniform_mass_does_not_make_reverse_kl_finite(project: Path):
    line = "loss reverse_kl(topk_mass = uniform) weight 1.0"
    assert found(check(project, line, cached=True)) == [("KD0307", 9, 3)]


def test_an_unknown_mass_handling_is_named(project: Path):
    (d,) = check(project, "loss forward_kl(topk_mass = spread) weight 1.0", cached=True)
    assert (d.code, d.span.line, d.span.column) == ("KD0103", 9, 31)
    assert "'renormalize', 'keep' or 'uniform'" in d.message
