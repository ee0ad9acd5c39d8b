"""The fuzz suite: mutated and spliced recipes through ``check`` (and ``fmt`` when they check
clean), in-process, each within its time limit; every outcome is diagnostics with positions or a
clean recipe, never a traceback, a hang or runaway memory.

CI runs :data:`CASES` mutated cases (``KDLANG_FUZZ_CASES`` and ``KDLANG_FUZZ_SEED`` change that)
and :data:`GENERATED` recipes drawn from the grammar (``KDLANG_FUZZ_GENERATED``); a long run is
``python -m tests.fuzz --cases 200000``. Each finding, once fixed, becomes a case in
``tests/syntax/bad/``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.cases import cases
from tests.fuzz.harness import run_case
from tests.syntax.recipe_strategies import syntactic_recipes

CASES = int(os.environ.get("KDLANG_FUZZ_CASES", "10000"))
SEED = int(os.environ.get("KDLANG_FUZZ_SEED", "1"))
BATCH = 250
GENERATED = int(os.environ.get("KDLANG_FUZZ_GENERATED", "1000"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("batch", range((CASES + BATCH - 1) // BATCH))
def test_fuzzed_recipes_get_diagnostics_never_a_traceback(batch, tmp_path):
    count = min(BATCH, CASES - batch * BATCH)
    outcomes = [run_case(name, data, tmp_path) for name, data in cases(SEED, count, batch * BATCH)]
    assert len(outcomes) == count
    findings = [o for o in outcomes if o.kind == "finding"]
    assert not findings, "\n\n".join(f"{o.name}: {o.detail}" for o in findings[:5])
    # the cases are real work: most mutations break the recipe, some leave it valid
    kinds = {o.kind for o in outcomes}
    assert "diagnostics" in kinds


def test_the_cases_are_reproducible_by_name():
    from tests.fuzz.cases import case

    first = list(cases(SEED, 40, 7))
    for name, data in first:
        assert case(name) == data
    assert len({data for _, data in first}) > 30  # different cases, not one repeated


@settings(max_examples=GENERATED, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=syntactic_recipes())
def test_generated_recipes_get_diagnostics_never_a_traceback(text, tmp_path_factory):
    # Recipes drawn from the grammar: they parse, and the checker meets every form of it
    # (names that do not resolve, settings of the wrong kind, values of every shape).
    outcome = run_case("generated", text.encode(), tmp_path_factory.mktemp("generated"))
    assert outcome.kind != "finding", outcome.detail


def test_the_harness_reports_a_hang_an_escape_and_a_diagnostic_without_a_position(
    tmp_path, monkeypatch
):
    import kdlang.check
    from kdlang.syntax.diagnostics import Diagnostic
    from kdlang.syntax.span import Span
    from tests.fuzz import harness

    monkeypatch.setattr(harness, "TIME_LIMIT", 0.2)

    def spin(paths):
        while True:
            pass

    def escape(paths):
        raise KeyError("boom")

    def unplaced(paths):
        return [Diagnostic("KD0101", "x", Span(paths[0], 0, 0, 0, 1))], {}

    outcomes = []
    for fake in (spin, escape, unplaced):
        monkeypatch.setattr(kdlang.check, "check_files", fake)
        outcomes.append(run_case("fake", b"recipe", tmp_path))
    assert [o.kind for o in outcomes] == ["finding"] * 3
    assert outcomes[0].detail == "used more than 0.2 s of CPU time"
    assert "KeyError: 'boom'" in outcomes[1].detail
    assert outcomes[2].detail.startswith("a diagnostic without a position: KD0101")
