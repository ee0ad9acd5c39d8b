"""DPO's step records as TRL logs them (``rewards/chosen``, ``rewards/rejected``,
``rewards/margins``, ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected``): against a
float64 computation on a tiny model's pairs, split over two micro-batches; outside the loss;
the same whatever the split in a run."""

from __future__ import annotations

import copy

import pytest
import torch
from kdlang.runtime.distributed import Dist
from kdlang.runtime.train import dpo_metrics
from kdlang.runtime.train.examples import Pair, collate_pairs
from kdlang.runtime.train.loop import step_counts
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective

from tests.runtime.train.support import loss, metrics, models, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(120)

PAIRS = [
    ("Q: What is 12 plus 7?\nA:", " 19", " 21, I think"),
    ("Q: How many cows?\nA:", " 8 cows in the field.", " I do not know."),
    ("Say hello.", " Hello!", " No."),
]
BETA = 0.5
MICROS = [[0, 1], [2]]


@pytest.fixture(scope="module")
def setup(tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    other = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    encode = tokenizer.encode
    pairs = [Pair(encode(p), encode(c), encode(r), i) for i, (p, c, r) in enumerate(PAIRS)]
    return tokenizer, student, other, pairs


def response_logprob(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    """Σ log p(response tokens | prompt and the tokens before), in the model's dtype."""
    ids = torch.tensor([prompt + response])
    logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
    targets = ids[0, 1:]
    start = len(prompt) - 1
    return logp[start:].gather(-1, targets[start:, None]).sum()


def test_the_records_match_float64_and_stay_out_of_the_loss(setup):
    tokenizer, student, other, pairs = setup
    with torch.no_grad():  # the reference policy: another model, so the rewards are not 0
        reference = torch.tensor(
            [
                [float(response_logprob(other, p.prompt, r)) for r in (p.chosen, p.rejected)]
                for p in pairs
            ]
        )
    student64 = copy.deepcopy(student).double()
    with torch.no_grad():
        policy = torch.tensor(
            [
                [float(response_logprob(student64, p.prompt, r)) for r in (p.chosen, p.rejected)]
                for p in pairs
            ],
            dtype=torch.float64,
        )
    ref = reference.double()
    chosen = BETA * (policy[:, 0] - ref[:, 0])
    rejected = BETA * (policy[:, 1] - ref[:, 1])
    expected = {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(),
        "rewards/accuracies": (chosen > rejected).double().mean(),
        "logps/chosen": policy[:, 0].mean(),
        "logps/rejected": policy[:, 1].mean(),
    }
    assert 0.0 < float(expected["rewards/accuracies"]) < 1.0  # a mix, on these pairs
    dpo_loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()

    objective = Objective([loss("dpo", 1.0, beta=BETA)], total_steps=1)
    counts = step_counts([], pairs, False, Dist(), torch.device("cpu"))
    settled = objective.at_step(0)
    both = Models(student, head(student))
    found = dpo_metrics.empty(objective, False)
    assert sorted(found) == sorted(expected)
    totals = []
    for with_metrics in (True, False):
        total = 0.0
        for micro in MICROS:
            batch = collate_pairs([pairs[i] for i in micro], tokenizer.pad_token_id)
            picked = reference[micro]
            value, parts = objective.micro_loss(
                both,
                settled,
                counts,
                pairs=batch,
                reference=torch.cat([picked[:, 0], picked[:, 1]]),
                metrics=found if with_metrics else None,
            )
            assert set(parts) == {"dpo"}
            total += float(value.detach())
        totals.append(total)
    assert totals[0] == totals[1]  # the records change nothing of the loss
    assert totals[0] == pytest.approx(float(dpo_loss), rel=1e-5)
    for name, value in expected.items():
        assert float(found[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-7), name


def test_no_records_on_an_on_policy_step_and_named_by_line():
    objective = Objective(
        [loss("dpo", 1.0), loss("sft", 1.0), loss("dpo", 0.5, beta=0.2)], total_steps=1
    )
    assert dpo_metrics.empty(objective, True) == {}
    names = sorted(dpo_metrics.empty(objective, False))
    assert "rewards/margins" in names and "rewards/margins/dpo#2" in names
    assert len(names) == 12


BODY = """
dataset prefs = inline([
  {q: "What is 12 plus 7?", chosen: "19", rejected: "21"},
  {q: "What is 30 minus 4?", chosen: "26", rejected: "34, or so"},
  {q: "How many cows?", chosen: "8 cows.", rejected: "I do not know."},
  {q: "Say hello.", chosen: "Hello!", rejected: "No."},
])
prompt ask = "Q: {{ q }}\\nA:"
train prefer {
  student = student  data = prefs  prompt = ask  max_steps = 12  batch = 4  lr = 3e-3
  grad_accum = ACCUM
  loss dpo(beta = 0.5) weight 1.0
}
"""


def test_a_run_records_them_whatever_the_micro_batches(tmp_path, tiny_pair):
    runs = []
    for accum in (1, 2):
        body = BODY.replace("ACCUM", str(accum))
        report = run_recipe(write_recipe(tmp_path / str(accum), models(tiny_pair) + body))
        runs.append(metrics(report, "prefer"))
    one, two = runs
    first = one[0]  # the policy is its reference before the first update (float32 apart)
    assert first["rewards/chosen"] == pytest.approx(0.0, abs=1e-4)
    assert first["rewards/rejected"] == pytest.approx(0.0, abs=1e-4)
    assert first["logps/chosen"] < 0 and first["logps/rejected"] < 0
    for a, b in zip(one, two, strict=True):
        for name in dpo_metrics.NAMES:
            assert b[name] == pytest.approx(a[name], rel=1e-4, abs=1e-6), (a["step"], name)
        margin = a["rewards/chosen"] - a["rewards/rejected"]
        assert a["rewards/margins"] == pytest.approx(margin, abs=1e-9)
        # the loss is DPO's alone: −log σ(margin) of each pair, not the records
        assert a["loss"] == pytest.approx(a["dpo"])
    last = one[-1]
    assert last["rewards/margins"] > 0 and last["rewards/accuracies"] == 1.0
    assert last["logps/chosen"] > first["logps/chosen"]
