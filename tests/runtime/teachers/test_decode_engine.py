"""The static decode engine against the per-token loop, and against itself across batches.

On the CPU the engine runs without CUDA graphs, in float32, on the tiny Llama: its scheduling
(slots refilled as sequences end, prompts written in chunks, tokens read back several steps at
a time, stop strings and EOS found inside such a block) must give exactly what the per-token
loop of ``hf_decode`` gives for each sequence decoded alone. On a CUDA device (tests marked
``gpu``) the graph-captured engine runs in bfloat16 and must give identical tokens for a
sequence whatever else is decoded with it, and top-k log-probs equal to the per-token loop's
within bfloat16 rounding.
"""

from __future__ import annotations

import random

import pytest
import torch
from kdlang.runtime.teachers.decode_engine import DecodeEngine, engine_reason
from kdlang.runtime.teachers.decode_rows import prefill_units
from kdlang.runtime.teachers.decode_static import unsupported_reason
from kdlang.runtime.teachers.hf import HFTeacher
from kdlang.runtime.teachers.hf_decode import SequenceSpec, decode_batch, decode_padded

from tests.fixtures.tiny_models import CORPUS

LENGTHS = [1, 2, 5, 11, 23, 40, 70, 3]


@pytest.fixture(scope="module")
def cpu_teacher(tiny_llama_dir) -> HFTeacher:
    return HFTeacher(tiny_llama_dir, device="cpu", dtype="float32")


def prompts_of(teacher: HFTeacher, lengths=LENGTHS) -> list[list[int]]:
    ids = teacher.tokenizer(" ".join(CORPUS), add_special_tokens=False)["input_ids"]
    return [ids[7 * i : 7 * i + n] for i, n in enumerate(lengths)]


def mixed_specs(teacher: HFTeacher, **overrides) -> list[SequenceSpec]:
    """Greedy and sampled rows of every length, with different budgets and top-k sizes."""
    specs = []
    for i, prompt in enumerate(prompts_of(teacher)):
        settings = dict(
            prompt_ids=prompt,
            seed=100 + i,
            temperature=0.0 if i % 2 == 0 else 0.9,
            top_p=1.0 if i % 3 == 0 else 0.8,
            max_tokens=[20, 7, 13, 20, 1, 16, 9, 20][i],
            top_logprobs=[3, 1, 5, 2, 4, 3, 1, 2][i],
        )
        settings.update(overrides)
        specs.append(SequenceSpec(**settings))
    return specs


def alone(teacher: HFTeacher, spec: SequenceSpec, eos_ids=None):
    eos = teacher.eos_ids if eos_ids is None else eos_ids
    return decode_padded(teacher.model, teacher.tokenizer, [spec], eos, teacher.pad_id)[0]


def cpu_engine(teacher: HFTeacher, slots=3, **kw) -> DecodeEngine:
    kw = {"sync_every": 5, "prefill_rows": 2, "prefill_chunk": 16, **kw}
    return DecodeEngine(teacher.model, slots=slots, context=256, graphs=False, **kw)


def run(engine: DecodeEngine, teacher: HFTeacher, specs, eos_ids=None):
    eos = teacher.eos_ids if eos_ids is None else eos_ids
    return engine.run(specs, teacher.tokenizer, eos_ids=eos, pad_id=teacher.pad_id)


def assert_same(got, want, tolerance: float) -> None:
    assert got.logprobs.target_ids.tolist() == want.logprobs.target_ids.tolist()
    assert (got.text, got.finish_reason) == (want.text, want.finish_reason)
    assert got.completion_tokens == want.completion_tokens
    assert got.logprobs.logprobs.shape == want.logprobs.logprobs.shape
    assert got.logprobs.ids.tolist() == want.logprobs.ids.tolist()
    drift = (got.logprobs.logprobs - want.logprobs.logprobs).abs().max().item()
    assert drift <= tolerance
    drift = (got.logprobs.target_logprobs - want.logprobs.target_logprobs).abs().max().item()
    assert drift <= tolerance


# ---------------------------------------------------------------------------- CPU


def test_engine_matches_the_per_token_loop(cpu_teacher):
    """8 sequences through 3 slots: refills, prompts of up to 5 prefill chunks, greedy and
    sampled rows (the same uniforms as the loop), budgets that end inside a read block."""
    specs = mixed_specs(cpu_teacher)
    got = run(cpu_engine(cpu_teacher), cpu_teacher, specs)
    for spec, generation in zip(specs, got, strict=True):
        # float32 rounding of another attention kernel: a few 1e-5 at most (see test_hf_batch_decode)
        assert_same(generation, alone(cpu_teacher, spec), 1e-3)


def test_engine_output_does_not_depend_on_the_batch(cpu_teacher):
    specs = mixed_specs(cpu_teacher)
    together = run(cpu_engine(cpu_teacher, slots=4), cpu_teacher, specs)
    order = list(range(len(specs)))
    random.Random(3).shuffle(order)
    engine = cpu_engine(cpu_teacher, slots=4)
    shuffled = run(engine, cpu_teacher, [specs[i] for i in order])
    for position, i in enumerate(order):
        assert_same(shuffled[position], together[i], 0.0)
    for i in (0, 5, 6):  # and alone, on the same engine (every slot but one idle)
        assert_same(run(engine, cpu_teacher, [specs[i]])[0], together[i], 0.0)


def with_top_k(specs: list[SequenceSpec], ks=(0, 1, 3, 8, 40)) -> list[SequenceSpec]:
    """Sampled rows with their own top-k (0: off), greedy rows unchanged."""
    return [
        SequenceSpec(**{**s.__dict__, "temperature": 1.0, "top_k": ks[i % len(ks)]})
        for i, s in enumerate(specs)
    ]


def test_engine_top_k_matches_the_per_token_loop(cpu_teacher):
    """Top-k is sampled by the same rule on the engine's per-slot settings as in the loop."""
    specs = with_top_k(mixed_specs(cpu_teacher, max_tokens=16))
    got = run(cpu_engine(cpu_teacher), cpu_teacher, specs)
    for spec, generation in zip(specs, got, strict=True):
        assert_same(generation, alone(cpu_teacher, spec), 1e-3)
        if 0 < spec.top_k <= spec.top_logprobs:  # each drawn token is among the k most likely
            best = generation.logprobs.ids[:, : spec.top_k].tolist()
            drawn = generation.logprobs.target_ids.tolist()
            assert all(t in row for t, row in zip(drawn, best, strict=True))


def test_stop_strings_inside_a_read_block(cpu_teacher):
    """The stop is found at the token that completes it, although the host reads 8 tokens at
    a time, and the text is cut where the stop string begins."""
    base = mixed_specs(cpu_teacher, max_tokens=20, stop=())
    plain = [alone(cpu_teacher, s) for s in base]
    specs = []
    for spec, generation in zip(base, plain, strict=True):
        text = generation.text
        stop = text[9:12] if len(text) >= 12 else "\x00never"
        specs.append(SequenceSpec(**{**spec.__dict__, "stop": (stop, "\x00also never")}))
    got = run(cpu_engine(cpu_teacher, sync_every=8), cpu_teacher, specs)
    stopped = 0
    for spec, generation in zip(specs, got, strict=True):
        want = alone(cpu_teacher, spec)
        assert_same(generation, want, 1e-3)
        stopped += want.finish_reason == "stop"
        assert spec.stop[0] not in generation.text
    assert stopped >= 4


def test_eos_ends_a_sequence_inside_a_read_block(cpu_teacher):
    specs = mixed_specs(cpu_teacher, temperature=0.0)
    plain = alone(cpu_teacher, specs[3])
    eos = {plain.logprobs.target_ids.tolist()[6]}  # a token the greedy decode draws
    got = run(cpu_engine(cpu_teacher, sync_every=16), cpu_teacher, specs, eos_ids=eos)
    for spec, generation in zip(specs, got, strict=True):
        assert_same(generation, alone(cpu_teacher, spec, eos_ids=eos), 1e-3)
    assert got[3].finish_reason == "stop" and got[3].completion_tokens <= 7


def test_zero_budget_and_context_checks(cpu_teacher):
    engine = cpu_engine(cpu_teacher)
    spec = SequenceSpec(prompt_ids=[5, 6], seed=0, temperature=0.0, top_p=1.0, max_tokens=0)
    (generation,) = run(engine, cpu_teacher, [spec])
    assert (generation.text, generation.completion_tokens) == ("", 0)
    assert generation.finish_reason == "length"
    long = SequenceSpec(prompt_ids=[5] * 250, seed=0, temperature=0.0, top_p=1.0, max_tokens=8)
    with pytest.raises(ValueError, match="cache positions"):
        run(engine, cpu_teacher, [long])


def test_engine_runs_a_float32_model_under_bf16_autocast(cpu_teacher):
    """On-policy sampling decodes the float32 student inside the training step's autocast:
    the projections come out in bf16 and must land in the float32 cache."""
    specs = mixed_specs(cpu_teacher, temperature=0.0, max_tokens=6)[:4]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run(cpu_engine(cpu_teacher), cpu_teacher, specs)
        want = [alone(cpu_teacher, s) for s in specs]
    for g, w in zip(got, want, strict=True):
        assert g.completion_tokens == 6 and g.logprobs.logprobs.dtype == torch.float32
        # bf16 matmuls on both sides: the first step (the prompt alone) agrees to bf16 rounding
        assert (g.logprobs.logprobs[0] - w.logprobs.logprobs[0]).abs().max().item() <= 0.15


def test_prefill_units_are_ordered_waves():
    waves = prefill_units([4, 1, 7], [[1], list(range(10)), list(range(5))], chunk=4)
    assert waves == [
        [(1, 0, [0, 1, 2, 3]), (7, 0, [0, 1, 2, 3])],
        [(1, 4, [4, 5, 6, 7])],
        [(1, 8, [8])],
    ]


def test_engine_is_chosen_only_on_cuda_for_llama_layouts(cpu_teacher, tiny_gpt2_dir):
    spec = SequenceSpec(prompt_ids=[1, 2], seed=0, temperature=0.0, top_p=1.0, max_tokens=4)
    assert unsupported_reason(cpu_teacher.model) is None
    assert engine_reason(cpu_teacher.model, [spec]) == "the model is not on a CUDA device"
    gpt2 = HFTeacher(tiny_gpt2_dir, device="cpu", dtype="float32")
    assert "gpt2" in unsupported_reason(gpt2.model)
    # off CUDA, decode_batch is the per-token loop, batched by `slots`
    specs = mixed_specs(cpu_teacher)[:4]
    got = decode_batch(
        cpu_teacher.model,
        cpu_teacher.tokenizer,
        specs,
        eos_ids=cpu_teacher.eos_ids,
        pad_id=cpu_teacher.pad_id,
        slots=2,
    )
    for start in (0, 2):
        want = decode_padded(
            cpu_teacher.model,
            cpu_teacher.tokenizer,
            specs[start : start + 2],
            cpu_teacher.eos_ids,
            cpu_teacher.pad_id,
        )
        for g, w in zip(got[start : start + 2], want, strict=True):
            assert_same(g, w, 0.0)


# ---------------------------------------------------------------------------- CUDA

# bf16 logits carry 8 significant bits: a log-prob of magnitude ~10 moves by a few 1e-2 when
# another kernel sums in another order; a wrong position or mask moves it by whole units.
BF16_TOLERANCE = 0.15


@pytest.fixture(scope="module")
def gpu_teacher(tiny_llama_dir) -> HFTeacher:
    return HFTeacher(tiny_llama_dir, device="cuda", dtype="bfloat16")


def gpu_engine(teacher: HFTeacher, slots=8) -> DecodeEngine:
    return DecodeEngine(teacher.model, slots=slots, context=256, sync_every=5, prefill_chunk=16)


@pytest.mark.gpu
def test_gpu_greedy_identical_to_one_row_decode(gpu_teacher):
    specs = mixed_specs(gpu_teacher, temperature=0.0, max_tokens=24)
    engine = gpu_engine(gpu_teacher)
    together = run(engine, gpu_teacher, specs)
    for i, spec in enumerate(specs):
        assert_same(run(engine, gpu_teacher, [spec])[0], together[i], 0.0)
    order = list(range(len(specs)))
    random.Random(1).shuffle(order)
    crowded = run(engine, gpu_teacher, [specs[i] for i in order] + specs)  # 16 through 8 slots
    for position, i in enumerate(order):
        assert_same(crowded[position], together[i], 0.0)
        assert_same(crowded[len(specs) + i], together[i], 0.0)


@pytest.mark.gpu
def test_gpu_sampled_identical_across_batches(gpu_teacher):
    specs = mixed_specs(gpu_teacher, temperature=1.0, top_p=0.9, max_tokens=24)
    engine = gpu_engine(gpu_teacher)
    together = run(engine, gpu_teacher, specs)
    subset = [6, 2, 0]
    for position, generation in enumerate(run(engine, gpu_teacher, [specs[i] for i in subset])):
        assert_same(generation, together[subset[position]], 0.0)
    assert len({g.text for g in together}) == len(specs)


@pytest.mark.gpu
def test_gpu_stop_strings_cut_the_unstopped_text(gpu_teacher):
    base = mixed_specs(gpu_teacher, temperature=0.0, max_tokens=24)
    engine = gpu_engine(gpu_teacher)
    plain = run(engine, gpu_teacher, base)
    specs = [
        SequenceSpec(**{**s.__dict__, "stop": (g.text[8:11],)})
        for s, g in zip(base, plain, strict=True)
        if len(g.text) >= 11
    ]
    assert len(specs) >= 4
    full = {tuple(s.prompt_ids): g for s, g in zip(base, plain, strict=True)}
    for spec, generation in zip(specs, run(engine, gpu_teacher, specs), strict=True):
        reference = full[tuple(spec.prompt_ids)]
        cut = reference.text.find(spec.stop[0])
        assert generation.finish_reason == "stop"
        assert generation.text == reference.text[:cut]
        n = generation.completion_tokens
        assert generation.logprobs.target_ids.tolist() == reference.logprobs.target_ids[:n].tolist()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_top_logprobs_match_the_per_token_loop(tiny_llama_dir, dtype):
    """In float32 every step's top-k agrees with the loop to rounding (until a genuine
    near-tie). In bfloat16 the first step (the prompt's distribution, through the chunked
    prefill) agrees within bf16 rounding; later steps attend to keys that each path rounded
    on its own, so there the comparison proves nothing more."""
    teacher = HFTeacher(tiny_llama_dir, device="cuda", dtype=dtype)
    tolerance = 1e-3 if dtype == "float32" else BF16_TOLERANCE
    specs = mixed_specs(teacher, temperature=0.0, max_tokens=12, top_logprobs=5)
    got = run(gpu_engine(teacher), teacher, specs)
    compared = 0
    for spec, generation in zip(specs, got, strict=True):
        want = alone(teacher, spec)
        mine, theirs = generation.logprobs, want.logprobs
        steps = min(len(mine.target_ids), len(theirs.target_ids))
        for step in range(steps if dtype == "float32" else 1):
            drift = (mine.logprobs[step] - theirs.logprobs[step]).abs().max().item()
            assert drift <= tolerance, f"step {step}: {drift}"
            compared += 1
            if mine.target_ids[step] != theirs.target_ids[step]:
                margin = (theirs.logprobs[step, 0] - theirs.logprobs[step, 1]).item()
                assert margin <= 2 * tolerance
                break
    assert compared >= (40 if dtype == "float32" else len(specs))


@pytest.mark.gpu
def test_gpu_teacher_generate_takes_the_engine(gpu_teacher):
    from kdlang.runtime.teachers import GenerationRequest

    prompts = [" ".join(CORPUS[i : i + 3]) for i in range(6)]
    requests = [GenerationRequest(prompt=p, max_tokens=10, temperature=0.0) for p in prompts]
    first = gpu_teacher.generate(requests)
    assert "_kdlang_decode_engine" in gpu_teacher.model.__dict__
    again = gpu_teacher.generate(list(reversed(requests)))
    assert [g[0].text for g in first] == [g[0].text for g in reversed(again)]
    assert torch.cuda.is_available()


@pytest.mark.gpu
def test_gpu_sample_next_top_k_matches_the_cpu():
    """The same float32 logits (with exact ties, rounded to quarters) and uniforms give the same
    tokens on the GPU as on the CPU, for rows of their own temperature, top-k and top-p."""
    from kdlang.runtime.teachers.hf_decode import sample_next

    g = torch.Generator().manual_seed(0)
    rows, vocab = 512, 1000
    logits = (torch.randn(rows, vocab, generator=g) * 4).round() / 4
    temperature = torch.tensor([0.0, 0.7, 1.0, 1.3] * (rows // 4))
    top_p = torch.tensor([1.0, 0.9, 0.5, 1.0, 0.95, 0.3, 1.0, 0.8] * (rows // 8))
    top_k = torch.tensor([0, 1, 2, 5, 50, 0, 999, 1000] * (rows // 8))
    uniforms = torch.rand(rows, generator=g)
    on_cpu = sample_next(logits, temperature, top_p, uniforms, top_k=top_k)
    cuda = [t.cuda() for t in (logits, temperature, top_p, uniforms)]
    on_gpu = sample_next(*cuda, top_k=top_k.cuda())
    assert torch.equal(on_gpu.cpu(), on_cpu)


@pytest.mark.gpu
def test_gpu_float32_engine_top_k_gives_the_per_token_loop_tokens(tiny_llama_dir):
    teacher = HFTeacher(tiny_llama_dir, device="cuda", dtype="float32")
    specs = with_top_k(mixed_specs(teacher, max_tokens=16, top_logprobs=0))
    got = run(gpu_engine(teacher), teacher, specs)
    for spec, generation in zip(specs, got, strict=True):
        want = alone(teacher, spec)
        assert (generation.text, generation.completion_tokens) == (
            want.text,
            want.completion_tokens,
        )


@pytest.mark.gpu
def test_gpu_top_k_identical_across_batches(gpu_teacher):
    specs = with_top_k(mixed_specs(gpu_teacher, max_tokens=24, top_p=0.9))
    engine = gpu_engine(gpu_teacher)
    together = run(engine, gpu_teacher, specs)
    for i in (7, 3, 1):
        assert_same(run(engine, gpu_teacher, [specs[i]])[0], together[i], 0.0)
