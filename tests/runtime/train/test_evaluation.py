"""Evaluation during training (``eval_data``, ``eval_every``): the dev loss a step records is
the train's objective on the dev rows with that step's weights (checked against a float64
recomputation), the records say they are evaluations, the picture and the model card show
them, a resumed run does not evaluate a step twice, and the settings' mistakes are codes."""

from __future__ import annotations

import json

import pytest
from kdlang.runtime.train.metrics import MetricsLog

from kdlang.check import check_files
from tests.runtime.train.support import artifact, metrics, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

DATA = """
dataset rows = inline([
  {q: "What is 12 plus 7?", a: "12 + 7 = 19. #### 19"},
  {q: "What is 30 minus 4?", a: "30 - 4 = 26. #### 26"},
  {q: "A farmer has 3 cows and buys 5 more. How many cows?", a: "3 + 5 = 8. #### 8"},
  {q: "Write a short poem about the sea.", a: "The wind and the light of the morning."},
])
dataset dev = inline([
  {q: "What is 2 plus 2?", a: "2 + 2 = 4. #### 4"},
  {q: "What is 9 minus 1?", a: "9 - 1 = 8. #### 8"},
  {q: "Name a color.", a: "Blue, like the sea."},
])
prompt ask = \"\"\"Q: {{ q }}
A:\"\"\"
"""
DEV = [
    ("What is 2 plus 2?", "2 + 2 = 4. #### 4"),
    ("What is 9 minus 1?", "9 - 1 = 8. #### 8"),
    ("Name a color.", "Blue, like the sea."),
]


def train_block(steps: int, every: int, extra: str = "") -> str:
    return f"""
train t {{
  student = student  teacher = teacher  data = rows  prompt = ask  target = a
  max_steps = {steps}  batch = 2  lr = 3e-3  eval_data = dev  eval_every = {every}  {extra}
  loss sft weight linear(1.0 -> 0.0)
  loss forward_kl weight 1.0 temperature 2.0
}}
"""


def float64_objective(student_dir, teacher_dir, weight_sft: float) -> dict[str, float]:
    """Σ w · (sum over every dev target token) / (dev target tokens), each row run alone
    (no padding) in float64: the sft mean and the forward KL at T = 2."""
    import torch
    from kdlang.runtime.train.examples import encode
    from kdlang.runtime.train.models import chat_enabled
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student_dir)
    chat = chat_enabled(tokenizer, "auto")
    student = AutoModelForCausalLM.from_pretrained(student_dir).double().eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).double().eval()
    ce = kl = 0.0
    count = 0
    for question, answer in DEV:
        prompt, target = encode(tokenizer, f"Q: {question}\nA:", answer, chat=chat)
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            zs = student(input_ids=ids).logits[0, len(prompt) - 1 : -1]
            zt = teacher(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        width = min(zs.shape[-1], zt.shape[-1])
        zs, zt = zs[:, :width], zt[:, :width]
        ce -= float(torch.log_softmax(zs, -1).gather(1, torch.tensor(target)[:, None]).sum())
        ls, lt = torch.log_softmax(zs / 2.0, -1), torch.log_softmax(zt / 2.0, -1)
        kl += float((lt.exp() * (lt - ls)).sum())
        count += len(target)
    sft, fkl = ce / count, kl / count
    return {"eval/sft": sft, "eval/forward_kl": fkl, "eval/loss": weight_sft * sft + fkl}


def test_the_dev_loss_is_the_objective_on_the_dev_rows_at_that_step(tmp_path, tiny_pair):
    # 3 steps, evaluated after the last: the trained student, the weights of step 2 of 3
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + train_block(3, 3)))
    records = metrics(report, "t")
    assert [sorted(k for k in r if k.startswith("eval/")) for r in records] == [[], [], [
        "eval/forward_kl", "eval/loss", "eval/sft"
    ]]  # fmt: skip
    weight_sft = 1.0 - 2 / 3  # linear(1.0 -> 0.0) at step 2 of 3
    assert records[2]["weight/sft"] == pytest.approx(weight_sft)
    expected = float64_objective(artifact(report, "t") / "model", tiny_pair.teacher, weight_sft)
    for key, value in expected.items():
        assert records[2][key] == pytest.approx(value, rel=2e-4), key


def test_evaluations_every_n_steps_and_at_the_end_appear_in_picture_and_card(tmp_path, tiny_pair):
    text = models(tiny_pair) + DATA + train_block(5, 2) + 'export t to "out/student"\n'
    report = run_recipe(write_recipe(tmp_path, text))
    records = metrics(report, "t")
    evaluated = [r["step"] for r in records if "eval/loss" in r]
    assert evaluated == [1, 3, 4]  # after steps 2 and 4, and after the last (5)
    assert all(r["eval/loss"] > 0 for r in records if "eval/loss" in r)
    assert (artifact(report, "t") / "loss_curves.png").stat().st_size > 0
    card = (tmp_path / "out" / "student" / "README.md").read_text(encoding="utf-8")
    assert "## Evaluation during training" in card
    last = records[4]
    assert f"| dev | 5 | eval/loss | {last['eval/loss']:.4f} |" in card
    values = {k: v for k, v in last.items() if k.startswith("eval/")}
    assert report["during_training"] == [{"train": "t", "step": 4, "values": values}]
    (markdown,) = (tmp_path / "runs").glob("*/report.md")
    assert f"| t | 5 | eval/sft | {last['eval/sft']:.4f} |" in markdown.read_text()


def test_the_picture_draws_the_dev_points_on_the_loss_panel(tmp_path):
    from kdlang.runtime.train import metrics as mt

    records = [
        {"step": s, "loss": 2.0 - 0.1 * s, "sft": 1.0, "lr": 1e-3, "weight/sft": 1.0}
        for s in range(6)
    ]
    records[2].update({"eval/loss": 1.5, "eval/sft": 1.2})
    records[5].update({"eval/loss": 1.1, "eval/sft": 0.9})
    drawn: list[tuple[list, list, str]] = []
    import matplotlib.axes

    plot = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):
        if kwargs.get("label", "").endswith(", dev"):
            drawn.append((list(args[0]), list(args[1]), kwargs["label"]))
        return plot(self, *args, **kwargs)

    matplotlib.axes.Axes.plot = spy
    try:
        mt.plot_curves(records, ["sft"], tmp_path / "curves.png")
    finally:
        matplotlib.axes.Axes.plot = plot
    assert drawn == [
        ([2, 5], [1.2, 0.9], "sft, dev"),
        ([2, 5], [1.5, 1.1], "total (weighted), dev"),
    ]
    moving, constant = mt.schedule_lines(records)
    assert moving == [] and constant == {"weight/sft": 1.0}  # eval/ keys are no schedule


class Crash(Exception):
    pass


def test_a_resumed_run_does_not_evaluate_a_step_twice(tmp_path, tiny_pair, monkeypatch):
    text = models(tiny_pair) + DATA + train_block(6, 2, "checkpoint_every = 2  log_every = 1")
    whole = metrics(run_recipe(write_recipe(tmp_path / "whole", text)), "t")
    recipe = write_recipe(tmp_path / "cut", text)
    extend = MetricsLog.extend

    def crash_after_step_4(self, records):  # step 3 (evaluated) is checkpointed, 4 is not
        extend(self, records)
        if any(r["step"] == 4 for r in records):
            raise Crash

    monkeypatch.setattr(MetricsLog, "extend", crash_after_step_4)
    with pytest.raises(Crash):
        run_recipe(recipe)
    monkeypatch.setattr(MetricsLog, "extend", extend)
    report = run_recipe(recipe)
    assert node(report, "t")["stats"]["resumed_from_step"] == 4
    lines = (artifact(report, "t") / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in lines]
    assert steps == list(range(6))
    resumed = metrics(report, "t")
    assert [r["step"] for r in resumed if "eval/loss" in r] == [1, 3, 5]
    for a, b in zip(resumed, whole, strict=True):  # the same trajectory and evaluations
        assert a.keys() == b.keys()
        for key in [k for k in a if k.startswith("eval/")] + ["loss"]:
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)


def check(tmp_path, body: str):
    diagnostics, _ = check_files([str(write_recipe(tmp_path, body))])
    return [(d.code, d.span.line, d.message) for d in diagnostics if d.severity.name == "ERROR"]


HEAD = """
model student = hf("Qwen/Qwen2.5-0.5B-Instruct")
model teacher = hf("Qwen/Qwen2.5-1.5B-Instruct")
dataset rows = inline([{q: "What is 2 + 3?", a: "5"}])
dataset dev = inline([{q: "What is 2 + 4?", a: "6"}])
dataset questions = inline([{q: "What is 2 + 5?"}])
prompt ask = "Q: {{ q }}"
"""


@pytest.mark.parametrize(
    ("settings", "code", "message"),
    [
        (
            "eval_every = 10",
            "KD0323",
            "`eval_every` evaluates on dev rows, but this train names none",
        ),
        (
            "eval_data = dev",
            "KD0324",
            "`eval_data` names dev rows, but nothing in this train evaluates on them",
        ),
        (
            "eval_data = questions  eval_every = 5",
            "KD0327",
            "the dev rows `questions` lack `a`, which the train reads",
        ),
        ("seq_kd = true", "KD0328", None),
        ("num_generations = 4", "KD0322", None),
        ("sample_batch = 4", "KD0322", None),
    ],
)
def test_evaluation_settings_mistakes_are_codes(tmp_path, settings, code, message):
    body = HEAD.replace('model teacher = hf("Qwen/Qwen2.5-1.5B-Instruct")\n', "")
    body += "train t {\n  student = student  data = rows  prompt = ask  target = a\n"
    body += f"  {settings}\n  loss sft weight 1.0\n}}\n"
    ((got, line, text),) = check(tmp_path, body)
    assert (got, line) == (code, 12)
    if message is not None:
        assert text == message


def test_dev_rows_with_the_train_columns_check_clean(tmp_path):
    body = HEAD + (
        "train t {\n  student = student  teacher = teacher  data = rows  prompt = ask  target = a\n"
        "  eval_data = dev  eval_every = 5  seq_kd = true  sample_temperature = 0.7\n"
        "  loss sft weight 1.0\n}\n"
    )
    assert check(tmp_path, body) == []


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_evaluate_and_replay_as_one(tmp_path, tiny_pair, strategy):
    """Under torchrun (Gloo, CPU) the dev rows are split over the ranks and the sums reduced;
    the adaptive schedule draws the same batches as in one process."""
    from tests.runtime.distributed.support import launch

    body = (
        models(tiny_pair)
        + DATA
        + train_block(
            4,
            2,
            f'strategy = "{strategy}"  max_new_tokens = 4\n'
            "  replay = adaptive(threshold = 0.9, capacity = 2, loss_eps = 0.0)",
        ).replace("loss sft weight linear(1.0 -> 0.0)", "loss sft weight 0.5")
    )
    single = metrics(run_recipe(write_recipe(tmp_path / "single", body)), "t")
    recipe = write_recipe(tmp_path / "multi", body)
    done = launch(recipe, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((recipe.parent / "runs" / "t" / "report.json").read_text())
    assert node(report, "t")["stats"]["processes"] == 2
    found = metrics(report, "t")
    assert [r["batch_source"] for r in found] == [r["batch_source"] for r in single]
    assert {r["batch_source"] for r in found} >= {"fresh", "replay"}
    for a, b in zip(found, single, strict=True):
        assert a.keys() == b.keys()
        for key in [k for k in a if k.startswith("eval/")] + ["loss"]:
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
