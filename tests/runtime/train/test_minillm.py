"""MiniLLM's training steps on the tiny teacher/student pair: the teacher-mixed sampler (its
importance weights, and its draws against the mixture on a 3-token toy), the recorded rewards
and LM term against float64 recomputations, and resume in the middle of a rollout."""

from __future__ import annotations

import math

import pytest
import torch
from kdlang.runtime.train import rollout as ro
from kdlang.runtime.train.metrics import MetricsLog
from kdlang.runtime.train.minillm import LMOrder
from kdlang.runtime.train.rollout import Rollout

from tests.runtime.train.support import metrics, models, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

VARYING = {"seconds"}


# --------------------------------------------------------------------------- the sampler


class Fixed(torch.nn.Module):
    """A 'language model' whose next-token logits are always ``logits`` (a cache of nothing)."""

    def __init__(self, logits: list[float]):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float64))

    def forward(self, input_ids, past_key_values=None, use_cache=True):
        class Out:
            pass

        out = Out()
        out.logits = self.logits.expand(input_ids.shape[0], input_ids.shape[1], -1)
        out.past_key_values = ()
        return out


def test_mixed_draws_follow_the_mixture_on_a_three_token_toy():
    student, teacher = Fixed([2.0, 0.0, -1.0]), Fixed([-1.0, 0.5, 1.5])
    alpha, temperature, draws = 0.3, 0.8, 20_000
    tokens = ro.sample_rollouts(
        student,
        teacher,
        [(row, [0]) for row in range(draws)],
        seed=5,
        rollout=0,
        alpha=alpha,
        temperature=temperature,
        max_new_tokens=1,
        eos_ids=set(),
    )
    counts = torch.bincount(torch.tensor([t[0] for t in tokens]), minlength=3).double()
    p_s = torch.softmax(torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64) / temperature, 0)
    p_t = torch.softmax(torch.tensor([-1.0, 0.5, 1.5], dtype=torch.float64) / temperature, 0)
    mix = (1 - alpha) * p_s + alpha * p_t
    # each frequency is a mean of `draws` Bernoulli(m); 5 standard deviations (a false alarm
    # below 1e-6 per token)
    bound = 5 * torch.sqrt(mix * (1 - mix) / draws)
    assert torch.all((counts / draws - mix).abs() <= bound), (counts / draws, mix)
    # and not the student's own distribution: the teacher's share moved it by many bounds
    assert (counts[2] / draws - p_s[2]).abs() > 10 * bound[2]


def test_a_row_draws_the_same_tokens_whatever_else_is_drawn():
    student, teacher = Fixed([0.3, 0.1, 0.0, -0.2]), Fixed([0.0, 0.0, 1.0, 0.0])
    settings = dict(seed=1, alpha=0.5, temperature=1.0, max_new_tokens=6, eos_ids={3})
    alone = ro.sample_rollouts(student, teacher, [(7, [1, 2])], rollout=4, **settings)
    among = ro.sample_rollouts(
        student, teacher, [(2, [0]), (7, [1, 2]), (9, [2])], rollout=4, **settings
    )
    assert among[1] == alone[0]
    later = ro.sample_rollouts(student, teacher, [(7, [1, 2])], rollout=5, **settings)
    assert later[0] != alone[0] or len(alone[0]) < 2  # another rollout, another stream
    assert all(t[-1] == 3 or len(t) == 6 for t in among)  # stops after EOS or the budget


# --------------------------------------------------------------------------- check


@pytest.mark.parametrize(
    "setting, code",
    [
        ("num_generations = 2", "KD0355"),
        ("seq_kd = true", "KD0355"),
        ("on_policy = linear(0.0 -> 1.0)  target = q", "KD0355"),
        ("sample_top_p = 0.95", "KD0356"),
        ("lm_data = ask", "KD0204"),  # a prompt, not rows
        ("lm_data = corpus  lm_text = missing", "KD0357"),
    ],
)
def test_what_minillm_cannot_honour_is_a_diagnostic(tmp_path, tiny_pair, setting, code):
    from kdlang.check import check_files

    body = recipe_body(tiny_pair, lm=False, extra=setting)
    if setting.startswith("on_policy"):
        body = body.replace("on_policy = 1  ", "")
    diagnostics, _ = check_files([str(write_recipe(tmp_path, body))])
    assert [d.code for d in diagnostics if d.severity.name == "ERROR"] == [code]


def test_a_minillm_recipe_checks_clean(tmp_path, tiny_pair):
    from kdlang.check import check_files

    diagnostics, _ = check_files([str(write_recipe(tmp_path, recipe_body(tiny_pair)))])
    assert diagnostics == []


# --------------------------------------------------------------------------- runs


def rows_text(count: int) -> str:
    return ", ".join(f'{{q: "What is {i} plus {i + 2}?"}}' for i in range(count))


def recipe_body(pair, *, steps=4, every=200, mix=0.3, ppo=2, lm=True, extra="") -> str:
    lm_rows = ", ".join(f'{{text: "The sum of {i} and {i} is {2 * i}."}}' for i in range(5))
    lm_settings = "lm_data = corpus  lm_weight = 0.5" if lm else ""
    return f"""
    {models(pair)}
    dataset rows = inline([{rows_text(6)}])
    dataset corpus = inline([{lm_rows}])
    prompt ask = "Q: {{{{ q }}}}\\nA:"
    train rl {{
      student = student  teacher = teacher  data = rows  prompt = ask
      max_steps = {steps}  batch = 3  lr = 1e-3  checkpoint_every = {every}  log_every = 1
      on_policy = 1  max_new_tokens = 5  sample_temperature = 1.0
      teacher_mix = {mix}  ppo_epochs = {ppo}  {lm_settings}
      {extra}
      loss minillm(gamma = 0.9, clip_eps = 0.2) weight 1.0
    }}
    """


def test_steps_record_rollouts_passes_and_every_part(tmp_path, tiny_pair):
    report = run_recipe(write_recipe(tmp_path, recipe_body(tiny_pair)))
    records = metrics(report, "rl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [(r["rollout"], r["ppo_pass"]) for r in records] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in records:
        for key in ("minillm", "minillm/long_term", "minillm/single_step", "lm", "reward"):
            assert math.isfinite(r[key]), key
        assert r["minillm/single_step"] >= 0.0  # a reverse KL
        assert r["minillm"] == pytest.approx(r["minillm/long_term"] + r["minillm/single_step"])
        assert r["loss"] == pytest.approx(r["minillm"] + 0.5 * r["lm"])
        assert 0.0 <= r["clip_fraction"] <= 1.0
        assert r["ratio_min"] <= r["ratio_mean"] <= r["ratio_max"]
        assert 0 < r["sample_length"] <= 5 and r["tokens"] > 0
    # the two passes of a rollout learn from the same samples: the same rollout statistics
    for a, b in ((records[0], records[1]), (records[2], records[3])):
        assert (a["reward"], a["return"], a["tokens"]) == (b["reward"], b["return"], b["tokens"])
    # the first pass starts at the rollout's weights: the ratios are the importance weights
    assert records[0]["clip_fraction"] <= 1.0 and records[0]["ratio_mean"] == pytest.approx(
        records[0]["importance_weight"], rel=1e-4
    )


def test_the_first_rewards_and_lm_loss_are_the_initial_models(tmp_path, tiny_pair, monkeypatch):
    """Step 0's reward mean and LM cross-entropy, recomputed in float64 from the initial
    student and teacher on the rollout's tokens and the LM rows the step read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    saved = saved_rollouts(monkeypatch)
    report = run_recipe(write_recipe(tmp_path, recipe_body(tiny_pair, steps=1, ppo=1)))
    (record,) = metrics(report, "rl")
    (tmp_path / "rollout.pt").write_bytes(saved["00000000-rank0.pt"])
    rollout = Rollout.load(tmp_path / "rollout.pt")
    assert record["rollout_digest"] == rollout.digest()
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).double().eval()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).double().eval()
    total = count = 0.0
    for example in rollout.examples:
        ids = torch.tensor([example.prompt + example.target])
        with torch.no_grad():
            s = torch.log_softmax(student(input_ids=ids).logits[0], -1)
            t = torch.log_softmax(teacher(input_ids=ids).logits[0], -1)
        for k, token in enumerate(example.target):
            position = len(example.prompt) - 1 + k
            total += float(t[position, token] - s[position, token])
            count += 1
    assert record["reward"] == pytest.approx(total / count, rel=1e-4, abs=1e-5)

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.student)
    texts = [f"The sum of {i} and {i} is {2 * i}." for i in range(5)]
    nll = tokens = 0.0
    for row in LMOrder(5, 3, 7).step_rows(0):
        start = tokenizer.bos_token_id
        prompt = [start if start is not None else tokenizer.eos_token_id]
        target = tokenizer(texts[row], add_special_tokens=False)["input_ids"]
        target = [*target, tokenizer.eos_token_id]
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            lp = torch.log_softmax(student(input_ids=ids).logits[0], -1)
        for k, token in enumerate(target):
            nll -= float(lp[len(prompt) - 1 + k, token])
            tokens += 1
    assert record["lm"] == pytest.approx(nll / tokens, rel=1e-4)


class Crash(Exception):
    pass


def comparable(records):
    return [{k: v for k, v in r.items() if k not in VARYING} for r in records]


def saved_rollouts(monkeypatch) -> dict[str, bytes]:
    """Every rollout file the runs write from now on, by name, as written (the progress folder
    holding them is removed once the train's artifact is committed)."""
    saved: dict[str, bytes] = {}
    save = Rollout.save

    def keep(self, path):
        save(self, path)
        saved[path.name] = path.read_bytes()

    monkeypatch.setattr(Rollout, "save", keep)
    return saved


def test_a_run_killed_between_passes_resumes_with_the_same_rollout(
    tmp_path, tiny_pair, monkeypatch
):
    # three passes per rollout, checkpoints after steps 2, 4 and 6: the run killed after step 5
    # resumes at step 4, the second pass over rollout 1, which it must read back
    body = recipe_body(tiny_pair, steps=8, every=2, ppo=3)
    expected = saved_rollouts(monkeypatch)
    whole = run_recipe(write_recipe(tmp_path / "whole", body))
    expected = dict(expected)
    written = saved_rollouts(monkeypatch)
    recipe = write_recipe(tmp_path / "cut", body)
    extend = MetricsLog.extend

    def crash_after_step_5(self, records):
        extend(self, records)
        if any(r["step"] == 5 for r in records):
            raise Crash

    monkeypatch.setattr(MetricsLog, "extend", crash_after_step_5)
    with pytest.raises(Crash):
        run_recipe(recipe)
    monkeypatch.setattr(MetricsLog, "extend", extend)
    resumed = run_recipe(recipe)
    assert comparable(metrics(resumed, "rl")) == comparable(metrics(whole, "rl"))
    assert written == expected and len(expected) == 3  # byte for byte, each rollout once


def test_a_run_killed_while_sampling_draws_the_same_samples_again(tmp_path, tiny_pair, monkeypatch):
    body = recipe_body(tiny_pair, steps=6, every=2, ppo=2)
    expected = saved_rollouts(monkeypatch)
    whole = run_recipe(write_recipe(tmp_path / "whole", body))
    expected = dict(expected)
    written = saved_rollouts(monkeypatch)
    recipe = write_recipe(tmp_path / "cut", body)
    original = ro.sample_row
    calls = {"rollout 2": 0}

    def crash_in_rollout_2(*args, seed, **kwargs):
        if seed in seeds_of_rollout_2:
            calls["rollout 2"] += 1
            if calls["rollout 2"] == 2:  # its second row: the first was drawn
                raise Crash
        return original(*args, seed=seed, **kwargs)

    seeds_of_rollout_2 = {ro.sample_seed(7, 2, row, 0, ro.STREAM) for row in range(6)}
    monkeypatch.setattr(ro, "sample_row", crash_in_rollout_2)
    with pytest.raises(Crash):
        run_recipe(recipe)
    monkeypatch.setattr(ro, "sample_row", original)
    resumed = run_recipe(recipe)
    assert comparable(metrics(resumed, "rl")) == comparable(metrics(whole, "rl"))
    assert written == expected and len(expected) == 3  # byte for byte, each rollout once


@pytest.mark.slow
def test_two_processes_draw_and_learn_what_one_does(tmp_path, tiny_pair):
    """Under ``torchrun --nproc 2`` (CPU, gloo) each process draws its share of the rows: the
    rollouts are the same (equal digests), and so are the steps, to float32 sums' order."""
    import json
    import subprocess
    import sys

    body = recipe_body(tiny_pair, steps=4, ppo=2)
    one = run_recipe(write_recipe(tmp_path / "one", body))
    recipe = write_recipe(tmp_path / "two", body)
    command = [sys.executable, "-m", "kdlang", "run", str(recipe), "--workdir", str(recipe.parent)]
    command += ["--device", "cpu", "--launcher", "torchrun", "--nproc", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = (recipe.parent / "runs").glob("*/report.json")
    two = json.loads(path.read_text(encoding="utf-8"))
    for a, b in zip(metrics(one, "rl"), metrics(two, "rl"), strict=True):
        assert a["rollout_digest"] == b["rollout_digest"] and a["tokens"] == b["tokens"]
        for key in ("reward", "return", "minillm", "lm", "loss", "clip_fraction"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
