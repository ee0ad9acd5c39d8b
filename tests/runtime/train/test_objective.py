"""The composed loss of a step against float64 formulas written here, at several steps of
schedules; the cached top-k path against the online one; the fused-linear path against the
materialized one."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.losses import DIVERGENCES
from kdlang.runtime.losses.reference import Divergence
from kdlang.runtime.train.examples import Example, collate, encode
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective

from kdlang.ir import losses as ls
from tests.runtime.train.support import SPAN, linear, loss

pytestmark = pytest.mark.timeout(120)

ROWS = [
    ("Q: What is 12 plus 7?\nA:", " 12 + 7 = 19. #### 19"),
    ("Q: What is 30 minus 4?\nA:", " 30 - 4 = 26."),
    ("Write a short poem about the sea.", " The wind and the light of the morning."),
]


@pytest.fixture(scope="module")
def setup(tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    examples = [
        Example(*encode(tokenizer, p, t, chat=True), row=i) for i, (p, t) in enumerate(ROWS)
    ]
    return tokenizer, student, teacher, examples


def models(student, teacher) -> Models:
    return Models(student, head(student), teacher, head(teacher) if teacher else None)


def counts(batch) -> dict[str, int]:
    return {"tokens": batch.tokens, "kd_tokens": int((batch.kd_labels != -100).sum()), "pairs": 0}


# -- float64 references --------------------------------------------------------------------


def reference(kind: str, zs, zt, mask, temperature=1.0, beta=0.5, alpha=0.1) -> torch.Tensor:
    """Mean over counted positions of the divergence (DESIGN.md), in float64."""
    ls = torch.log_softmax(zs.double() / temperature, -1)
    lt = torch.log_softmax(zt.double() / temperature, -1)
    ps, pt = ls.exp(), lt.exp()

    def kl(p, logp, logq):
        return (p * (logp - logq)).sum(-1)

    if kind == "forward_kl":
        per = kl(pt, lt, ls)
    elif kind == "reverse_kl":
        per = kl(ps, ls, lt)
    elif kind == "jsd":
        logm = torch.log(beta * pt + (1 - beta) * ps)
        per = beta * kl(pt, lt, logm) + (1 - beta) * kl(ps, ls, logm)
    elif kind == "tvd":
        per = 0.5 * (pt - ps).abs().sum(-1)
    elif kind == "skew_kl":
        per = kl(pt, lt, torch.log(alpha * pt + (1 - alpha) * ps))
    elif kind == "skew_rkl":
        per = kl(ps, ls, torch.log(alpha * ps + (1 - alpha) * pt))
    return per[mask].mean()


def cross_entropy(zs, labels) -> torch.Tensor:
    logp = torch.log_softmax(zs.double(), -1)
    mask = labels != -100
    return -logp[mask].gather(-1, labels[mask][:, None]).mean()


LOSSES = [
    loss("sft", 0.5),
    loss("forward_kl", linear(0.0, 1.0, over=10), temperature=2.0),
    loss("reverse_kl", 0.1),
    loss("jsd", 0.3, beta=linear(0.2, 0.8), temperature=linear(1.0, 3.0)),
    loss("tvd", linear(1.0, 0.2)),
    loss("skew_kl", 0.4, alpha=0.2),
    loss("skew_rkl", 0.6, alpha=0.3, temperature=1.5, temperature_scale=True),
]


@pytest.mark.parametrize("step", [0, 5, 10, 19])
def test_composed_loss_is_the_weighted_sum_of_references(setup, step):
    tokenizer, student, teacher, examples = setup
    total = 20
    objective = Objective(LOSSES, total_steps=total, teacher="online", backend="torch")
    batch = collate(examples, tokenizer.pad_token_id)
    settled = objective.at_step(step)
    values = settled.metrics()
    loss_value, parts = objective.micro_loss(
        models(student, teacher), settled, counts(batch), tokens=batch
    )

    with torch.no_grad():
        zs = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        zt = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    zs, zt, labels = zs[:, :-1], zt[:, :-1], batch.labels
    mask = labels != -100
    progress = step / total
    temperature_jsd = 1.0 + 2.0 * progress
    expected = {
        "sft": cross_entropy(zs, labels),
        "forward_kl": reference("forward_kl", zs, zt, mask, 2.0),
        "reverse_kl": reference("reverse_kl", zs, zt, mask),
        "jsd": reference("jsd", zs, zt, mask, temperature_jsd, beta=0.2 + 0.6 * progress),
        "tvd": reference("tvd", zs, zt, mask),
        "skew_kl": reference("skew_kl", zs, zt, mask, alpha=0.2),
        "skew_rkl": 1.5**2 * reference("skew_rkl", zs, zt, mask, 1.5, alpha=0.3),
    }
    weights = {
        "sft": 0.5,
        "forward_kl": min(1.0, step / 10),
        "reverse_kl": 0.1,
        "jsd": 0.3,
        "tvd": 1.0 - 0.8 * progress,
        "skew_kl": 0.4,
        "skew_rkl": 0.6,
    }
    for key, value in expected.items():
        assert float(parts[key]) == pytest.approx(float(value), rel=2e-5, abs=1e-7), key
        assert values[f"weight/{key}"] == pytest.approx(weights[key])
    composed = sum(weights[k] * expected[k] for k in expected)
    assert float(loss_value.detach()) == pytest.approx(float(composed), rel=2e-5)
    assert values["on_policy"] == 0.0


def topk_examples(setup, k, dtype=torch.float32):
    """The examples with the teacher's top-k rows on every target token."""
    _, _, teacher, examples = setup
    cached = []
    for example in examples:
        ids = torch.tensor([example.prompt + example.target])
        with torch.no_grad():
            logits = teacher(input_ids=ids).logits[0, len(example.prompt) - 1 : -1].float()
        values, indices = torch.log_softmax(logits, -1).topk(k, dim=-1)
        cached.append(
            Example(
                example.prompt,
                example.target,
                indices.int().numpy(),
                values.to(dtype).float().numpy(),
                example.row,
            )
        )
    return cached


@pytest.mark.parametrize("name", ["forward_kl", "jsd", "tvd", "skew_kl", "skew_rkl"])
def test_cached_topk_with_k_equal_to_v_matches_the_online_teacher(setup, name):
    tokenizer, student, teacher, examples = setup
    options = {"jsd": {"beta": 0.3}, "skew_kl": {"alpha": 0.2}, "skew_rkl": {"alpha": 0.2}}
    losses = [loss(name, 1.0, temperature=2.0, **options.get(name, {}))]
    online = Objective(losses, total_steps=4, teacher="online", backend="torch")
    cached = Objective(losses, total_steps=4, teacher="cached", backend="torch")
    vocab = head(teacher).out_features
    batch_online = collate(examples, tokenizer.pad_token_id)
    batch_cached = collate(topk_examples(setup, vocab), tokenizer.pad_token_id, kd_everywhere=False)
    assert torch.equal(batch_online.kd_labels, batch_cached.kd_labels)
    settled = online.at_step(0)
    a, _ = online.micro_loss(models(student, teacher), settled, counts(batch_online), batch_online)
    b, _ = cached.micro_loss(models(student, None), settled, counts(batch_cached), batch_cached)
    assert float(b.detach()) == pytest.approx(float(a.detach()), rel=1e-5)


def test_fused_linear_path_matches_materialized_values_and_gradients(setup):
    tokenizer, student, teacher, examples = setup
    losses = [loss("sft", 0.5), loss("forward_kl", 1.0, temperature=2.0), loss("jsd", 0.5)]
    batch = collate(examples, tokenizer.pad_token_id)
    results = []
    for path in ("materialized", "fused_linear"):
        objective = Objective(losses, total_steps=4, teacher="online", path=path, backend="torch")
        student.zero_grad()
        value, parts = objective.micro_loss(
            models(student, teacher), objective.at_step(1), counts(batch), batch
        )
        value.backward()
        grads = {n: p.grad.clone() for n, p in student.named_parameters()}
        results.append((value.detach(), parts, grads))
    (a, parts_a, grads_a), (b, parts_b, grads_b) = results
    assert float(b.detach()) == pytest.approx(float(a.detach()), rel=1e-5)
    for key in parts_a:
        assert float(parts_b[key]) == pytest.approx(float(parts_a[key]), rel=1e-5)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, rtol=1e-4, atol=1e-6)
    student.zero_grad()


def test_fused_linear_cached_topk_matches_materialized(setup):
    tokenizer, student, _, _ = setup
    cached = topk_examples(setup, 8)
    batch = collate(cached, tokenizer.pad_token_id, kd_everywhere=False)
    losses = [loss("forward_kl", 1.0, temperature=2.0), loss("sft", 1.0)]
    values = []
    for path in ("materialized", "fused_linear"):
        objective = Objective(losses, total_steps=4, teacher="cached", path=path, backend="torch")
        value, _ = objective.micro_loss(
            models(student, None), objective.at_step(0), counts(batch), batch
        )
        values.append(float(value.detach()))
    assert values[1] == pytest.approx(values[0], rel=1e-5)


@pytest.mark.parametrize("name", ["hidden_mse", "hidden_cosine"])
def test_hidden_terms_match_their_formulas(setup, name):
    tokenizer, student, teacher, examples = setup
    layers = [[1, 1], [2, -1]]
    objective = Objective(
        [loss(name, 1.0, layers=layers)],
        total_steps=4,
        teacher="online",
        layers=(2, 2),
        widths=(32, 64),
    )
    batch = collate(examples, tokenizer.pad_token_id)
    value, _ = objective.micro_loss(
        models(student, teacher), objective.at_step(0), counts(batch), batch
    )
    kwargs = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "output_hidden_states": True,
    }
    with torch.no_grad():
        hs = student(**kwargs).hidden_states
        ht = teacher(**kwargs).hidden_states
    mask = batch.labels != -100
    per_layer = []
    for number, (s, t) in enumerate([(1, 1), (2, 2)]):
        weight = objective.projections[f"{name}_{number}"].linear.weight.detach().double()
        a = hs[s][:, :-1][mask].double() @ weight.T
        b = ht[t][:, :-1][mask].double()
        if name == "hidden_mse":
            per = ((a - b) ** 2).mean(-1)
        else:
            per = 1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
        per_layer.append(per.mean())
    assert float(value.detach()) == pytest.approx(float(torch.stack(per_layer).mean()), rel=1e-5)


def test_metrics_are_written_from_the_settled_losses_under_the_recorded_names():
    losses = [
        loss("sft", 0.5),
        loss("forward_kl", linear(0.0, 1.0), temperature=2.0),
        loss("forward_kl", 0.2),
        loss("jsd", 0.3, beta=linear(0.2, 0.8)),
        loss("skew_rkl", 0.6, alpha=0.3),
        loss("hidden_cosine", 1.0, layers=[[1, 1]]),
        loss("dpo", 1.0, beta=0.2),
    ]
    objective = Objective(losses, total_steps=10, on_policy=linear(0.0, 0.5), layers=(2, 2))
    settled = objective.at_step(5)
    assert settled.metrics() == {
        "on_policy": pytest.approx(0.25),
        "weight/sft": 0.5,
        "weight/forward_kl": pytest.approx(0.5),
        "temperature/forward_kl": 2.0,
        "weight/forward_kl#2": 0.2,
        "temperature/forward_kl#2": 1.0,
        "weight/jsd": 0.3,
        "temperature/jsd": 1.0,
        "beta/jsd": pytest.approx(0.5),
        "weight/skew_rkl": 0.6,
        "temperature/skew_rkl": 1.0,
        "alpha/skew_rkl": 0.3,
        "weight/hidden_cosine": 1.0,
        "weight/dpo": 1.0,
        "beta/dpo": 0.2,
    }
    assert all(type(v) is float for v in settled.metrics().values())
    # the settled lines are the typed losses themselves, schedules read
    jsd = next(line.loss for line in settled.lines if line.key == "jsd")
    assert jsd.kernel_options() == {"beta": pytest.approx(0.5)}
    assert settled.weights["forward_kl"] == pytest.approx(0.5)


def test_on_policy_steps_keep_the_losses_that_count_on_them():
    objective = Objective([loss("sft"), loss("tvd"), loss("dpo")], total_steps=1)
    kept = [line.key for line in objective.lines if objective.applies(line, True)]
    assert kept == ["tvd"]
    assert all(objective.applies(line, False) for line in objective.lines)


class Hellinger(ls.DivergenceLoss):
    """A token-level divergence the runtime has never heard of: only its descriptor."""

    kernel_mode = "hellinger"


def hellinger(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1.0 - torch.exp((a + b) / 2).sum(-1)


def test_a_new_divergence_needs_only_its_descriptor_and_its_formula(setup, monkeypatch):
    tokenizer, student, teacher, examples = setup
    monkeypatch.setitem(DIVERGENCES, "hellinger", Divergence(hellinger))
    new = Hellinger(name="hellinger", weight=0.7, temperature=2.0, span=SPAN)
    objective = Objective([new], total_steps=4, teacher="online", backend="torch")
    batch = collate(examples, tokenizer.pad_token_id)
    settled = objective.at_step(0)
    value, parts = objective.micro_loss(models(student, teacher), settled, counts(batch), batch)
    with torch.no_grad():
        zs = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        zt = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    p = torch.softmax(zs[:, :-1].double() / 2.0, -1)
    q = torch.softmax(zt[:, :-1].double() / 2.0, -1)
    per = 0.5 * (p.sqrt() - q.sqrt()).pow(2).sum(-1)
    expected = per[batch.labels != -100].mean()
    assert float(parts["hellinger"]) == pytest.approx(float(expected), rel=2e-5)
    assert float(value.detach()) == pytest.approx(0.7 * float(expected), rel=2e-5)
    assert settled.metrics() == {
        "on_policy": 0.0,
        "weight/hellinger": 0.7,
        "temperature/hellinger": 2.0,
    }
