"""The kernels' registry of modes covers exactly the reference registry of divergences."""

import pytest

pytest.importorskip("triton")

from kdlang.runtime.kernels import entries
from kdlang.runtime.losses import DIVERGENCES


def test_every_divergence_has_a_kernel_mode():
    assert set(entries.MODES) == set(DIVERGENCES)
    assert len(set(entries.MODES.values())) == len(entries.MODES)


@pytest.mark.parametrize("kind", list(DIVERGENCES))
def test_outside_terms_are_finite_exactly_where_the_registry_says(kind):
    entry = DIVERGENCES[kind]
    weight = 0.3 if entry.option else 0.0
    if entry.topk_finite:
        entries.outside_terms(entries.MODES[kind], weight)
    else:
        with pytest.raises(ValueError, match="infinite"):
            entries.outside_terms(entries.MODES[kind], weight)
