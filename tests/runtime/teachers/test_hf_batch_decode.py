"""Batched greedy decoding against the same rows decoded alone.

A row of a left-padded batch must decode the tokens it decodes on its own: left padding, the
position ids and the attention mask may change its logits only by floating-point rounding (a
matmul of another shape reduces in another order), never by what the row attends to or where
its positions start. The tests decode prompts of very different lengths (1 to 40 tokens, so the
shortest row is mostly padding) in one batch and one by one, greedily, on both tiny
architectures (GPT-2's learned absolute positions catch a position-id bug; Llama's rotary
positions are shift-invariant, so there the mask is what is tested), and compare step by step:
the top-2 log-probs agree to rounding, and the chosen tokens are the same.

The one legitimate difference is a genuine near-tie: where the two best log-probs are closer
than rounding can move them, either token is a correct greedy choice, and the two runs may
continue differently from there. Such a step ends the comparison of that row; a different
token where the margin is wide is a bug.
"""

from __future__ import annotations

import pytest
from kdlang.runtime.teachers.hf import HFTeacher
from kdlang.runtime.teachers.hf_decode import SequenceSpec, decode_batch

from tests.fixtures.tiny_models import CORPUS

LENGTHS = [1, 2, 5, 11, 23, 40]
MAX_TOKENS = 16
# The tiny models' log-probs reach -30. Float32 rounding (relative 6e-8 per operation, a few
# dozen operations deep) moves them by a few 1e-5: at most 5e-5 measured over these prompts on
# both architectures. Attending to a pad token or a shifted position moves them by 1e-1 or
# more. 1e-3 is 20x the rounding seen and 100x below a bug.
LOGPROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def teacher(request) -> HFTeacher:
    path = request.getfixturevalue(f"tiny_{request.param}_dir")
    return HFTeacher(path, batch_size=len(LENGTHS), device="cpu", dtype="float32")


def prompts_of(teacher: HFTeacher) -> list[list[int]]:
    """Prompts of ``LENGTHS`` tokens, each a different stretch of the tiny corpus."""
    text = " ".join(CORPUS)
    ids = teacher.tokenizer(text, add_special_tokens=False)["input_ids"]
    prompts = [ids[7 * i : 7 * i + n] for i, n in enumerate(LENGTHS)]
    assert [len(p) for p in prompts] == LENGTHS
    return prompts


def specs_of(prompts: list[list[int]], max_tokens: list[int]) -> list[SequenceSpec]:
    return [
        SequenceSpec(prompt_ids=p, seed=0, temperature=0.0, top_p=1.0, max_tokens=m, top_logprobs=2)
        for p, m in zip(prompts, max_tokens, strict=True)
    ]


def decode(teacher: HFTeacher, specs: list[SequenceSpec]):
    return decode_batch(
        teacher.model, teacher.tokenizer, specs, eos_ids=teacher.eos_ids, pad_id=teacher.pad_id
    )


def assert_same_decoding(batched, alone) -> None:
    for row, (b, a) in enumerate(zip(batched, alone, strict=True)):
        b_top, a_top = b.logprobs.logprobs, a.logprobs.logprobs  # [steps, 2], sorted
        b_tokens, a_tokens = b.logprobs.target_ids.tolist(), a.logprobs.target_ids.tolist()
        for step in range(min(len(b_tokens), len(a_tokens))):
            drift = (b_top[step] - a_top[step]).abs().max().item()
            assert drift <= LOGPROB_TOLERANCE, f"row {row} step {step}: log-probs moved {drift}"
            if b_tokens[step] != a_tokens[step]:
                margin = (a_top[step, 0] - a_top[step, 1]).item()
                assert margin <= 2 * LOGPROB_TOLERANCE, (
                    f"row {row} step {step}: a different token with a top-2 margin of {margin}"
                )
                break  # a genuine near-tie: both continuations are right
        else:
            assert b_tokens == a_tokens, f"row {row}"
            assert (b.text, b.finish_reason) == (a.text, a.finish_reason), f"row {row}"


def test_each_row_of_a_left_padded_batch_decodes_as_it_does_alone(teacher):
    specs = specs_of(prompts_of(teacher), [MAX_TOKENS] * len(LENGTHS))
    batched = decode(teacher, specs)
    alone = [decode(teacher, [spec])[0] for spec in specs]
    assert all(g.completion_tokens >= 1 for g in batched)
    assert_same_decoding(batched, alone)


def test_rows_that_finish_early_leave_the_others_unchanged(teacher):
    # Rows that stop after 1 or 3 tokens keep being fed pad tokens while the rest decode on.
    budgets = [1, MAX_TOKENS, 3, MAX_TOKENS, 1, MAX_TOKENS]
    specs = specs_of(prompts_of(teacher), budgets)
    batched = decode(teacher, specs)
    alone = [decode(teacher, [spec])[0] for spec in specs]
    assert all(g.completion_tokens <= m for g, m in zip(batched, budgets, strict=True))
    assert_same_decoding(batched, alone)


def test_batch_order_does_not_change_a_row(teacher):
    specs = specs_of(prompts_of(teacher), [MAX_TOKENS] * len(LENGTHS))
    forward = decode(teacher, specs)
    backward = decode(teacher, specs[::-1])[::-1]
    assert_same_decoding(forward, backward)
