"""Which tokens of a conversation the student learns, against spans written out by hand for
three chat templates (ChatML-style, Llama-3-style with header tokens, one with a default system
prompt), and a token-level KD loss on a conversation against a float64 computation on exactly
the assistant positions."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.train.conversation import (
    ConversationError,
    conversation_example,
    encode_conversation,
)
from kdlang.runtime.train.examples import IGNORE, collate
from kdlang.runtime.train.models import head
from kdlang.runtime.train.objective import Models, Objective

from tests.fixtures.tiny_models import CHAT_TEMPLATE
from tests.runtime.train.support import loss

pytestmark = pytest.mark.timeout(120)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim }}"
    "{{ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{% endif %}" + CHAT_TEMPLATE
)
MARKED_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ m['content'] + '<|im_end|>\\n' }}"
    "{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML with HF's ``{% generation %}`` markers around what the assistant writes."""

CONVERSATION = [
    {"role": "user", "content": "What is 12 plus 7?"},
    {"role": "assistant", "content": "12 + 7 = 19."},
    {"role": "user", "content": "And 30 minus 4?"},
    {"role": "assistant", "content": "30 - 4 = 26."},
]
WITH_SYSTEM = [{"role": "system", "content": "Think step by step."}, *CONVERSATION]


@pytest.fixture(scope="module")
def tokenizer(tiny_chat_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_tokenizer_dir)
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    return tok


def with_template(tokenizer, template: str):
    tokenizer.chat_template = template
    return tokenizer


def pieces_to_mask(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """The ids and flags of text written out piece by piece (learned or not)."""
    ids, flags = [], []
    for text, learned in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        flags += [learned] * len(piece)
    return ids, flags


def chatml_pieces(turns, system_default: str | None = None) -> list[tuple[str, bool]]:
    pieces = []
    if system_default is not None:
        pieces.append((f"<|im_start|>system\n{system_default}<|im_end|>\n", False))
    for turn in turns:
        pieces.append((f"<|im_start|>{turn['role']}\n", False))
        if turn["role"] == "assistant":
            pieces.append((f"{turn['content']}<|im_end|>\n", True))
        else:
            pieces.append((f"{turn['content']}<|im_end|>\n", False))
    return pieces


def test_chatml_learns_each_assistant_turn_and_its_end_of_turn(tokenizer):
    with_template(tokenizer, CHAT_TEMPLATE)
    ids, learned = encode_conversation(tokenizer, WITH_SYSTEM, "assistant")
    assert (ids, learned) == pieces_to_mask(tokenizer, chatml_pieces(WITH_SYSTEM))
    decoded = tokenizer.decode([t for t, flag in zip(ids, learned, strict=True) if flag])
    assert decoded == "12 + 7 = 19.<|im_end|>\n30 - 4 = 26.<|im_end|>\n"


def test_llama3_style_header_tokens_are_not_learned(tokenizer):
    with_template(tokenizer, LLAMA3_TEMPLATE)
    ids, learned = encode_conversation(tokenizer, CONVERSATION, "assistant")
    pieces = [("<|bos|>", False)]
    for turn in CONVERSATION:
        header = f"<|start_header_id|>{turn['role']}<|end_header_id|>\n\n"
        pieces += [(header, False), (turn["content"] + "<|eot_id|>", turn["role"] == "assistant")]
    assert (ids, learned) == pieces_to_mask(tokenizer, pieces)
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["<|bos|>", "<|start_header_id|>"]


def test_a_default_system_prompt_is_rendered_and_not_learned(tokenizer):
    with_template(tokenizer, DEFAULT_SYSTEM_TEMPLATE)
    ids, learned = encode_conversation(tokenizer, CONVERSATION, "assistant")
    pieces = chatml_pieces(CONVERSATION, system_default="You are a helpful assistant.")
    assert (ids, learned) == pieces_to_mask(tokenizer, pieces)
    # a conversation with its own system turn replaces the default
    ids, learned = encode_conversation(tokenizer, WITH_SYSTEM, "assistant")
    assert (ids, learned) == pieces_to_mask(tokenizer, chatml_pieces(WITH_SYSTEM))


def test_last_assistant_and_all(tokenizer):
    with_template(tokenizer, CHAT_TEMPLATE)
    pieces = chatml_pieces(CONVERSATION)
    last = [(text, flag and i == len(pieces) - 1) for i, (text, flag) in enumerate(pieces)]
    assert encode_conversation(tokenizer, CONVERSATION, "last_assistant") == pieces_to_mask(
        tokenizer, last
    )
    ids, learned = encode_conversation(tokenizer, CONVERSATION, "all")
    assert ids == pieces_to_mask(tokenizer, pieces)[0]
    assert learned == [False] + [True] * (len(ids) - 1)


def test_derived_spans_equal_the_templates_generation_markers(tokenizer):
    with_template(tokenizer, MARKED_TEMPLATE)
    ids, learned = encode_conversation(tokenizer, WITH_SYSTEM, "assistant")
    marked = tokenizer.apply_chat_template(
        WITH_SYSTEM, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ids == list(marked["input_ids"])
    assert learned == [bool(flag) for flag in marked["assistant_masks"]]
    assert any(learned) and not all(learned)


def test_generation_markers_that_disagree_with_the_prefixes_are_an_error(tokenizer):
    # marks every turn's text as the assistant's, the system's and the user's too
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% generation %}{{ m['content'] + '<|im_end|>\\n' }}{% endgeneration %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    with_template(tokenizer, template)
    system_text = tokenizer("<|im_start|>system\n", add_special_tokens=False)["input_ids"]
    with pytest.raises(ConversationError, match=f"marks token {len(system_text)} "):
        encode_conversation(tokenizer, WITH_SYSTEM, "assistant")


def test_a_template_rewriting_earlier_turns_is_an_error(tokenizer):
    # writes only the last assistant turn's content: earlier renderings are no prefixes
    template = (
        "{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
        "{{ '<|im_start|>assistant\\n<|im_end|>\\n' }}{% else %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    with_template(tokenizer, template)
    with pytest.raises(ConversationError, match="before turn 2 differently"):
        encode_conversation(tokenizer, CONVERSATION, "assistant")


def test_the_example_prompt_ends_where_learning_starts_and_collate_masks_user_turns(tokenizer):
    with_template(tokenizer, CHAT_TEMPLATE)
    ids, learned = encode_conversation(tokenizer, CONVERSATION, "assistant")
    example = conversation_example(0, CONVERSATION, tokenizer, train_on="assistant", max_length=512)
    first = learned.index(True)
    assert example.prompt == ids[:first] and example.target == ids[first:]
    assert example.tokens == sum(learned)
    batch = collate([example], tokenizer.pad_token_id)
    expected = torch.tensor([t if flag else IGNORE for t, flag in zip(ids, learned, strict=True)])
    assert torch.equal(batch.labels[0], expected[1:])
    assert torch.equal(batch.kd_labels[0], expected[1:])
    # truncated: the end of the target goes, its flags with it
    short = conversation_example(0, CONVERSATION, tokenizer, train_on="assistant", max_length=30)
    assert len(short.prompt) + len(short.target) == 30
    assert short.learn == learned[first : first + len(short.target)]


def test_kd_loss_on_a_conversation_counts_only_assistant_positions(tokenizer, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    assert tok.chat_template
    student = AutoModelForCausalLM.from_pretrained(tiny_pair.student).float()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_pair.teacher).float().eval()
    rows = [CONVERSATION, WITH_SYSTEM[:3]]
    examples = [
        conversation_example(i, turns, tok, train_on="assistant", max_length=512)
        for i, turns in enumerate(rows)
    ]
    batch = collate(examples, tok.pad_token_id)
    losses = [loss("sft", 1.0), loss("forward_kl", 1.0, temperature=2.0)]
    objective = Objective(losses, total_steps=1, teacher="online", backend="torch")
    settled = objective.at_step(0)
    counts = {"tokens": batch.tokens, "kd_tokens": batch.tokens, "pairs": 0}
    models = Models(student, head(student), teacher, head(teacher))
    _, parts = objective.micro_loss(models, settled, counts, tokens=batch)

    # by hand: positions predicting an assistant token, from the spans of each row
    with torch.no_grad():
        zs = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        zt = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    sft_terms, kl_terms = [], []
    for b, turns in enumerate(rows):
        ids, learned = pieces_to_mask(tok, chatml_pieces(turns))
        for t in range(1, len(ids)):
            if not learned[t]:
                continue
            ls = torch.log_softmax(zs[b, t - 1].double(), -1)
            sft_terms.append(-ls[ids[t]])
            lt2 = torch.log_softmax(zt[b, t - 1].double() / 2.0, -1)
            ls2 = torch.log_softmax(zs[b, t - 1].double() / 2.0, -1)
            kl_terms.append((lt2.exp() * (lt2 - ls2)).sum())
    assert len(sft_terms) == batch.tokens
    assert float(parts["sft"]) == pytest.approx(float(torch.stack(sft_terms).mean()), rel=2e-5)
    assert float(parts["forward_kl"]) == pytest.approx(
        float(torch.stack(kl_terms).mean()), rel=2e-5
    )


def test_template_arguments_reach_the_rendering(tokenizer):
    from kdlang.runtime.teachers.prompts import render_prompt

    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% if m['role'] == 'assistant' and not thinking %}{{ 'Answer: ' }}{% endif %}"
        "{{ m['content'] + '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    with_template(tokenizer, template)
    turns = CONVERSATION[:2]
    plain = [("<|im_start|>user\n", False), ("What is 12 plus 7?<|im_end|>\n", False)]
    assistant = [("<|im_start|>assistant\n", False)]
    expected = pieces_to_mask(
        tokenizer, plain + assistant + [("Answer: 12 + 7 = 19.<|im_end|>\n", True)]
    )
    assert encode_conversation(tokenizer, turns, "assistant", {"thinking": False}) == expected
    expected = pieces_to_mask(tokenizer, plain + assistant + [("12 + 7 = 19.<|im_end|>\n", True)])
    assert encode_conversation(tokenizer, turns, "assistant", {"thinking": True}) == expected
    text = render_prompt(tokenizer, CONVERSATION[:3], None, chat=True, args={"thinking": False})
    assert "<|im_start|>assistant\nAnswer: 12 + 7 = 19.<|im_end|>" in text
    assert text.endswith("And 30 minus 4?<|im_end|>\n<|im_start|>assistant\n")
