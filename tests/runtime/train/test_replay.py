"""DistiLLM's adaptive off-policy schedule (``replay = adaptive(...)``): the decisions of a
seeded sequence of draws, the threshold's rises with the dev loss, the buffer (capacity, draws,
checkpoint state), several samples per prompt, a run end to end, and a run stopped between its
sampling and its step that resumes to byte-identical metrics."""

from __future__ import annotations

import random

import pytest
from kdlang.runtime.train import replay as rp
from kdlang.runtime.train.replay import DATA, FRESH, REPLAY, Replay

from tests.runtime.train.support import artifact, metrics, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)


def test_the_draws_of_a_seeded_sequence_pick_fresh_replayed_and_data_batches():
    # r of step s is random.Random("kdlang-replay:3:s").random(); with t = 0.5 over 10 steps:
    draws = [random.Random(f"kdlang-replay:3:{s}").random() for s in range(10)]
    assert [round(r, 4) for r in draws] == [
        0.8341, 0.7421, 0.0494, 0.2075, 0.7215, 0.3404, 0.4662, 0.5396, 0.5552, 0.0246
    ]  # fmt: skip
    state = Replay(threshold=0.5, capacity=4, loss_eps=0.1)
    decided = []
    for step in range(10):
        source = state.decide(3, step, 10)
        decided.append(source)
        if source == FRESH:  # a batch of 2 samples goes into the buffer
            state.add([(step, [step, 0]), (step, [step, 1])])
        if step == 6:  # three evaluations: 1.0 (the reference), 1.05 (+0.05), 1.2 (+0.2 > 0.1)
            for loss in (1.0, 1.05, 1.2):
                state.observe(loss)
    # s0, s1: r >= t → data; s2 (0.049 < 0.5·0.8), s3 (0.208 < 0.35) → fresh, buffer full (4);
    # s4: 0.72 → data; s5 (0.25 <= 0.34 < 0.5), s6 (0.2 <= 0.47 < 0.5) → replay from the full
    # buffer; then t = 0.6: s7 (0.54 < 0.6), s8 (0.56 < 0.6) → replay; s9: 0.025 < 0.6·0.1 → fresh
    assert decided == [DATA, DATA, FRESH, FRESH, DATA, REPLAY, REPLAY, REPLAY, REPLAY, FRESH]
    assert state.threshold == pytest.approx(0.6) and state.reference == 1.2
    # the oldest samples left when step 9's came in
    assert state.buffer == [(3, [3, 0]), (3, [3, 1]), (9, [9, 0]), (9, [9, 1])]


def test_a_not_full_buffer_is_filled_by_fresh_samples_first():
    state = Replay(threshold=0.5, capacity=4, loss_eps=0.1)
    # step 5 of 10 draws 0.3404: above 0.5 · (1 − 5/10) = 0.25, below t: replay once full
    assert state.decide(3, 5, 10) == FRESH
    state.add([(0, [1])] * 4)
    assert state.decide(3, 5, 10) == REPLAY


def test_the_threshold_rises_by_a_tenth_up_to_one_only_past_loss_eps():
    state = Replay(threshold=0.85, capacity=8, loss_eps=0.5)
    state.observe(2.0)
    state.observe(2.5)  # +0.5 is not more than loss_eps
    assert (state.threshold, state.reference) == (0.85, 2.0)
    state.observe(2.6)
    assert (state.threshold, state.reference) == (pytest.approx(0.95), 2.6)
    state.observe(1.0)  # a fall changes nothing
    state.observe(3.2)
    assert (state.threshold, state.reference) == (1.0, 3.2)


def test_replayed_batches_are_seeded_by_the_step_and_the_state_round_trips():
    state = Replay(threshold=0.5, capacity=6, loss_eps=0.1)
    state.add([(row, [row, row + 1]) for row in range(6)])
    drawn = state.draw(seed=3, step=7, count=4)
    assert drawn == state.draw(seed=3, step=7, count=4)
    assert len({row for row, _ in drawn}) == 4  # without replacement
    expected = random.Random("kdlang-replay-draw:3:7").sample(range(6), 4)
    assert [row for row, _ in drawn] == expected
    other = Replay(threshold=0.5, capacity=6, loss_eps=0.1)
    other.load(state.state())
    assert other == state


DATA_ROWS = """
dataset rows = inline([
  {q: "What is 12 plus 7?", a: "12 + 7 = 19. #### 19"},
  {q: "What is 30 minus 4?", a: "30 - 4 = 26. #### 26"},
  {q: "A farmer has 3 cows and buys 5 more. How many cows?", a: "3 + 5 = 8. #### 8"},
  {q: "Write a short poem about the sea.", a: "The wind and the light of the morning."},
])
dataset dev = inline([
  {q: "What is 2 plus 2?", a: "2 + 2 = 4. #### 4"},
  {q: "Name a color.", a: "Blue, like the sea."},
])
prompt ask = \"\"\"Q: {{ q }}
A:\"\"\"
"""


def adaptive_recipe(steps: int, extra: str = "") -> str:
    return (
        DATA_ROWS
        + f"""
train t {{
  student = student  teacher = teacher  data = rows  prompt = ask  target = a
  max_steps = {steps}  batch = 2  lr = 3e-3  eval_data = dev  eval_every = 2
  replay = adaptive(threshold = 0.9, capacity = 4, loss_eps = 0.0)
  max_new_tokens = 5  checkpoint_every = 2  log_every = 1  {extra}
  loss skew_kl(alpha = 0.1) weight 1.0
  loss sft weight 0.5
}}
"""
    )


def expected_sources(seed: int, steps: int, records) -> list[str]:
    """The schedule replayed by hand from the records' thresholds (fresh adds 2 x G)."""
    state = Replay(threshold=0.9, capacity=4, loss_eps=0.0)
    out = []
    for step in range(steps):
        out.append(state.decide(seed, step, steps))
        if out[-1] == FRESH:
            state.add([(0, [0])] * 2)
        state.threshold = records[step].get("replay_threshold", state.threshold)
    return out


def test_an_adaptive_run_follows_its_schedule(tmp_path, tiny_pair):
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + adaptive_recipe(6)))
    records = metrics(report, "t")
    sources = [r["batch_source"] for r in records]
    assert sources == expected_sources(7, 6, records)
    assert REPLAY in sources and FRESH in sources
    for record in records:  # on sampled batches the data's losses do not apply (sft)
        assert ("sft" in record) == (record["batch_source"] == DATA)
        assert record["on_policy_batch"] == (record["batch_source"] != DATA)
    assert [r["step"] for r in records if "eval/loss" in r] == [1, 3, 5]


def test_several_generations_per_prompt_multiply_the_sequences_of_a_sampled_step(
    tmp_path, tiny_pair, monkeypatch
):
    seen: list[list[tuple[int, int]]] = []
    sample = rp.sample_rows

    def record(job, model, wanted, step, teacher):
        seen.append(list(wanted))
        return sample(job, model, wanted, step, teacher)

    monkeypatch.setattr(rp, "sample_rows", record)
    text = models(tiny_pair) + adaptive_recipe(3, "num_generations = 3")
    report = run_recipe(write_recipe(tmp_path, text.replace("capacity = 4", "capacity = 12")))
    records = metrics(report, "t")
    fresh = [r for r in records if r["batch_source"] == FRESH]
    assert fresh and len(seen) == len(fresh)
    for wanted in seen:  # each of the batch's 2 rows three times, generations 0, 1, 2
        assert [g for _, g in wanted] == [0, 1, 2, 0, 1, 2]
        assert wanted[0][0] == wanted[2][0] != wanted[3][0]


class Stop(Exception):
    pass


def test_a_run_stopped_between_sampling_and_its_step_resumes_byte_identical(
    tmp_path, tiny_pair, monkeypatch
):
    text = models(tiny_pair) + adaptive_recipe(6)
    whole = run_recipe(write_recipe(tmp_path / "whole", text))
    sources = [r["batch_source"] for r in metrics(whole, "t")]
    stop_at = next(s for s, source in enumerate(sources) if source == FRESH and s >= 3)
    recipe = write_recipe(tmp_path / "stopped", text)
    sample = rp.sample_rows

    def stop_after_sampling(job, model, wanted, step, teacher):
        made = sample(job, model, wanted, step, teacher)
        if step == stop_at:  # the samples exist, the step has not run
            raise Stop
        return made

    monkeypatch.setattr(rp, "sample_rows", stop_after_sampling)
    with pytest.raises(Stop):
        run_recipe(recipe)
    monkeypatch.setattr(rp, "sample_rows", sample)
    resumed = run_recipe(recipe)
    assert node(resumed, "t")["stats"]["resumed_from_step"] == stop_at - stop_at % 2
    written = (artifact(resumed, "t") / "metrics.jsonl").read_bytes()
    assert written == (artifact(whole, "t") / "metrics.jsonl").read_bytes()
