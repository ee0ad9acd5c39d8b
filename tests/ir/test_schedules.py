"""Schedule math against hand-computed values: ``Schedule.value``, ``LRSchedule.factor``,
durations and bounds."""

from __future__ import annotations

import math

import pytest

from kdlang.ir.values import (
    LRSchedule,
    Percent,
    Schedule,
    at_step,
    bounds,
    duration_steps,
)

TENTH = Percent(fraction=0.1)


@pytest.mark.parametrize(
    ("duration", "total", "steps"),
    [
        (Percent(fraction=0.3), 100, 30),
        (Percent(fraction=0.3), 7, 2),  # 2.1 rounds to 2
        (Percent(fraction=0.25), 10, 2),  # 2.5 rounds half to even
        (Percent(fraction=0.01), 10, 1),  # never below one step
        (Percent(fraction=1.0), 40, 40),
        (25, 1000, 25),  # a step count is a step count, whatever the run's length
    ],
)
def test_duration_steps(duration, total, steps):
    assert duration_steps(duration, total) == steps


def test_constant():
    schedule = Schedule(kind="constant", start=0.7, end=0.7)
    assert [schedule.value(step, 10) for step in (0, 5, 9, 100)] == [0.7] * 4


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0), (1, 1 / 30), (15, 0.5), (29, 29 / 30), (30, 1.0), (99, 1.0)],
)
def test_linear_over_a_percentage(step, expected):
    schedule = Schedule(kind="linear", start=0.0, end=1.0, over=Percent(fraction=0.3))
    assert schedule.value(step, 100) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 2.0), (25, 1.5), (50, 1.0), (75, 1.0)])
def test_linear_over_the_rest_of_the_run_by_default(step, expected):
    schedule = Schedule(kind="linear", start=2.0, end=1.0)
    assert schedule.value(step, 50) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (10, 1.0), (15, 0.75), (20, 0.5), (30, 0.0), (40, 0.0)],
)
def test_linear_starting_late(step, expected):
    # start = 10% of 100 steps, then over 20 steps
    schedule = Schedule(kind="linear", start=1.0, end=0.0, begin=TENTH, over=20)
    assert schedule.value(step, 100) == pytest.approx(expected)


def test_linear_starting_late_without_length_uses_the_rest():
    schedule = Schedule(kind="linear", start=0.0, end=1.0, begin=20)
    assert schedule.value(20, 100) == 0.0
    assert schedule.value(60, 100) == pytest.approx(0.5)
    assert schedule.value(100, 100) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 2.0),
        (25, 2.0 - 0.5 * (1 - math.sqrt(0.5))),  # half a cosine, a quarter of the way
        (50, 1.5),
        (75, 1.0 + 0.5 * (1 - math.sqrt(0.5))),
        (100, 1.0),
        (150, 1.0),
    ],
)
def test_cosine(step, expected):
    schedule = Schedule(kind="cosine", start=2.0, end=1.0, over=100)
    assert schedule.value(step, 200) == pytest.approx(expected)


def test_cosine_hand_values():
    schedule = Schedule(kind="cosine", start=2.0, end=1.0, over=100)
    assert schedule.value(25, 200) == pytest.approx(1.8535533905932737)
    assert schedule.value(75, 200) == pytest.approx(1.1464466094067263)


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (4, 1.0), (5, 0.25), (9, 0.25)])
def test_step(step, expected):
    schedule = Schedule(kind="step", start=1.0, end=0.25, at=Percent(fraction=0.5))
    assert schedule.value(step, 10) == expected


def test_step_at_a_step_count():
    schedule = Schedule(kind="step", start=4.0, end=1.0, at=3)
    assert [schedule.value(step, 1000) for step in (0, 2, 3, 999)] == [4.0, 4.0, 1.0, 1.0]


@pytest.mark.parametrize(("step", "expected"), [(0, 0.0), (5, 0.4), (10, 0.8), (50, 0.8)])
def test_warmup(step, expected):
    schedule = Schedule(kind="warmup", start=0.0, end=0.8, over=10)
    assert schedule.value(step, 100) == pytest.approx(expected)


def test_bounds_and_values_of_plain_numbers():
    assert Schedule(kind="linear", start=1.0, end=0.2).bounds() == (0.2, 1.0)
    assert bounds(Schedule(kind="warmup", start=0.0, end=3.0, over=5)) == (0.0, 3.0)
    assert bounds(0.5) == (0.5, 0.5)
    assert at_step(0.5, 3, 10) == 0.5
    assert at_step(Schedule(kind="linear", start=0.0, end=1.0), 5, 10) == pytest.approx(0.5)


def test_every_schedule_stays_within_its_bounds():
    schedules = [
        Schedule(kind="linear", start=0.0, end=1.0, over=Percent(fraction=0.3), begin=5),
        Schedule(kind="cosine", start=3.0, end=-1.0),
        Schedule(kind="step", start=2.0, end=0.5, at=7),
        Schedule(kind="warmup", start=0.0, end=0.9, over=Percent(fraction=0.5)),
    ]
    for schedule in schedules:
        low, high = schedule.bounds()
        for step in range(0, 40):
            assert low <= schedule.value(step, 37) <= high


# -- learning-rate factors -------------------------------------------------------------------------


def test_constant_learning_rate():
    schedule = LRSchedule(kind="constant")
    assert [schedule.factor(step, 10) for step in (0, 5, 9)] == [1.0, 1.0, 1.0]


def test_constant_learning_rate_with_warmup():
    schedule = LRSchedule(kind="constant", warmup=4)
    assert [schedule.factor(step, 10) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.1),  # warmup of 10 steps: (step + 1) / 10
        (4, 0.5),
        (9, 1.0),
        (10, 1.0),  # cosine starts at its peak
        (35, 0.5 * (1 + math.cos(math.pi * 0.25))),
        (60, 0.5),
        (110, 0.0),
    ],
)
def test_cosine_learning_rate_with_warmup(step, expected):
    schedule = LRSchedule(kind="cosine", warmup=10)
    assert schedule.factor(step, 110) == pytest.approx(expected)


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (50, 0.55), (100, 0.1), (150, 0.1)])
def test_linear_learning_rate_decays_to_its_floor(step, expected):
    schedule = LRSchedule(kind="linear", min_ratio=0.1)
    assert schedule.factor(step, 100) == pytest.approx(expected)


def test_warmup_as_a_percentage_of_the_run():
    schedule = LRSchedule(kind="cosine", warmup=Percent(fraction=0.05), min_ratio=0.2)
    # 5% of 200 steps = 10 warmup steps, then 190 steps of cosine down to 0.2
    assert schedule.factor(0, 200) == pytest.approx(0.1)
    assert schedule.factor(9, 200) == pytest.approx(1.0)
    assert schedule.factor(105, 200) == pytest.approx(0.2 + 0.8 * 0.5)
    assert schedule.factor(200, 200) == pytest.approx(0.2)
