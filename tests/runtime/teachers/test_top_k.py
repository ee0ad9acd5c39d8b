"""Top-k sampling: the sampler against a reference written here, a model with a known next-token
distribution, and the settings' path from a request to each backend.

The rule under test (``sample_next``): sort the tempered probabilities descending, ties in id
order; keep the first ``k`` (so of tokens tied at the k-th probability, the lower ids); of those,
renormalized, keep the smallest prefix whose mass reaches ``top_p``; draw by inverse CDF with the
row's uniform.
"""

from __future__ import annotations

import math

import pytest
import torch
from kdlang.runtime.teachers import GenerationRequest
from kdlang.runtime.teachers.hf import HFTeacher
from kdlang.runtime.teachers.hf_decode import SequenceSpec, decode_padded, sample_next

from tests.fixtures.openai_server import FakeOpenAIServer

# probabilities of a 7-token vocabulary: ids 2 and 5 tie at the third place
PROBS = [0.05, 0.30, 0.15, 0.02, 0.25, 0.15, 0.08]


def reference(probs: list[float], u: float, *, k: int, top_p: float) -> int:
    """The token the rule picks, in float64 Python arithmetic."""
    order = sorted(range(len(probs)), key=lambda i: (-probs[i], i))
    if k:
        order = order[:k]
    mass = sum(probs[i] for i in order)
    kept, before = [], 0.0
    for i in order:
        if before >= top_p * mass:
            break
        kept.append(i)
        before += probs[i]
    total = sum(probs[i] for i in kept)
    running = 0.0
    for i in kept:
        running += probs[i]
        if u * total < running:
            return i
    return kept[-1]


def draw(probs: list[float], uniforms: torch.Tensor, *, k: int, top_p: float = 1.0, t=1.0):
    rows = len(uniforms)
    logits = torch.log(torch.tensor(probs, dtype=torch.float64)).float() * t
    return sample_next(
        logits.expand(rows, -1),
        torch.full((rows,), t),
        torch.full((rows,), top_p),
        uniforms,
        top_k=torch.full((rows,), k, dtype=torch.long),
    ).tolist()


@pytest.mark.parametrize(
    ("k", "top_p", "allowed"),
    [
        (1, 1.0, {1}),
        (2, 1.0, {1, 4}),
        (3, 1.0, {1, 4, 2}),  # the tie at 0.15: id 2 is kept, id 5 is not
        (4, 1.0, {1, 4, 2, 5}),
        (4, 0.6, {1, 4}),  # 0.30 + 0.25 = 0.55 of the kept 0.85: 0.647 >= 0.6 with two
        (0, 0.6, {1, 4, 2}),  # without top-k: 0.55 < 0.6, a third token is needed
        (7, 1.0, set(range(7))),
    ],
)
def test_sample_next_follows_the_rule_on_a_grid_of_uniforms(k, top_p, allowed):
    # mid-cell uniforms: none falls on a boundary of the CDF, where rounding would decide
    uniforms = ((torch.arange(1000, dtype=torch.float64) + 0.5) / 1000).float()
    got = draw(PROBS, uniforms, k=k, top_p=top_p)
    want = [reference(PROBS, float(u), k=k, top_p=top_p) for u in uniforms]
    assert got == want
    assert set(got) == allowed


def test_sample_next_frequencies_are_the_renormalized_top_k():
    """With k = 3 the draws follow 0.30 : 0.25 : 0.15 renormalized, over seeded uniforms."""
    uniforms = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    got = torch.tensor(draw(PROBS, uniforms, k=3))
    for token, p in ((1, 0.30), (4, 0.25), (2, 0.15)):
        share = (got == token).double().mean().item()
        expected = p / 0.70
        sigma = math.sqrt(expected * (1 - expected) / len(got))
        assert abs(share - expected) < 5 * sigma


def test_top_k_applies_after_the_temperature_and_rows_keep_their_own_k():
    """Temperature 2 flattens the distribution but not its order, so top-2 keeps the same two
    tokens; a row with k = 0 beside it still samples everything."""
    uniforms = ((torch.arange(500, dtype=torch.float64) + 0.5) / 500).float()
    logits = torch.log(torch.tensor(PROBS)).expand(1000, -1)
    top_k = torch.tensor([2] * 500 + [0] * 500)
    chosen = sample_next(
        logits,
        torch.full((1000,), 2.0),
        torch.ones(1000),
        torch.cat([uniforms, uniforms]),
        top_k=top_k,
    )
    assert set(chosen[:500].tolist()) == {1, 4}
    assert set(chosen[500:].tolist()) == set(range(7))
    tempered = [p**0.5 for p in PROBS]
    tempered = [p / sum(tempered) for p in tempered]
    assert chosen[500:].tolist() == [
        reference(tempered, float(u), k=0, top_p=1.0) for u in uniforms
    ]


def test_top_k_zero_gives_what_no_top_k_gives():
    uniforms = torch.rand(300, generator=torch.Generator().manual_seed(1))
    logits = torch.randn(300, 50, generator=torch.Generator().manual_seed(2))
    t, p = torch.full((300,), 0.8), torch.full((300,), 0.9)
    plain = sample_next(logits, t, p, uniforms)
    zero = sample_next(logits, t, p, uniforms, top_k=torch.zeros(300, dtype=torch.long))
    assert torch.equal(plain, zero)


# ---------------------------------------------------------------- a model with a known distribution


@pytest.fixture(scope="module")
def biased_teacher(tiny_llama_dir) -> HFTeacher:
    """The tiny Llama whose output head is a constant: every position predicts the same
    distribution, set by the head's bias (ids 10..14 far above the rest, in that order)."""
    teacher = HFTeacher(tiny_llama_dir, device="cpu", dtype="float32")
    old = teacher.model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-20.0)
        head.bias[10:15] = torch.tensor([4.0, 3.5, 3.0, 2.5, 2.0])
    teacher.model.set_output_embeddings(head)
    teacher.eos_ids = set()  # no token ends a sample early
    return teacher


def test_samples_of_a_known_model_stay_within_its_top_k(biased_teacher):
    """40 seeds × 8 tokens at top_k = 2: only ids 10 and 11, both of them (p(11) = 0.38)."""
    specs = [
        SequenceSpec(
            [5, 6, 7], seed=s, temperature=1.0, top_p=1.0, max_tokens=8, top_logprobs=1, top_k=2
        )
        for s in range(40)
    ]
    out = decode_padded(biased_teacher.model, biased_teacher.tokenizer, specs, set(), 0)
    assert {t for g in out for t in g.logprobs.target_ids.tolist()} == {10, 11}
    # and without top-k the other three likely tokens come up too (mass 0.31 of 320 draws)
    wide = [SequenceSpec(**{**s.__dict__, "top_k": 0}) for s in specs]
    out = decode_padded(biased_teacher.model, biased_teacher.tokenizer, wide, set(), 0)
    assert {t for g in out for t in g.logprobs.target_ids.tolist()} == {10, 11, 12, 13, 14}


def test_teacher_generate_passes_top_k(biased_teacher):
    requests = [
        GenerationRequest("a b c", n=4, temperature=1.0, top_k=1, max_tokens=5, seed=s)
        for s in range(3)
    ]
    expected = biased_teacher.tokenizer.decode([10] * 5, skip_special_tokens=True)
    for generations in biased_teacher.generate(requests):
        assert [g.text for g in generations] == [expected] * 4


def test_rows_per_call_follows_decode_slots(biased_teacher):
    assert biased_teacher.rows_per_call(1) == biased_teacher.batch_size
    biased_teacher.decode_slots = 64
    try:
        assert (biased_teacher.rows_per_call(1), biased_teacher.rows_per_call(3)) == (64, 21)
    finally:
        biased_teacher.decode_slots = None


def test_request_rejects_a_negative_top_k():
    with pytest.raises(ValueError, match="top_k"):
        GenerationRequest("x", top_k=-1)


# ---------------------------------------------------------------- the openai backend


def test_openai_request_body_carries_top_k_only_when_set():
    from kdlang.runtime.teachers.openai import OpenAITeacher

    with FakeOpenAIServer() as server:
        teacher = OpenAITeacher("tiny", base_url=server.url, timeout=5.0, backoff_base=0.01)
        teacher.generate(
            [
                GenerationRequest("with", temperature=0.7, top_k=40),
                GenerationRequest("without", temperature=0.7),
            ]
        )
    bodies = {b["messages"][-1]["content"]: b for b in server.bodies}
    assert bodies["with"]["top_k"] == 40
    assert "top_k" not in bodies["without"]


# ---------------------------------------------------------------- recipe settings


def test_label_and_judge_stages_send_their_top_k(tmp_path, monkeypatch):
    from tests.runtime.stages.support import (
        BASE_URL_ENV,
        api_model,
        rows,
        run_recipe,
        write_recipe,
    )

    recipe = write_recipe(
        tmp_path,
        'dataset qs = inline([{question: "What is 2 + 3?"}])\n'
        'prompt solve = "Q: {{ question }}"\n'
        'prompt rate = "Rate {{ output }} from 1 to 10."\n'
        + api_model("api")
        + """
stage answered = label(qs) { teacher = api  prompt = solve  temperature = 0.9  top_k = 7 }
stage rated = judge(answered) { judge = api  prompt = rate  temperature = 0.5  top_k = 3 }
""",
    )
    with FakeOpenAIServer() as server:
        monkeypatch.setenv(BASE_URL_ENV, server.url)
        document = run_recipe(recipe)
    assert len(rows(document, "answered")) == 1
    sent = {b["messages"][-1]["content"].split(" ")[0]: b.get("top_k") for b in server.bodies}
    assert sent == {"Q:": 7, "Rate": 3}


def test_on_policy_samples_at_top_k_one_are_the_greedy_path(tiny_pair):
    from kdlang.runtime.train.examples import Example
    from kdlang.runtime.train.onpolicy import sample_targets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_pair.student)
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.student)
    prompt = tokenizer("What is two plus three?")["input_ids"]
    examples = [Example(prompt=prompt, target=[], row=r) for r in range(6)]

    def targets(top_k: int) -> list[list[int]]:
        sampled = sample_targets(
            model, tokenizer, examples, seed=3, step=0, temperature=1.0,
            max_new_tokens=8, batch_size=6, top_k=top_k,
        )  # fmt: skip
        return [e.target for e in sampled]

    greedy = sample_targets(
        model, tokenizer, examples, seed=3, step=0, temperature=1e-6,
        max_new_tokens=8, batch_size=6,
    )  # fmt: skip
    assert targets(1) == [e.target for e in greedy]
    assert len({tuple(t) for t in targets(0)}) > 1


@pytest.mark.parametrize(
    ("line", "codes"),
    [
        ("on_policy = 0.5  teacher = student  sample_top_k = 20", set()),
        ("teacher = student  sample_top_k = 20", {"KD0322"}),
        ("on_policy = 0.5  teacher = student  sample_top_k = -1", {"KD0104"}),
    ],
)
def test_sample_top_k_is_checked_like_the_other_sampling_settings(tmp_path, tiny_pair, line, codes):
    from kdlang.check import check_files
    from tests.runtime.train.support import write_recipe

    body = (
        f'model student = hf("{tiny_pair.student}")\n'
        'dataset rows = inline([{q: "a", a: "b"}])\n'
        f"train t {{\n  student = student  data = rows  target = a  {line}\n"
        "  loss forward_kl weight 1.0\n}\n"
    )
    diagnostics, _ = check_files([str(write_recipe(tmp_path, body))])
    assert {d.code for d in diagnostics if d.severity.name == "ERROR"} == codes


# ---------------------------------------------------------------- decode_slots


@pytest.mark.parametrize(("slots", "calls"), [("", 3), (", decode_slots = 3", 4)])
def test_decode_slots_sets_the_rows_a_stage_sends_per_call(tmp_path, tiny_llama_dir, slots, calls):
    """6 rows, batch_size = 2 on the CPU: chunks of 2 rows (3 chunks, one batch each), or with
    decode_slots = 3 chunks of 3 rows, each decoded in batches of 2 and 1 (4 calls)."""
    from tests.runtime.stages.support import node, rows, run_recipe, write_recipe

    recipe = write_recipe(
        tmp_path,
        "dataset qs = inline([" + ", ".join(f'{{q: "item {i}"}}' for i in range(6)) + "])\n"
        'prompt ask = "{{ q }}"\n'
        f'model t = hf("{tiny_llama_dir}", device = cpu, batch_size = 2{slots})\n'
        "stage out = label(qs) { teacher = t  prompt = ask  max_tokens = 3  top_k = 2 }\n",
    )
    document = run_recipe(recipe)
    assert len(rows(document, "out")) == 6
    assert node(document, "out")["teacher"]["calls"] == calls


def test_chunk_size_asks_a_white_box_teacher(biased_teacher):
    from kdlang.runtime.stages.label import chunk_size

    class Plain:
        white_box, batch_size = True, 12

    assert (chunk_size(Plain(), 4), chunk_size(biased_teacher, 4)) == (3, 4)
    biased_teacher.decode_slots = 40
    try:
        assert chunk_size(biased_teacher, 4) == 10
    finally:
        biased_teacher.decode_slots = None
