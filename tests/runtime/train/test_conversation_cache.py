"""A train learning a conversation from the top-k a ``teacher_logits`` stage cached: the stage
scores exactly the tokens the student learns (written out by hand from the ChatML pieces), its
log-probs are the teacher's (float64), and the train's first KD loss equals one computed by
hand on those positions. A student whose rendering differs from the cache's tokens stops."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from kdlang.runtime.train.conversation import ConversationError, cached_example

from tests.runtime.train.support import artifact, metrics, models, node, run_recipe, write_recipe
from tests.runtime.train.test_conversation_mask import chatml_pieces, pieces_to_mask

pytestmark = pytest.mark.timeout(300)

CHATS = [
    [
        {"role": "user", "content": "What is 12 plus 7?"},
        {"role": "assistant", "content": "12 + 7 = 19. #### 19"},
        {"role": "user", "content": "And 30 minus 4?"},
        {"role": "assistant", "content": "30 - 4 = 26. #### 26"},
    ],
    [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write a short poem about the sea."},
        {"role": "assistant", "content": "The wind and the light of the morning."},
    ],
]
K = 5


def table(folder) -> pa.Table:
    with pa.memory_map(str(folder / "data.arrow")) as source:
        return pa.ipc.open_stream(source).read_all()


def recipe(tmp_path, pair, stage_on: str = "assistant", train_on: str = "assistant"):
    data = json.dumps([{"id": i, "chat": chat} for i, chat in enumerate(CHATS)])
    body = (
        f"dataset chats = inline({data}) {{ messages = chat }}\n"
        f"stage soft = teacher_logits(chats) {{ teacher = teacher  target = chat  top_k = {K}\n"
        f"  train_on = {stage_on} }}\n"
        "train distill {\n  student = student  data = soft  target = chat  max_steps = 3\n"
        f"  batch = 2  lr = 3e-3  train_on = {train_on}\n  loss forward_kl weight 1.0\n}}\n"
    )
    return write_recipe(tmp_path, models(pair) + body)


def hand_positions(tokenizer, turns, last_only=False) -> tuple[list[int], list[int]]:
    """The ids of the ChatML rendering and the positions of the learned tokens, by hand."""
    pieces = chatml_pieces(turns)
    if last_only:  # only the last assistant piece is learned
        last = max(i for i, (_, learned) in enumerate(pieces) if learned)
        pieces = [(text, learned and i == last) for i, (text, learned) in enumerate(pieces)]
    ids, flags = pieces_to_mask(tokenizer, pieces)
    return ids, [t for t, flag in enumerate(flags) if flag]


def test_the_cache_holds_the_teachers_top_k_on_the_learned_positions(tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    report = run_recipe(recipe(tmp_path, tiny_pair))
    soft = table(artifact(report, "soft"))
    assert soft.column("id").to_pylist() == [0, 1]
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).double().eval()
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).double().eval()
    kl_terms = []
    for row, turns in enumerate(CHATS):
        ids, positions = hand_positions(tokenizer, turns)
        cached_targets = soft.column("topk_target_ids")[row].as_py()
        assert cached_targets == [ids[p] for p in positions]  # the assistant tokens, in order
        with torch.no_grad():
            zt = teacher(input_ids=torch.tensor([ids])).logits[0]
            zs = student(input_ids=torch.tensor([ids])).logits[0]
        before = torch.tensor(positions) - 1
        lt = torch.log_softmax(zt[before], -1)
        want_lps, want_ids = lt.topk(K, -1)
        got_ids = np.array(soft.column("topk_ids")[row].as_py())
        got_lps = np.array(soft.column("topk_logprobs")[row].as_py(), np.float64)
        np.testing.assert_array_equal(got_ids, want_ids.numpy())
        np.testing.assert_allclose(got_lps, want_lps.numpy(), atol=4e-3)
        # forward KL against the cached top-k (renormalised over its k ids), by hand
        ls = torch.log_softmax(zs[before], -1)
        p_t = torch.softmax(torch.tensor(got_lps), -1)
        ls_k = ls.gather(-1, torch.tensor(got_ids, dtype=torch.long))
        kl_terms.append((p_t * (torch.log(p_t) - ls_k)).sum(-1))
    stats = node(report, "distill")["stats"]
    expected = torch.cat(kl_terms)
    assert stats["target_tokens"] == len(expected)
    first = metrics(report, "distill")[0]
    assert first["tokens"] == len(expected)
    assert first["forward_kl"] == pytest.approx(float(expected.mean()), rel=1e-4)
    assert node(report, "soft")["stats"]["target_tokens"] == len(expected)


def test_a_last_assistant_train_reads_its_turn_from_an_assistant_cache(tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    report = run_recipe(recipe(tmp_path, tiny_pair, train_on="last_assistant"))
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).double().eval()
    soft = table(artifact(report, "soft"))
    terms = []
    for row, turns in enumerate(CHATS):
        ids, everything = hand_positions(tokenizer, turns)
        _, last = hand_positions(tokenizer, turns, last_only=True)
        rows = [everything.index(p) for p in last]  # the cache rows of the last turn
        got_ids = np.array(soft.column("topk_ids")[row].as_py())[rows]
        got_lps = np.array(soft.column("topk_logprobs")[row].as_py(), np.float64)[rows]
        with torch.no_grad():
            zs = student(input_ids=torch.tensor([ids])).logits[0]
        ls = torch.log_softmax(zs[torch.tensor(last) - 1], -1)
        p_t = torch.softmax(torch.tensor(got_lps), -1)
        ls_k = ls.gather(-1, torch.tensor(got_ids, dtype=torch.long))
        terms.append((p_t * (torch.log(p_t) - ls_k)).sum(-1))
    expected = torch.cat(terms)
    first = metrics(report, "distill")[0]
    assert first["tokens"] == len(expected)
    assert first["forward_kl"] == pytest.approx(float(expected.mean()), rel=1e-4)


def test_cached_rows_are_spread_over_the_target_and_end_where_the_cache_does(tiny_pair):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    turns = CHATS[0]
    ids, positions = hand_positions(tokenizer, turns)
    first = positions[0]
    n = len(positions)
    topk_ids = np.arange(n * 3, dtype=np.int32).reshape(n, 3)
    topk_lps = -np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    common = {"train_on": "assistant", "cached_on": "assistant", "max_length": 512, "args": None}
    # the stage truncated the conversation: only its first 4 scored tokens are cached
    example = cached_example(
        0,
        turns,
        tokenizer,
        **common,
        topk_ids=topk_ids[:4],
        topk_logprobs=topk_lps[:4],
        topk_targets=[ids[p] for p in positions[:4]],
    )
    assert example.prompt == ids[:first] and example.target == ids[first:]
    assert len(example.topk_ids) == 4  # the first turn's first 4 tokens, consecutive
    np.testing.assert_array_equal(example.topk_ids, topk_ids[:4])
    # everything cached: rows at the learned positions, filler rows between the turns
    example = cached_example(
        0,
        turns,
        tokenizer,
        **common,
        topk_ids=topk_ids,
        topk_logprobs=topk_lps,
        topk_targets=[ids[p] for p in positions],
    )
    assert len(example.topk_ids) == len(example.target)
    for r, p in enumerate(positions):
        np.testing.assert_array_equal(example.topk_ids[p - first], topk_ids[r])
        np.testing.assert_array_equal(example.topk_logprobs[p - first], topk_lps[r])
    # a student rendering other tokens there is refused, naming the first that differs
    wrong = [ids[p] for p in positions]
    wrong[2] = (wrong[2] + 1) % len(tokenizer)
    with pytest.raises(ConversationError, match="at scored token 3 of"):
        cached_example(
            0,
            turns,
            tokenizer,
            **common,
            topk_ids=topk_ids,
            topk_logprobs=topk_lps,
            topk_targets=wrong,
        )


def test_a_student_rendering_other_tokens_stops_the_train(tmp_path, tiny_pair):
    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' %}Answer: {% endif %}{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    data = json.dumps([{"chat": chat} for chat in CHATS])
    body = (
        f'model teacher = hf("{tiny_pair.teacher}", chat_template = """{template}""")\n'
        f'model student = hf("{tiny_pair.student}")\n'
        f"dataset chats = inline({data}) {{ messages = chat }}\n"
        "stage soft = teacher_logits(chats) { teacher = teacher  target = chat  top_k = 3 }\n"
        "train distill { student = student  data = soft  target = chat  max_steps = 1\n"
        "  loss forward_kl weight 1.0 }\n"
    )
    report = run_recipe(write_recipe(tmp_path, body), expect=1)
    assert node(report, "soft")["status"] != "failed"
    failed = node(report, "distill")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("row 1, `chat`: the teacher's cached tokens differ")
