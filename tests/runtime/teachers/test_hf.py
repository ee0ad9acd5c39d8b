"""The ``hf`` teacher against independent references computed straight from the model."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.teachers import GenerationRequest, load_teacher, teacher_class
from kdlang.runtime.teachers.hf import HFTeacher, resolve_dtype
from kdlang.runtime.teachers.hf_decode import sample_next
from kdlang.runtime.teachers.prompts import encode_prompt

PROMPTS = [
    "Q: What is 12 plus 7?",
    "Write a short poem about the sea.",
    "hi",
    "The teacher answers questions; the student learns from the answers and the logits. Why?",
]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir) -> HFTeacher:
    return HFTeacher(tiny_llama_dir, batch_size=3, device="cpu")


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir) -> HFTeacher:
    return HFTeacher(tiny_gpt2_dir, batch_size=3, device="cpu")


def reference_decode(
    teacher: HFTeacher, prompt_ids: list[int], max_tokens: int, seed=None, t=0.0, top_p=1.0
):
    """One unpadded sequence, full forward every step (no cache), sampling via sample_next."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = list(prompt_ids)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            logits = teacher.model(input_ids=torch.tensor([ids])).logits[:, -1, :]
            u = torch.rand((), generator=generator)[None] if generator else torch.zeros(1)
            token = int(sample_next(logits, torch.tensor([t]), torch.tensor([top_p]), u)[0])
            out.append(token)
            if token in teacher.eos_ids:
                break
            ids.append(token)
    return out


def text_of(teacher: HFTeacher, tokens: list[int]) -> str:
    body = tokens[:-1] if tokens and tokens[-1] in teacher.eos_ids else tokens
    return teacher.tokenizer.decode(body, skip_special_tokens=True)


# ---------------------------------------------------------------- generation


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_greedy_equals_argmax_continuation_of_each_unpadded_prompt(name, request):
    teacher = request.getfixturevalue(name)
    requests = [GenerationRequest(p, max_tokens=12, temperature=0.0) for p in PROMPTS]
    results = teacher.generate(requests)
    for prompt, (generation,) in zip(PROMPTS, results, strict=True):
        prompt_ids = encode_prompt(teacher.tokenizer, prompt, None, chat=teacher.chat)
        tokens = reference_decode(teacher, prompt_ids, 12)
        assert generation.text == text_of(teacher, tokens)
        assert generation.completion_tokens == len(tokens)
        assert generation.prompt_tokens == len(prompt_ids)
        assert generation.finish_reason == ("stop" if tokens[-1] in teacher.eos_ids else "length")


def test_sampled_decode_equals_cache_free_reference_with_per_sequence_generators(llama):
    requests = [
        GenerationRequest(p, n=2, temperature=1.3, top_p=0.9, max_tokens=10, seed=100 + i)
        for i, p in enumerate(PROMPTS)
    ]
    results = llama.generate(requests)
    for request, generations in zip(requests, results, strict=True):
        prompt_ids = encode_prompt(llama.tokenizer, request.prompt, None, chat=True)
        for sample, generation in enumerate(generations):
            tokens = reference_decode(
                llama, prompt_ids, 10, seed=request.seed + sample, t=1.3, top_p=0.9
            )
            assert generation.text == text_of(llama, tokens)


def test_shapes_order_and_on_result(llama):
    requests = [
        GenerationRequest(p, n=1 + i % 3, temperature=1.0, max_tokens=6, seed=i)
        for i, p in enumerate(PROMPTS)
    ]
    seen: dict[int, list] = {}
    results = llama.generate(requests, on_result=lambda i, gens: seen.setdefault(i, gens))
    assert [len(r) for r in results] == [r.n for r in requests]
    assert sorted(seen) == list(range(len(requests)))
    assert all(seen[i] == results[i] for i in seen)
    for generations in results:
        for g in generations:
            assert 1 <= g.completion_tokens <= 6
            assert g.finish_reason in ("stop", "length")


def test_same_seed_same_text_across_calls_batch_sizes_and_orders(tiny_llama_dir, llama):
    requests = [
        GenerationRequest(p, n=2, temperature=1.0, max_tokens=12, seed=7 * i)
        for i, p in enumerate(PROMPTS)
    ]
    first = [[g.text for g in gens] for gens in llama.generate(requests)]
    again = [[g.text for g in gens] for gens in llama.generate(requests)]
    one_at_a_time = HFTeacher(tiny_llama_dir, batch_size=1, device="cpu")
    single = [[g.text for g in gens] for gens in one_at_a_time.generate(requests)]
    reversed_ = [[g.text for g in gens] for gens in llama.generate(requests[::-1])][::-1]
    assert first == again == single == reversed_
    # n samples are the n single-sample requests seeded seed .. seed+n-1
    split = [
        GenerationRequest(PROMPTS[1], temperature=1.0, max_tokens=12, seed=7 + s) for s in range(2)
    ]
    assert [gens[0].text for gens in llama.generate(split)] == first[1]


def test_different_seeds_give_different_samples(llama):
    requests = [
        GenerationRequest(PROMPTS[0], temperature=1.0, max_tokens=12, seed=s) for s in range(6)
    ]
    texts = {gens[0].text for gens in llama.generate(requests)}
    assert len(texts) >= 4


def test_stop_string_truncates_where_it_first_occurs(gpt2):
    runs = gpt2.generate([GenerationRequest(p, max_tokens=16) for p in PROMPTS])
    prompt, full = next((p, r[0]) for p, r in zip(PROMPTS, runs, strict=True) if len(r[0].text) > 8)
    stop = full.text[5:8]
    first = full.text.index(stop)
    cut = gpt2.generate([GenerationRequest(prompt, max_tokens=16, stop=["@@never@@", stop])])[0][0]
    assert cut.text == full.text[:first]
    assert cut.finish_reason == "stop"
    assert cut.completion_tokens < full.completion_tokens


def test_eos_ends_generation_and_is_not_in_the_text(tiny_gpt2_dir):
    teacher = HFTeacher(tiny_gpt2_dir, device="cpu")
    full = teacher.generate([GenerationRequest(PROMPTS[1], max_tokens=8, top_logprobs=1)])[0][0]
    tokens = full.logprobs.target_ids.tolist()
    teacher.eos_ids = {tokens[3]}  # pretend the model's 4th token is its end of sequence
    ended = teacher.generate([GenerationRequest(PROMPTS[1], max_tokens=8)])[0][0]
    assert ended.finish_reason == "stop"
    assert ended.completion_tokens == 4
    assert ended.text == teacher.tokenizer.decode(tokens[:3], skip_special_tokens=True)


def test_sample_next_follows_the_nucleus_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    t, top_p = 0.7, 0.8
    probs = torch.softmax(logits.double() / t, dim=-1)[0]
    order = probs.argsort(descending=True)
    mass, nucleus = 0.0, []
    for i in order.tolist():
        if mass >= top_p:
            break
        nucleus.append(i)
        mass += float(probs[i])
    expected = torch.zeros(5, dtype=torch.double)
    expected[nucleus] = probs[nucleus] / probs[nucleus].sum()
    uniforms = (torch.arange(20000, dtype=torch.double) + 0.5) / 20000  # a stratified [0, 1) grid
    picks = sample_next(
        logits.expand(20000, 5), torch.full((20000,), t), torch.full((20000,), top_p), uniforms
    )
    freq = torch.bincount(picks, minlength=5).double() / 20000
    assert torch.allclose(freq, expected, atol=1e-3)
    greedy = sample_next(logits, torch.zeros(1), torch.ones(1), torch.tensor([0.99]))
    assert greedy.tolist() == [0]
    tiny_nucleus = sample_next(logits, torch.ones(1), torch.tensor([1e-6]), torch.tensor([0.99]))
    assert tiny_nucleus.tolist() == [0]


# ---------------------------------------------------------------- prompts and chat templates


def test_chat_template_and_system_message_are_used(llama):
    system, prompt = "You are a helpful assistant.", "What is 30 minus 4?"
    (generation,) = llama.generate([GenerationRequest(prompt, system=system, max_tokens=4)])[0]
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    rendered = (
        "<|im_start|>system\n"
        + system
        + "<|im_end|>\n<|im_start|>user\n"
        + prompt
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    expected = llama.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert encode_prompt(llama.tokenizer, messages, None, chat=True) == expected
    assert generation.prompt_tokens == len(expected)
    with_messages = llama.generate([GenerationRequest(messages, max_tokens=4)])[0][0]
    assert with_messages.text == generation.text


def test_plain_prompt_without_template_prepends_system_and_bos(gpt2):
    ids = encode_prompt(gpt2.tokenizer, "What?", "Be brief.", chat=gpt2.chat)
    assert not gpt2.chat
    assert ids == [
        gpt2.tokenizer.bos_token_id,
        *gpt2.tokenizer("Be brief.\n\nWhat?", add_special_tokens=False)["input_ids"],
    ]
    multi_turn = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    with pytest.raises(ValueError, match="needs a chat template"):
        gpt2.generate([GenerationRequest(multi_turn)])


def test_chat_template_none_forces_plain_text(tiny_llama_dir):
    teacher = HFTeacher(tiny_llama_dir, chat_template="none", device="cpu")
    assert not teacher.chat
    ids = encode_prompt(teacher.tokenizer, "hi", None, chat=teacher.chat)
    assert ids == teacher.tokenizer("hi", add_special_tokens=True)["input_ids"]


# ---------------------------------------------------------------- scoring and logits


def float64_reference(teacher: HFTeacher, prompt_ids, target_ids, k):
    model64 = teacher._reference64 if hasattr(teacher, "_reference64") else None
    if model64 is None:
        import copy

        model64 = copy.deepcopy(teacher.model).double()
        teacher._reference64 = model64
    with torch.no_grad():
        logits = model64(input_ids=torch.tensor([prompt_ids + target_ids])).logits[0]
    logp = torch.log_softmax(logits, dim=-1)[
        len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(target_ids)
    ]
    values, ids = logp.topk(k, dim=-1)
    chosen = logp.gather(-1, torch.tensor(target_ids)[:, None]).squeeze(-1)
    return values, ids, chosen


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_topk_logprobs_equal_float64_reference(name, request):
    teacher = request.getfixturevalue(name)
    targets = [
        " A: 12 + 7 = 19. #### 19",
        " waves",
        "",
        " The student learns from the teacher, step by step.",
    ]
    systems = ["Be brief.", None, None, None]
    result = teacher.topk_logprobs(PROMPTS, targets, k=8, systems=systems)
    for prompt, target, system, topk in zip(PROMPTS, targets, systems, result, strict=True):
        prompt_ids, target_ids = teacher.encode_pair(prompt, target, system)
        assert topk.target_ids.tolist() == target_ids
        assert topk.ids.dtype == torch.int32 and topk.logprobs.dtype == torch.float32
        assert tuple(topk.logprobs.shape) == (len(target_ids), 8)
        if not target_ids:
            continue
        values, ids, chosen = float64_reference(teacher, prompt_ids, target_ids, 8)
        assert torch.equal(topk.ids.long(), ids)
        assert torch.allclose(topk.logprobs.double(), values, atol=1e-4)
        assert torch.allclose(topk.target_logprobs.double(), chosen, atol=1e-4)


def test_generation_top_logprobs_describe_the_generated_tokens(llama):
    (g,) = llama.generate([GenerationRequest(PROMPTS[0], max_tokens=6, top_logprobs=4)])[0]
    prompt_ids = encode_prompt(llama.tokenizer, PROMPTS[0], None, chat=True)
    tokens = g.logprobs.target_ids.tolist()
    values, ids, chosen = float64_reference(llama, prompt_ids, tokens, 4)
    assert torch.equal(g.logprobs.ids[:, 0].long(), torch.tensor(tokens))  # greedy picks the top-1
    assert torch.equal(g.logprobs.ids.long(), ids)
    assert torch.allclose(g.logprobs.logprobs.double(), values, atol=1e-4)
    assert torch.allclose(g.logprobs.target_logprobs.double(), chosen, atol=1e-4)


def test_logits_of_a_left_padded_batch_match_each_unpadded_row(llama):
    rows = [llama.tokenizer(p)["input_ids"] for p in PROMPTS[:3]]
    width = max(map(len, rows))
    ids = torch.tensor([[llama.pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    batched = llama.logits(ids, mask)
    assert batched.dtype == torch.float32 and batched.shape[:2] == ids.shape
    for b, row in enumerate(rows):
        alone = llama.logits(torch.tensor([row]))[0]
        assert torch.allclose(batched[b, width - len(row) :], alone, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- settings and registry


def test_registry_and_settings(tiny_gpt2_dir, monkeypatch):
    teacher = load_teacher(
        "hf", path=str(tiny_gpt2_dir), batch_size=2, dtype="float32", device="cpu"
    )
    assert isinstance(teacher, HFTeacher) and teacher.white_box and teacher.batch_size == 2
    assert teacher_class("hf") is HFTeacher
    with pytest.raises(KeyError, match="hf, openai"):
        load_teacher("vllm")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"))


def test_revision_and_remote_code_flags_reach_from_pretrained(tiny_gpt2_dir, monkeypatch):
    import transformers

    seen = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained

        def spy(path, *args, _original=original, **kwargs):
            seen.append((kwargs.get("revision"), kwargs.get("trust_remote_code")))
            kwargs.pop("revision")
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    HFTeacher(tiny_gpt2_dir, revision="v1.2", trust_remote_code=True, device="cpu")
    assert seen == [("v1.2", True), ("v1.2", True)]


def test_stats_count_requests_batches_and_tokens(tiny_gpt2_dir):
    teacher = HFTeacher(tiny_gpt2_dir, batch_size=2, device="cpu")
    results = teacher.generate([GenerationRequest(p, n=2, max_tokens=3) for p in PROMPTS[:3]])
    gens = [g for r in results for g in r]
    assert teacher.stats.requests == 3 and teacher.stats.calls == 3  # 6 sequences, 2 per batch
    assert teacher.stats.completion_tokens == sum(g.completion_tokens for g in gens)
    assert teacher.stats.prompt_tokens == sum(g.prompt_tokens for g in gens)
    assert teacher.stats.retries == teacher.stats.failures == 0


# ---------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_cuda_defaults_to_bf16_and_keeps_the_cpu_random_stream(tiny_llama_dir, llama):
    requests = [
        GenerationRequest(p, n=2, temperature=1.0, top_p=0.95, max_tokens=10, seed=3 * i)
        for i, p in enumerate(PROMPTS)
    ]
    fp32 = HFTeacher(tiny_llama_dir, device="cuda", dtype="float32", batch_size=3)
    assert texts_of(fp32.generate(requests)) == texts_of(llama.generate(requests))
    bf16 = HFTeacher(tiny_llama_dir, device="auto", batch_size=3)
    assert bf16.device.type == "cuda" and bf16.dtype == torch.bfloat16
    first = texts_of(bf16.generate(requests))
    assert first == texts_of(bf16.generate(requests))
    targets = [" A: 12 + 7 = 19.", " waves", " yes", " The student learns."]
    for prompt, target, topk in zip(
        PROMPTS, targets, bf16.topk_logprobs(PROMPTS, targets, k=4), strict=True
    ):
        prompt_ids, target_ids = bf16.encode_pair(prompt, target)
        _, ids, chosen = float64_reference(llama, prompt_ids, target_ids, 4)
        assert topk.logprobs.dtype == torch.float32 and topk.ids.device.type == "cpu"
        # bf16 carries ~3 significant digits; the tiny models' log-probs reach -20
        assert torch.allclose(topk.target_logprobs.double(), chosen, rtol=0.05, atol=0.1)
        assert all(int(top1) in row for top1, row in zip(ids[:, 0], topk.ids.tolist(), strict=True))


def texts_of(results) -> list[list[str]]:
    return [[g.text for g in gens] for gens in results]
