"""Packed micro-batches against padded ones on a tiny Llama (fp32): the same per-token losses
and gradients for every loss path, attention kept within each packed row, token budgets, and
which models pack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kdlang.runtime.errors import RunError
from kdlang.runtime.train.examples import IGNORE, Example, Pair, collate, collate_pairs, encode
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective
from kdlang.runtime.train.packing import (
    micro_plan,
    pack,
    pack_pairs,
    packs_apart,
    padded_tokens,
    resolve_layout,
    row_sizes,
)

from tests.runtime.train.support import loss, train_node

pytestmark = pytest.mark.timeout(120)

ROWS = [
    ("Q: What is 12 plus 7?\nA:", " 12 + 7 = 19. #### 19"),
    ("Hi", " 5"),  # very short
    (
        "Write a short poem about the sea.",
        " The wind and the light of the morning. The quick brown fox jumps over the lazy dog,"
        " and summaries should be short, precise and faithful to the source text.",
    ),  # long
    ("Q: What is 30 minus 4?\nA:", " 30 - 4 = 26."),
]


@pytest.fixture(scope="module")
def setup(tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    examples = [
        Example(*encode(tokenizer, p, t, chat=True), row=i) for i, (p, t) in enumerate(ROWS)
    ]
    return tokenizer, student, teacher, examples


def with_topk(examples: list[Example], k: int = 4, seed: int = 0) -> list[Example]:
    """The examples with a random cached top-k; the last one covers only part of its target."""
    rng = np.random.default_rng(seed)
    out = []
    for n, e in enumerate(examples):
        rows = len(e.target) - (2 if n == len(examples) - 1 else 0)
        ids = np.stack([rng.choice(300, size=k, replace=False) for _ in range(rows)])
        lps = np.log(rng.dirichlet(np.ones(k), size=rows)).astype(np.float32)
        out.append(Example(e.prompt, e.target, ids.astype(np.int32), lps, row=e.row))
    return out


def counts(examples: list[Example], online: bool) -> dict[str, int]:
    tokens = sum(e.tokens for e in examples)
    cached = sum(min(e.tokens, e.topk_ids.shape[0]) for e in examples if e.topk_ids is not None)
    return {"tokens": tokens, "kd_tokens": tokens if online else cached, "pairs": 0}


def step_loss(objective, models, examples, groups, pad_id, online, packed):
    """Each line's step value and the gradients of the step loss over micro-batches ``groups``."""
    student = models.student
    student.zero_grad(set_to_none=True)
    settled = objective.at_step(0)
    total = counts(examples, online)
    parts: dict[str, float] = {}
    for group in groups:
        chosen = [examples[i] for i in group]
        if packed:
            batch = pack(chosen, pad_id, kd_everywhere=online)
        else:
            batch = collate(chosen, pad_id, kd_everywhere=online)
        value, micro = objective.micro_loss(models, settled, total, tokens=batch)
        value.backward()
        for key, part in micro.items():
            parts[key] = parts.get(key, 0.0) + float(part)
    grads = {name: p.grad.clone() for name, p in student.named_parameters() if p.grad is not None}
    return parts, grads


CASES = {
    "sft": ([loss("sft")], "online"),
    "forward_kl_online": ([loss("sft", 0.5), loss("forward_kl", temperature=2.0)], "online"),
    "topk_cache": ([loss("sft", 0.3), loss("forward_kl", temperature=1.5)], "cached"),
    "hidden_mse": ([loss("sft", 0.5), loss("hidden_mse", layers=[[2, 2]])], "online"),
}


@pytest.mark.parametrize("path", ["materialized", "fused_linear"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_step_equals_padded_step(setup, case, path):
    """One step over rows of very different lengths: packed (two micro-batches) equals padded
    (one micro-batch per row, and all rows at once) within 1e-5, every term and gradient."""
    if case == "hidden_mse" and path == "fused_linear":
        pytest.skip("the hidden-state loss reads no logits: one path")
    tokenizer, student, teacher, examples = setup
    losses, source = CASES[case]
    online = source == "online"
    if not online:
        examples = with_topk(examples)
    torch.manual_seed(0)
    objective = Objective(
        losses,
        total_steps=4,
        teacher=source,
        path=path,
        backend="torch",
        layers=(2, 2),
        widths=(32, 64),
    )
    models = Models(student, head(student), teacher if online else None, head(teacher))
    objective.projections.float()
    student.projections = objective.projections  # their gradients are compared too
    try:
        pad = tokenizer.pad_token_id
        args = (objective, models, examples)
        padded, g_padded = step_loss(*args, [[0, 1, 2, 3]], pad, online, packed=False)
        rows, g_rows = step_loss(*args, [[0], [1], [2], [3]], pad, online, packed=False)
        packed, g_packed = step_loss(*args, [[0, 2], [1, 3]], pad, online, packed=True)
    finally:
        del student.projections
    assert set(packed) == set(padded) == {line.key for line in objective.lines}
    for key in padded:
        assert packed[key] == pytest.approx(padded[key], rel=1e-5, abs=1e-7), key
        assert rows[key] == pytest.approx(padded[key], rel=1e-5, abs=1e-7), key
    assert set(g_packed) == set(g_padded)
    for name, grad in g_padded.items():
        torch.testing.assert_close(g_packed[name], grad, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(g_rows[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_packed_batch_holds_each_rows_targets(setup):
    """Labels, teacher positions and cached top-k of a packed row are each example's own,
    shifted by its offset; the position ending a sequence counts for nothing."""
    tokenizer, _, _, examples = setup
    cached = with_topk(examples)
    batch = pack(cached, tokenizer.pad_token_id, kd_everywhere=False)
    lengths = [len(e.prompt) + len(e.target) for e in cached]
    assert batch.input_ids.shape == (1, sum(lengths))
    assert batch.labels.shape == (1, sum(lengths) - 1)
    offset = 0
    for e, length in zip(cached, lengths, strict=True):
        alone = collate([e], tokenizer.pad_token_id, kd_everywhere=False)
        window = slice(offset, offset + length - 1)
        assert batch.input_ids[0, offset : offset + length].tolist() == e.prompt + e.target
        assert batch.position_ids[0, offset : offset + length].tolist() == list(range(length))
        assert torch.equal(batch.labels[0, window], alone.labels[0])
        assert torch.equal(batch.kd_labels[0, window], alone.kd_labels[0])
        assert torch.equal(batch.topk_ids[0, window], alone.topk_ids[0])
        assert torch.equal(batch.topk_logprobs[0, window], alone.topk_logprobs[0])
        if offset + length - 1 < batch.labels.shape[1]:
            assert batch.labels[0, offset + length - 1] == IGNORE  # predicts the next row
        offset += length
    # the last cached row covers two target tokens fewer: those have no teacher position
    assert int((batch.kd_labels != IGNORE).sum()) == sum(e.tokens for e in cached) - 2
    assert int((batch.labels != IGNORE).sum()) == sum(e.tokens for e in cached)


def test_no_attention_across_packed_rows(setup):
    """Changing one packed row's tokens leaves every other row's logits exactly as they were;
    each row's logits equal the row run alone."""
    tokenizer, student, _, examples = setup
    batch = pack(examples, tokenizer.pad_token_id)
    lengths = [len(e.prompt) + len(e.target) for e in examples]
    starts = np.cumsum([0, *lengths])
    with torch.no_grad():
        positions = {"position_ids": batch.position_ids, "use_cache": False}  # as `forward` does
        base = student(input_ids=batch.input_ids, **positions).logits[0]
        changed = batch.input_ids.clone()
        changed[0, starts[1] : starts[2]] = (changed[0, starts[1] : starts[2]] + 7) % 300
        other = student(input_ids=changed, **positions).logits[0]
        for n, e in enumerate(examples):
            ids = torch.tensor([e.prompt + e.target])
            alone = student(input_ids=ids).logits[0]
            torch.testing.assert_close(base[starts[n] : starts[n + 1]], alone, rtol=1e-5, atol=1e-5)
    for n in range(len(examples)):
        span = slice(starts[n], starts[n + 1])
        if n == 1:
            assert not torch.equal(base[span], other[span])
        else:
            assert torch.equal(base[span], other[span]), n


def test_packed_pairs_give_each_sequences_logprobs(setup):
    """``dpo`` on packed pairs: each response's summed log-probs equal the padded ones."""
    tokenizer, student, _, examples = setup
    pairs = [
        Pair(examples[0].prompt, examples[0].target, examples[3].target),
        Pair(examples[1].prompt, examples[2].target, examples[1].target),
    ]
    objective = Objective([loss("dpo", beta=0.2)], total_steps=1)
    padded = collate_pairs(pairs, tokenizer.pad_token_id)
    packed = pack_pairs(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        a = objective._pair_logprobs(student, padded)
        b = objective._pair_logprobs(student, packed)
    assert a.shape == b.shape == (4,)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


# -- micro-batches by a token budget ---------------------------------------------------------


def test_packed_plan_keeps_rows_whole_within_the_budget():
    sizes = [(30, 0), (5, 0), (70, 0), (12, 0), (40, 0), (140, 0)]
    groups = micro_plan(sizes, 100, packed=True, count=1)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    for group in groups:
        tokens = sum(sizes[i][0] for i in group)
        assert tokens <= 100 or len(group) == 1  # the 140-token row is alone
    assert [5] in groups
    # first fit, longest first: 140 | 70+30 | 40+12+5
    assert sorted(map(sorted, groups)) == [[0, 2], [1, 3, 4], [5]]


def test_padded_plan_counts_rows_times_the_longest():
    sizes = [(10, 0), (30, 0), (20, 0), (50, 0), (8, 0)]
    groups = micro_plan(sizes, 64, packed=False, count=1)
    assert groups == [[0, 1], [2], [3], [4]]  # 3 x 30 > 64; 2 x 50 > 64
    assert all(padded_tokens([sizes[i] for i in g]) <= 64 or len(g) == 1 for g in groups)
    assert padded_tokens([(10, 6), (4, 9)]) == 2 * (10 + 2 * 9)
    # without a budget: grad_accum's nearly equal parts
    assert micro_plan(sizes, None, packed=False, count=2) == [[0, 1, 2], [3, 4]]


def test_row_sizes_count_examples_and_pairs():
    examples = [Example([1, 2], [3, 4, 5]), Example([1], [2])]
    pairs = [Pair([1, 2], [3], [4, 5, 6]), Pair([1], [2, 3], [4])]
    assert row_sizes(examples, pairs, 2) == [(5, 5), (2, 3)]
    assert row_sizes(examples, [], 2) == [(5, 0), (2, 0)]


# -- which models pack -------------------------------------------------------------------------


def test_llama_packs_and_the_layout_follows_the_setting(setup):
    _, student, teacher, _ = setup
    assert packs_apart(student) is None
    on = train_node([loss("sft")], batch=8, grad_accum=2, packing=True)
    packed = resolve_layout(on, student, teacher)
    assert packed.packed and packed.budget == 4 * 512  # ceil(8 / 2) x max_length
    # auto packs only where attention takes packed rows as separate sequences (no N x N mask)
    auto = train_node([loss("sft")], batch=8, grad_accum=2)
    assert student.config._attn_implementation == "sdpa"
    assert not resolve_layout(auto, student, teacher).packed
    for model in (student, teacher):
        model.config._attn_implementation = "flex_attention"
    try:
        assert resolve_layout(auto, student, teacher) == packed.__class__(
            True, 4 * 512, "packing = auto: the models pack"
        )
    finally:
        for model in (student, teacher):
            model.config._attn_implementation = "sdpa"
    off = resolve_layout(train_node([loss("sft")], packing=False), student, None)
    assert not off.packed and off.budget is None
    budget = train_node([loss("sft")], packing=False, tokens_per_micro_batch=300)
    assert resolve_layout(budget, student, None) == type(off)(False, 300, "packing = false")


class _Mixing(torch.nn.Module):
    """A causal LM stand-in whose every position sees the whole row's mean: it attends across
    packed sequences."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(32, 4)
        self.config = None

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids, position_ids=None, use_cache=None):
        hidden = self.embed(input_ids)
        hidden = hidden + hidden.mean(dim=1, keepdim=True)
        return type("Out", (), {"logits": hidden})()


def test_a_model_attending_across_rows_does_not_pack(setup):
    _, student, _, _ = setup
    mixing = _Mixing()
    assert "attends across packed sequences" in packs_apart(mixing)
    layout = resolve_layout(train_node([loss("sft")]), student, mixing)
    assert not layout.packed and "online teacher" in layout.reason
    with pytest.raises(RunError, match="packing = true"):
        resolve_layout(train_node([loss("sft")], packing=True), mixing, None)


class _Absolute(_Mixing):
    """A stand-in that sees no other token but counts positions from the row's start (it
    ignores ``position_ids``)."""

    def forward(self, input_ids, position_ids=None, use_cache=None):
        hidden = self.embed(input_ids) + torch.arange(input_ids.shape[1])[None, :, None]
        return type("Out", (), {"logits": hidden})()


def test_a_model_ignoring_position_ids_does_not_pack():
    assert "does not restart positions" in packs_apart(_Absolute())


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_gpt2_and_llama_pack_under_each_attention(tiny_gpt2_dir, tiny_llama_dir, implementation):
    from transformers import AutoModelForCausalLM

    for folder in (tiny_gpt2_dir, tiny_llama_dir):
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=implementation)
        assert packs_apart(model) is None, folder
