"""The loss-curve picture: smoothed curves over their raw traces, scheduled values drawn only
when they change (constant ones named in the legend), unrecorded ones left out."""

from __future__ import annotations

import pytest
from kdlang.runtime.train.metrics import plot_curves, schedule_lines, smoothed


def test_smoothing_is_a_debiased_moving_average():
    # w = 0.5: point i is Σ_j 0.5^(i-j) · 0.5 · v_j / (1 - 0.5^(i+1)), by hand
    assert smoothed([4.0, 0.0, 2.0], weight=0.5) == pytest.approx(
        [4.0, (0.5 * 0.5 * 4.0) / 0.75, (0.25 * 0.5 * 4.0 + 0.5 * 2.0) / 0.875]
    )
    assert smoothed([3.0] * 20) == pytest.approx([3.0] * 20)  # a constant stays itself


def test_constant_schedules_go_to_the_legend_and_changing_ones_are_drawn():
    records = [
        {"step": s, "loss": 1.0 / (s + 1), "weight/sft": 1.0, "temperature/jsd": 1.0 + s,
         "beta/jsd": None, "on_policy": 0.0}
        for s in range(5)
    ]  # fmt: skip
    moving, constant = schedule_lines(records)
    assert moving == ["temperature/jsd"]
    assert constant == {"on_policy": 0.0, "weight/sft": 1.0}  # beta/jsd never recorded: left out


def test_the_picture_is_written(tmp_path):
    records = [{"step": s, "loss": 2.0 - s / 40, "sft": 1.0, "lr": 1e-3} for s in range(40)]
    plot_curves(records, ["sft"], tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
