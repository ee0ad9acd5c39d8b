"""``reduction = batchmean | sequence_mean`` of a divergence in the step's loss, and
``infinite_logits = zero`` (torchtune's masking of infinite student logits).

The step is three rows of different lengths in two micro-batches (``grad_accum = 2``); its
value and gradient are compared with float64 formulas written here, on a float64 copy of the
student, for an online teacher and a cached top-k one, on the materialized and fused-linear
paths. Two processes give the single process's steps (``kdlang run --launcher torchrun``)."""

from __future__ import annotations

import ast
import copy
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from kdlang.runtime.distributed import Dist
from kdlang.runtime.losses.distill import distill_loss
from kdlang.runtime.train.examples import Example, collate, encode
from kdlang.runtime.train.loop import step_counts
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective
from kdlang.runtime.train.packing import pack
from kdlang.runtime.train.reductions import sequence_weights

from tests.runtime.distributed.support import launch
from tests.runtime.train.support import loss, metrics, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(120)

ROWS = [
    ("Q: What is 12 plus 7?\nA:", " 12 + 7 = 19. #### 19"),
    ("Q: 3 - 1?\nA:", " 2"),
    ("Write a short poem about the sea.", " The wind and the light of the morning, again."),
]
T = 2.0
K = 4
MICROS = [[0, 1], [2]]  # grad_accum = 2 over three rows


@pytest.fixture(scope="module")
def setup(tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    online, cached = [], []
    for i, (prompt, target) in enumerate(ROWS):
        example = Example(*encode(tokenizer, prompt, target, chat=True), row=i)
        online.append(example)
        ids = torch.tensor([example.prompt + example.target])
        with torch.no_grad():
            logits = teacher(input_ids=ids).logits[0, len(example.prompt) - 1 : -1]
        values, indices = torch.log_softmax(logits.float(), -1).topk(K, dim=-1)
        keep = len(example.target) - i  # the cache covers a prefix of some targets
        cached.append(
            Example(
                example.prompt,
                example.target,
                indices[:keep].int().numpy(),
                values[:keep].numpy(),
                i,
            )
        )
    return tokenizer, student, teacher, online, cached


def row_divergences(student64, teacher, example: Example, cached: bool) -> torch.Tensor:
    """Forward KL at T of each teacher position of one row, float64, the student's graph kept."""
    ids = torch.tensor([example.prompt + example.target])
    start = len(example.prompt) - 1
    zs = student64(input_ids=ids).logits[0, start:-1] / T
    log_s = torch.log_softmax(zs, -1)
    if cached:
        n = example.topk_ids.shape[0]
        top = torch.from_numpy(example.topk_ids).long()
        log_t = torch.log_softmax(torch.from_numpy(example.topk_logprobs).double() / T, -1)
        return (log_t.exp() * (log_t - log_s[:n].gather(-1, top))).sum(-1)
    with torch.no_grad():
        zt = teacher(input_ids=ids).logits[0, start:-1].double() / T
    log_t = torch.log_softmax(zt, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def reference(reduction: str, per_row: list[torch.Tensor]) -> torch.Tensor:
    if reduction == "batchmean":  # the step's sum over its sequences
        return torch.cat(per_row).sum() / len(per_row)
    return torch.stack([row.mean() for row in per_row]).mean()  # sequence_mean


def step(objective, student, teacher, examples, online: bool, pad: int):
    """The step's loss, summed over its micro-batches (and its gradient accumulated)."""
    counts = step_counts(examples, [], online, Dist(), torch.device("cpu"))
    settled = objective.at_step(0)
    both = Models(student, head(student), teacher, head(teacher) if teacher else None)
    total = 0.0
    student.zero_grad()
    for micro in MICROS:
        batch = collate([examples[i] for i in micro], pad, kd_everywhere=online)
        value, _ = objective.micro_loss(both, settled, counts, batch)
        value.backward()
        total += float(value.detach())
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    return total, grads


@pytest.mark.parametrize("reduction", ["batchmean", "sequence_mean"])
@pytest.mark.parametrize("teacher_kind", ["online", "cached"])
@pytest.mark.parametrize("path", ["materialized", "fused_linear"])
def test_step_value_and_gradient_under_accumulation(setup, reduction, teacher_kind, path):
    tokenizer, student, teacher, online_rows, cached_rows = setup
    online = teacher_kind == "online"
    examples = online_rows if online else cached_rows
    student64 = copy.deepcopy(student).double()
    per_row = [row_divergences(student64, teacher, e, not online) for e in examples]
    assert len({len(r) for r in per_row}) == 3  # three different lengths
    expected = reference(reduction, per_row)
    expected.backward()
    objective = Objective(
        [loss("forward_kl", 1.0, temperature=T, reduction=reduction)],
        total_steps=1,
        teacher=teacher_kind,
        path=path,
        backend="torch",
    )
    value, grads = step(
        objective, student, teacher if online else None, examples, online, tokenizer.pad_token_id
    )
    assert value == pytest.approx(float(expected.detach()), rel=1e-5)
    for name, param in student64.named_parameters():  # float32 against float64: 1e-4 of the max
        error = (grads[name].double() - param.grad).abs().max()
        assert float(error) <= 1e-4 * float(param.grad.abs().max()), name
    student.zero_grad()


def test_the_reductions_differ_from_token_mean_here(setup):
    """The three denominators give three values on rows of different lengths."""
    tokenizer, student, teacher, examples, _ = setup
    values = []
    for reduction in ("token_mean", "batchmean", "sequence_mean"):
        objective = Objective(
            [loss("forward_kl", 1.0, reduction=reduction)],
            total_steps=1,
            teacher="online",
            backend="torch",
        )
        values.append(step(objective, student, teacher, examples, True, tokenizer.pad_token_id)[0])
    assert len({round(v, 6) for v in values}) == 3


def test_packed_rows_weigh_each_sequence_by_its_own_count(setup):
    """A packed row holds the three sequences; each teacher position weighs 1 / its sequence's
    teacher positions, and the step's value is the padded one."""
    tokenizer, student, _, _, examples = setup
    packed = pack(examples, tokenizer.pad_token_id, kd_everywhere=False)
    weights = sequence_weights(packed)
    counted = packed.kd_labels != -100
    assert float(weights.sum()) == pytest.approx(3.0)
    lengths = sorted({round(1 / float(w)) for w in weights[counted]})
    assert lengths == sorted(e.topk_ids.shape[0] for e in examples)
    padded = collate(examples, tokenizer.pad_token_id, kd_everywhere=False)
    counts = step_counts(examples, [], False, Dist(), torch.device("cpu"))
    objective = Objective(
        [loss("forward_kl", 1.0, temperature=T, reduction="sequence_mean")],
        total_steps=1,
        teacher="cached",
        backend="torch",
    )
    both = Models(student, head(student))
    a, _ = objective.micro_loss(both, objective.at_step(0), counts, padded)
    b, _ = objective.micro_loss(both, objective.at_step(0), counts, packed)
    assert float(b.detach()) == pytest.approx(float(a.detach()), rel=1e-5)


KERNELS = """
import torch
from kdlang.runtime.losses.distill import distill_loss
from kdlang.runtime.losses.fused_linear import fused_linear_distill_loss
torch.manual_seed(0)
z, t = torch.randn(2, 5, 16), torch.randn(2, 5, 16)
labels = torch.tensor([[1, 2, -100, 3, 4], [5, -100, -100, 6, -100]])
w = torch.rand(2, 5)
ids = torch.stack([torch.randperm(16)[:4] for _ in range(10)]).view(2, 5, 4)
lps = torch.log_softmax(torch.randn(2, 5, 4), -1)
hs, ws, ht, wt = torch.randn(2, 5, 8), torch.randn(16, 8), torch.randn(2, 5, 8), torch.randn(16, 8)
def both(fn, *args, **kw):
    kw.update(labels=labels, reduction="sum")
    a = fn(*args, position_weights=w, backend="triton", **kw)
    b = fn(*[x.double() if isinstance(x, torch.Tensor) else x for x in args],
           position_weights=w.double(), backend="torch", **kw)
    return float(a), float(b)
print(both(distill_loss, z, t, "jsd", beta=0.3))
print(both(distill_loss, z, None, "forward_kl", teacher_topk=(ids, lps)))
print(both(fused_linear_distill_loss, hs, ws, ht, wt, "forward_kl"))
"""


def test_the_kernels_weigh_positions_as_the_torch_path(tmp_path):
    """Under ``sequence_mean`` the Triton kernels (interpreted on CPU) give per-position values
    that the weights then sum: dense, top-k and fused-linear, against the float64 torch path."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KERNELS], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    pairs = [ast.literal_eval(line) for line in done.stdout.splitlines()]
    assert len(pairs) == 3
    for triton_value, torch_value in pairs:
        assert triton_value == pytest.approx(torch_value, rel=1e-5)


# -- infinite student logits (torchtune's ForwardKLLoss) --------------------------------------


def torchtune_forward_kl(student, teacher, labels) -> torch.Tensor:
    """torchtune's ForwardKLLoss, written out in float64: −Σ p_T log p_S with the products at
    infinite student logits set to 0, averaged over counted positions (its value adds the
    teacher's entropy: kdlang's teacher_ce)."""
    p_t = torch.softmax(teacher.double(), -1)
    log_s = torch.log_softmax(student.double(), -1)
    prod = torch.masked_fill(p_t * log_s, torch.isinf(student), 0.0)
    x = prod.sum(-1)
    mask = (labels != -100).double()
    return -(x * mask).sum() / mask.sum()


def masked_logits():
    torch.manual_seed(3)
    student = torch.randn(2, 3, 11, dtype=torch.float64)
    student[..., 4] = -math.inf  # a vocabulary entry the student masks
    student[1, 0, 7] = -math.inf
    teacher = torch.randn(2, 3, 11, dtype=torch.float64)  # with mass on those entries
    labels = torch.tensor([[1, 2, -100], [3, 4, 5]])
    return student, teacher, labels


def test_infinite_logits_keep_is_infinite_where_the_teacher_has_mass():
    student, teacher, labels = masked_logits()
    for kind in ("forward_kl", "teacher_ce"):
        value = distill_loss(student, teacher, kind, labels=labels, backend="torch")
        assert math.isinf(float(value))


def test_infinite_logits_zero_is_torchtunes_forward_kl():
    student, teacher, labels = masked_logits()
    z = student.clone().requires_grad_()
    value = distill_loss(z, teacher, "teacher_ce", labels=labels, infinite_logits="zero")
    value.backward()
    z_ref = student.clone().requires_grad_()
    expected = torchtune_forward_kl(z_ref, teacher, labels)
    expected.backward()
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-10)
    grad = torch.nan_to_num(z.grad)
    torch.testing.assert_close(grad, torch.nan_to_num(z_ref.grad), rtol=1e-9, atol=1e-12)
    assert torch.isfinite(z.grad).all()
    # forward_kl is the same sum less the teacher's (unmasked) mass times its log-probs
    fkl = distill_loss(student, teacher, "forward_kl", labels=labels, infinite_logits="zero")
    log_t = torch.log_softmax(teacher, -1)
    kept = torch.where(torch.isinf(student), 0.0, log_t.exp() * log_t).sum(-1)
    counted = labels != -100
    assert float(fkl) == pytest.approx(float(expected.detach() + kept[counted].mean()), rel=1e-10)


def test_infinite_logits_zero_against_a_topk_teacher():
    """The cached teacher's kept mass on an id the student masks is dropped, not renormalized."""
    student, _, labels = masked_logits()
    ids = torch.tensor([[0, 4, 9]]).expand(2, 3, 3).contiguous()
    lps = torch.log(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)).expand(2, 3, 3)
    value = distill_loss(
        student, None, "forward_kl", labels=labels, teacher_topk=(ids, lps), infinite_logits="zero"
    )
    log_s = torch.log_softmax(student, -1)
    p = torch.tensor([0.5, 0.2], dtype=torch.float64)  # ids 0 and 9; id 4 is masked
    per = (p * (p.log() - log_s[..., [0, 9]])).sum(-1)
    assert float(value) == pytest.approx(float(per[labels != -100].mean()), rel=1e-10)


class Masking(torch.nn.Module):
    """A student whose model masks one vocabulary entry: its logit there is −inf."""

    def __init__(self, model, entry: int):
        super().__init__()
        self.model, self.entry = model, entry

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits.clone()
        out.logits[..., self.entry] = -math.inf
        return out


def test_infinite_logits_in_the_step_loss(setup):
    """``loss teacher_ce(infinite_logits = zero)`` with an online teacher: torchtune's value on
    the masked student's logits; ``keep`` is infinite there."""
    tokenizer, student, teacher, examples, _ = setup
    masked = Masking(student, 7)
    batch = collate(examples, tokenizer.pad_token_id)
    counts = step_counts(examples, [], True, Dist(), torch.device("cpu"))
    both = Models(masked, head(student), teacher, head(teacher))
    values = {}
    for setting in ("keep", "zero"):
        objective = Objective(
            [loss("teacher_ce", 1.0, infinite_logits=setting)], total_steps=1, teacher="online"
        )
        value, _ = objective.micro_loss(both, objective.at_step(0), counts, batch)
        values[setting] = float(value.detach())
    with torch.no_grad():
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        zs = masked(**kwargs).logits[:, :-1]
        zt = teacher(**kwargs).logits[:, :-1]
    assert math.isinf(values["keep"])
    assert values["zero"] == pytest.approx(float(torchtune_forward_kl(zs, zt, batch.kd_labels)))


def test_infinite_logits_zero_is_refused_on_the_triton_backend():
    student, teacher, labels = masked_logits()
    with pytest.raises(ValueError, match="torch backend"):
        distill_loss(
            student.float(),
            teacher.float(),
            labels=labels,
            infinite_logits="zero",
            backend="triton",
        )


# -- several processes --------------------------------------------------------------------

BODY = """
dataset qs = inline([
  {q: "What is 2 + 3?", a: "5"},
  {q: "What is 7 times 6?", a: "42, since 7 times 6 is 42"},
  {q: "What is 1 + 1?", a: "2"},
  {q: "Write a short poem about the sea.", a: "The wind and the light."},
])
prompt ask = "Q: {{ q }}\\nA:"
train distill {
  student = student  teacher = teacher  data = qs  prompt = ask  target = a
  max_steps = 2  batch = 4  grad_accum = 2  lr = 1e-3
  loss forward_kl(reduction = sequence_mean) weight 1.0 temperature 2.0
  loss jsd(beta = 0.5, reduction = batchmean) weight 0.5
}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_match_one(tmp_path, tiny_pair):
    single = run_recipe(write_recipe(tmp_path / "single", models(tiny_pair) + BODY))
    recipe = write_recipe(tmp_path / "multi", models(tiny_pair) + BODY)
    done = launch(recipe, 2)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((recipe.parent / "runs" / "t" / "report.json").read_text())
    assert node(report, "distill")["stats"]["processes"] == 2
    for a, b in zip(metrics(report, "distill"), metrics(single, "distill"), strict=True):
        for key in ("loss", "forward_kl", "jsd", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), (a["step"], key)
