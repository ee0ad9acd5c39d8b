"""Captured logits in the layouts other tools publish (axolotl, vLLM prompt_logprobs, DistillKit)
decode to the teacher's top-k as it was captured, are re-tempered as documented, and train a
student exactly as kdlang's own layout of the same logits does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from kdlang.runtime.captured import read_captured, retemper

from kdlang.check import check_files
from kdlang.ir.captured import CapturedLogits
from kdlang.syntax.span import Span
from tests.runtime.train import captured_files as cf
from tests.runtime.train.support import metrics, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

SPAN = Span("test.kd", 1, 1, 1, 2)
ROWS = [
    {"q": "What is 12 plus 7?", "a": "12 + 7 = 19. #### 19"},
    {"q": "What is 30 minus 4?", "a": "30 - 4 = 26."},
    {"q": "Write a short poem about the sea.", "a": "The wind and the light of the morning."},
]
K = 5


def render(row: dict) -> str:
    return f"Q: {row['q']}\nA:"


@pytest.fixture(scope="module")
def captures(tiny_pair):
    return cf.capture(tiny_pair.teacher, tiny_pair.tokenizer, ROWS, render, "a", K)


def artifact(tmp_path, rows: list[dict]):
    """A data artifact holding ``rows``, as a dataset stage writes it."""
    from kdlang.runtime.data import write_rows

    folder = tmp_path / "artifact"
    folder.mkdir(exist_ok=True)
    write_rows(rows, folder)
    return folder


def spec(**settings) -> CapturedLogits:
    return CapturedLogits(span=SPAN, **settings)


# --------------------------------------------------------------------------- decoding


def assert_positions(decoded, captures, *, atol=0.0):
    for row, c in enumerate(captures):
        assert decoded["tokens"][row].tolist() == c.sequence
        assert decoded["valid"][row].tolist() == [False] + [True] * (len(c.sequence) - 1)
        assert (decoded["topk_ids"][row][1:] == c.ids[1:]).all()
        np.testing.assert_allclose(decoded["topk_logprobs"][row][1:], c.logprobs[1:], atol=atol)


def test_axolotl_rows_decode_to_the_captured_top_k(tmp_path, captures):
    rows, decoded = read_captured(
        artifact(tmp_path, cf.axolotl_rows(captures)), spec(layout="axolotl")
    )
    assert rows == [
        {**r, "labels": [-100] * c.start + c.sequence[c.start :]}
        for r, c in zip(ROWS, captures, strict=True)
    ]
    renormalized = cf.renormalized(captures)
    # axolotl keeps prompt positions' distributions but masks them: only the target's count
    for row, c in enumerate(captures):
        assert decoded["valid"][row].tolist() == [False] * c.start + [True] * (
            len(c.sequence) - c.start
        )
        assert (decoded["topk_ids"][row][c.start :] == c.ids[c.start :]).all()
        np.testing.assert_allclose(
            decoded["topk_logprobs"][row][c.start :],
            renormalized[row].logprobs[c.start :],
            atol=1e-6,
        )


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "lists"])
def test_prompt_logprobs_decode_to_the_top_k_without_the_added_scored_token(
    tmp_path, captures, as_json
):
    rows, decoded = read_captured(
        artifact(tmp_path, cf.prompt_logprobs_rows(captures, as_json)),
        spec(layout="prompt_logprobs"),
    )
    assert rows == ROWS
    assert_positions(decoded, captures, atol=1e-6)


def test_distillkit_rows_decode_as_its_compressor_wrote_them(tmp_path, captures):
    config = cf.write_config(tmp_path / "compression_config.yaml")
    rows, decoded = read_captured(
        artifact(tmp_path, cf.distillkit_rows(captures)), spec(layout="distillkit"), config
    )
    assert rows == ROWS
    for row, c in enumerate(captures):
        _, _, expected = cf.distillkit_encode(c.logprobs[1:], c.ids[1:], cf.DISTILLKIT_CONFIG)
        assert (decoded["topk_ids"][row][1:] == c.ids[1:]).all()
        np.testing.assert_allclose(decoded["topk_logprobs"][row][1:], expected, atol=1e-5)
        # the exact part is exact; the tail is close to the teacher's
        np.testing.assert_allclose(
            decoded["topk_logprobs"][row][1:, :2], c.logprobs[1:, :2], atol=1e-6
        )
        assert np.abs(decoded["topk_logprobs"][row][1:] - c.logprobs[1:]).max() < 0.1


def test_distillkit_delta_encoding_is_a_running_sum(tmp_path):
    from kdlang.runtime.captured_distillkit import decode_logprobs

    from kdlang.check.captured import compression_config

    config = compression_config(
        {"d": 16, "k": 3, "exact_k": 3, "delta_encoding": True, "residual_bins": []}
    )
    deltas = np.array([[-0.5, -1.25, -2.0]], np.float32)
    got = decode_logprobs(deltas.astype("<f4").view(np.uint8), config)
    assert got.tolist() == [[-0.5, -1.75, -3.75]]


def test_kdlang_layout_with_its_own_column_names(tmp_path, captures):
    eos = 2
    rows = [
        {
            ("ids" if k == "topk_ids" else "lps" if k == "topk_logprobs" else k): v
            for k, v in r.items()
        }
        for r in cf.kdlang_rows(captures, eos)
    ]
    _, decoded = read_captured(artifact(tmp_path, rows), spec(ids="ids", logprobs="lps"))
    for row, c in enumerate(captures):
        np.testing.assert_allclose(decoded["topk_logprobs"][row], c.logprobs[c.start :], atol=1e-6)


# --------------------------------------------------------------------------- re-tempering


def test_retempering_equals_the_float64_formula():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 40)) * 2
    full = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    top = np.sort(full, -1)[:, ::-1][:, :4].copy()
    captured_at, loss_at = 0.7, 2.0
    kept = retemper(top.astype(np.float32), captured_at).astype(np.float64)
    # what a loss at T sees under renormalize: log_softmax(kept / T) = p_c^(T_c/T), renormalized
    seen = torch.log_softmax(torch.from_numpy(kept) / loss_at, -1).numpy()
    p = np.exp(top) ** (captured_at / loss_at)
    np.testing.assert_allclose(seen, np.log(p / p.sum(-1, keepdims=True)), rtol=1e-5, atol=1e-6)
    # and with the missing mass kept as one more outcome (keep / uniform): (p, 1 − M)^(T_c/T)
    rest = 1 - np.exp(top).sum(-1, keepdims=True)
    both = np.concatenate([np.exp(top), rest], -1) ** (captured_at / loss_at)
    both = both / both.sum(-1, keepdims=True)
    from kdlang.runtime.losses.distill import topk_rest_logprobs

    b_k, b_rest = topk_rest_logprobs(None, torch.from_numpy(kept), loss_at, torch.float64)
    np.testing.assert_allclose(b_k.exp().numpy(), both[:, :-1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(b_rest.exp().numpy(), both[:, -1:], rtol=1e-5, atol=1e-7)
    assert retemper(top.astype(np.float32), 1.0).tolist() == top.astype(np.float32).tolist()


# --------------------------------------------------------------------------- trains


def train_recipe(folder, pair, data: str, *, loss: str = "loss forward_kl weight 1.0", steps=6):
    return write_recipe(
        folder,
        f'model student = hf("{pair.student}")\n'
        + data
        + 'prompt ask = """Q: {{ q }}\nA:"""\n'
        + "train distill {\n"
        + "  student = student  data = soft  prompt = ask  target = a"
        + f"  max_steps = {steps}  batch = 3\n  lr = 3e-3\n  {loss}\n}}\n",
    )


def checked(recipe):
    diagnostics, _ = check_files([str(recipe)])
    assert [f"{d.code} {d.message}" for d in diagnostics if d.severity.name == "ERROR"] == []
    return recipe


def test_a_train_from_axolotl_rows_equals_one_from_kdlang_rows_step_for_step(
    tmp_path, tiny_pair, captures
):
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(tiny_pair.tokenizer).eos_token_id
    # the same float32 numbers in both files: axolotl's are renormalized over the k ids
    own = cf.write(tmp_path / "kdlang.parquet", cf.kdlang_rows(cf.renormalized(captures), eos))
    axolotl = cf.write(tmp_path / "axolotl.parquet", cf.axolotl_rows(captures))
    a = run_recipe(
        checked(train_recipe(tmp_path / "a", tiny_pair, f'dataset soft = parquet("{own}")\n'))
    )
    b = run_recipe(
        checked(
            train_recipe(
                tmp_path / "b",
                tiny_pair,
                f'dataset soft = parquet("{axolotl}") {{\n  logits = topk(layout = axolotl)\n}}\n',
            )
        )
    )
    x, y = metrics(a, "distill"), metrics(b, "distill")
    assert [r["step"] for r in y] == list(range(6))
    for first, second in zip(x, y, strict=True):
        assert first["tokens"] == second["tokens"]
        assert first["forward_kl"] == pytest.approx(second["forward_kl"], rel=1e-6, abs=1e-7)
        assert first["loss"] == pytest.approx(second["loss"], rel=1e-6, abs=1e-7)


def student_logits(pair, captures) -> list[torch.Tensor]:
    """The untrained student's logits (float64) at the positions predicting each row's
    target tokens: what the first step's loss is computed from."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(pair.student, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for c in captures:
            logits = model(input_ids=torch.tensor([c.sequence])).logits[0].double()
            out.append(logits[c.start - 1 : len(c.sequence) - 1])
    return out


def axolotl_topk_forward_kl(logits, captures, temperature: float, stop=None) -> float:
    """axolotl's top-k forward KL: teacher log-probs renormalized over the k ids and
    re-tempered p^(1/T) at preparation, the student's logits / T log-softmaxed over the whole
    vocabulary and gathered at the k ids, summed over the kept entries and divided by their
    number (positions × k)."""
    total, entries = 0.0, 0
    for z, c in zip(logits, captures, strict=True):
        ids = torch.from_numpy(c.ids[c.start : stop]).long()
        p = torch.from_numpy(np.exp(c.logprobs[c.start : stop]))
        p = p / p.sum(-1, keepdim=True)
        p = p ** (1.0 / temperature)
        p = p / p.sum(-1, keepdim=True)
        student = torch.log_softmax(z[: len(ids)] / temperature, -1).gather(-1, ids)
        total += float((p * (p.log() - student)).sum())
        entries += ids.numel()
    return total / entries


@pytest.mark.parametrize("stored_at", [1.0, 2.0])
def test_axolotl_top_k_forward_kl_with_its_entry_count_and_re_tempering(
    tmp_path, tiny_pair, captures, stored_at
):
    """Rows prepared at axolotl's ``kd_temperature`` 1 or 2 (declared as the capture
    temperature) give the same first step at T = 2: axolotl's loss, in float64."""
    rows = cf.axolotl_rows(captures, temperature=stored_at)
    data = cf.write(tmp_path / "axolotl.parquet", rows)
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset soft = parquet("{data}") {{\n'
        f"  logits = topk(layout = axolotl, temperature = {stored_at})\n}}\n",
        loss="loss forward_kl(reduction = topk_entries) weight 1.0 temperature 2.0",
        steps=1,
    )
    first = metrics(run_recipe(checked(recipe)), "distill")[0]
    expected = axolotl_topk_forward_kl(student_logits(tiny_pair, captures), captures, 2.0)
    assert first["forward_kl"] == pytest.approx(expected, rel=1e-5)


def test_easydistill_unnormalized_top_10_forward_kl(tmp_path, tiny_pair):
    """EasyDistill's form (as described): the top-10 probabilities as captured, not
    renormalized, Σ_k p_k (log p_k − log q_k), averaged over the target tokens: `keep`."""
    captures = cf.capture(tiny_pair.teacher, tiny_pair.tokenizer, ROWS, render, "a", 10)
    data = cf.write(tmp_path / "p.parquet", cf.prompt_logprobs_rows(captures, as_json=True))
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset soft = parquet("{data}") {{\n  logits = topk(layout = prompt_logprobs)\n}}\n',
        loss="loss forward_kl(topk_mass = keep) weight 1.0",
        steps=1,
    )
    first = metrics(run_recipe(checked(recipe)), "distill")[0]
    total, positions = 0.0, 0
    for z, c in zip(student_logits(tiny_pair, captures), captures, strict=True):
        lp = torch.from_numpy(c.logprobs[c.start :])
        q = torch.log_softmax(z, -1).gather(-1, torch.from_numpy(c.ids[c.start :]).long())
        total += float((lp.exp() * (lp - q)).sum())
        positions += len(lp)
    assert first["forward_kl"] == pytest.approx(total / positions, rel=1e-5)


def test_a_student_sequence_longer_than_the_teachers_is_cut(tmp_path, tiny_pair, captures):
    """The teacher's positions end 3 tokens before the student's sequence: those 3 target
    tokens get no KD loss (the others do), and the run goes on."""
    cut = [
        cf.Capture(c.text, c.sequence[:-3], c.start, c.ids[:-3], c.logprobs[:-3]) for c in captures
    ]
    data = cf.write(tmp_path / "axolotl.parquet", cf.axolotl_rows(cut))
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset soft = parquet("{data}") {{\n  logits = topk(layout = axolotl)\n}}\n',
        loss="loss forward_kl(reduction = topk_entries) weight 1.0 temperature 2.0",
        steps=1,
    )
    first = metrics(run_recipe(checked(recipe)), "distill")[0]
    expected = axolotl_topk_forward_kl(student_logits(tiny_pair, captures), captures, 2.0, -3)
    assert first["forward_kl"] == pytest.approx(expected, rel=1e-5)


def failure(report, name="distill") -> str:
    return next(n for n in report["nodes"] if n["name"] == name)["error"]


def test_tokens_that_differ_from_the_teachers_are_an_error_naming_row_and_position(
    tmp_path, tiny_pair, captures
):
    rows = cf.axolotl_rows(captures)
    at = captures[1].start + 2
    rows[1]["input_ids"][at] = (rows[1]["input_ids"][at] + 1) % 200
    data = cf.write(tmp_path / "axolotl.parquet", rows)
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset soft = parquet("{data}") {{\n  logits = topk(layout = axolotl)\n}}\n',
        steps=1,
    )
    error = failure(run_recipe(checked(recipe), expect=1))
    assert "row 2: the student's tokens differ" in error and f"at position {at} " in error
    assert "30 minus" not in error  # no row text quoted


def test_captured_ids_beyond_the_students_vocabulary_are_an_error(tmp_path, tiny_pair, captures):
    rows = cf.axolotl_rows(captures)
    rows[0]["target_token_ids"][captures[0].start][0] = 100_000
    # a parquet file's statistics show the id to `kdlang check` (KD0334); a jsonl file's rows
    # are read by the run, which stops before the first step
    data = cf.write(tmp_path / "axolotl.parquet", rows)
    declared = f'dataset soft = parquet("{data}") {{\n  logits = topk(layout = axolotl)\n}}\n'
    diagnostics, _ = check_files([str(train_recipe(tmp_path / "check", tiny_pair, declared))])
    assert [d.code for d in diagnostics] == ["KD0334"]
    lines = tmp_path / "axolotl.jsonl"
    lines.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset soft = jsonl("{lines}") {{\n  logits = topk(layout = axolotl)\n}}\n',
        steps=1,
    )
    assert "token id 100000 is outside the student's" in failure(run_recipe(recipe, expect=1))


def test_a_distillkit_dataset_trains(tmp_path, tiny_pair, captures):
    config = cf.write_config(tmp_path / "compression_config.yaml")
    data = cf.write(tmp_path / "dk.parquet", cf.distillkit_rows(captures))
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset soft = parquet("{data}") {{\n'
        f'  logits = topk(layout = distillkit, config = "{config}")\n}}\n',
        loss="loss forward_kl(topk_mass = uniform) weight 1.0",
        steps=2,
    )
    runs = metrics(run_recipe(checked(recipe)), "distill")
    assert [r["step"] for r in runs] == [0, 1]
    assert all(np.isfinite(r["forward_kl"]) and r["forward_kl"] > 0 for r in runs)


def test_a_filter_between_the_captured_dataset_and_the_train(tmp_path, tiny_pair, captures):
    data = cf.write(tmp_path / "axolotl.parquet", cf.axolotl_rows(captures))
    recipe = train_recipe(
        tmp_path / "run",
        tiny_pair,
        f'dataset captured = parquet("{data}") {{\n  logits = topk(layout = axolotl)\n}}\n'
        "stage soft = filter(captured) {\n  keep len(q) < 25\n}\n",
        loss="loss forward_kl(reduction = topk_entries) weight 1.0 temperature 2.0",
        steps=1,
    )
    report = run_recipe(checked(recipe))
    first = metrics(report, "distill")[0]
    kept = [c for c in captures if len(c.text["q"]) < 25]
    assert len(kept) == 2
    logits = student_logits(tiny_pair, kept)
    assert first["forward_kl"] == pytest.approx(
        axolotl_topk_forward_kl(logits, kept, 2.0), rel=1e-5
    )
