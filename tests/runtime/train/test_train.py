"""Training through ``kdlang run``: every loss term learns, from an online teacher and from a
``teacher_logits`` cache; DPO, on-policy distillation, LoRA; what the artifact holds."""

from __future__ import annotations

import json
import math

import pytest

from tests.runtime.train.support import artifact, metrics, models, node, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

DATA = """
dataset rows = inline([
  {q: "What is 12 plus 7?", a: "12 + 7 = 19. #### 19"},
  {q: "What is 30 minus 4?", a: "30 - 4 = 26. #### 26"},
  {q: "A farmer has 3 cows and buys 5 more. How many cows?", a: "3 + 5 = 8. #### 8"},
  {q: "Write a short poem about the sea.", a: "The wind and the light of the morning."},
])
prompt ask = \"\"\"Q: {{ q }}
A:\"\"\"
"""

COMMON = "student = student  data = rows  prompt = ask  target = a  max_steps = 30  batch = 4"

TERMS = {
    "sft": "loss sft weight 1.0",
    "forward_kl": "loss forward_kl weight 1.0 temperature 2.0",
    "reverse_kl": "loss reverse_kl weight 1.0",
    "jsd": "loss jsd(beta = 0.5) weight 1.0",
    "tvd": "loss tvd weight 1.0",
    "skew_kl": "loss skew_kl(alpha = 0.1) weight 1.0",
    "skew_rkl": "loss skew_rkl(alpha = 0.1) weight 1.0",
    "hidden_mse": "loss hidden_mse(layers = [[1, 1], [2, 2]]) weight 1.0",
    "hidden_cosine": "loss hidden_cosine(layers = [[2, 2]]) weight 1.0",
}


def test_each_loss_term_decreases_over_30_steps(tmp_path, tiny_pair):
    trains = "\n".join(
        f"train t_{name} {{\n  {COMMON}  teacher = teacher  lr = 3e-3\n  {line}\n}}"
        for name, line in TERMS.items()
    )
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + trains))
    for name in TERMS:
        records = metrics(report, f"t_{name}")
        assert [r["step"] for r in records] == list(range(30))
        first, last = records[0][name], records[-1][name]
        assert last < 0.9 * first, (name, first, last)
        assert records[-1]["loss"] == pytest.approx(last)


def test_cached_top_k_trains_and_the_artifact_is_complete(tmp_path, tiny_pair):
    body = """
    stage soft = teacher_logits(rows) { teacher = teacher  prompt = ask  target = a  top_k = 16 }
    train distill {
      student = student  data = soft  prompt = ask  target = a  max_steps = 30  batch = 4
      lr = 3e-3  lr_schedule = cosine(warmup = 10%)  grad_accum = 2
      loss sft weight 0.5
      loss forward_kl weight linear(0.0 -> 1.0, over = 30%) temperature 2.0
    }
    """
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + body))
    records = metrics(report, "distill")
    assert records[-1]["forward_kl"] < 0.9 * records[0]["forward_kl"]
    assert records[-1]["sft"] < 0.7 * records[0]["sft"]
    assert [r["weight/forward_kl"] for r in records[:10]] == pytest.approx(
        [min(1.0, s / 9) for s in range(10)]
    )
    assert records[0]["lr"] == pytest.approx(3e-3 / 3)  # warmup: step 1 of 3
    folder = artifact(report, "distill")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["pictures"] == ["loss_curves.png"]
    assert manifest["loss_path"] == "materialized"
    assert (folder / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert (folder / "model" / "config.json").is_file()
    assert (folder / "model" / "tokenizer.json").is_file()
    assert "distill-loss_curves.png" in (tmp_path / "runs" / "t" / "report.md").read_text()


def test_dpo_reduces_the_pair_loss(tmp_path, tiny_pair):
    body = """
    dataset prefs = inline([
      {q: "What is 12 plus 7?", chosen: "19", rejected: "21"},
      {q: "What is 30 minus 4?", chosen: "26", rejected: "34"},
      {q: "How many cows?", chosen: "8 cows.", rejected: "I do not know."},
      {q: "Say hello.", chosen: "Hello!", rejected: "No."},
    ])
    train prefer {
      student = student  data = prefs  prompt = ask  max_steps = 30  batch = 4  lr = 3e-3
      loss dpo(beta = 0.5) weight 1.0
    }
    """
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + body))
    records = metrics(report, "prefer")
    # The policy starts as its reference: the loss is log 2.
    assert records[0]["dpo"] == pytest.approx(0.693147, abs=1e-4)
    assert records[-1]["dpo"] < 0.3
    assert records[0]["beta/dpo"] == 0.5


def test_on_policy_steps_sample_from_the_student_and_train(tmp_path, tiny_pair):
    body = f"""
    train gkd {{
      {COMMON}  teacher = teacher  lr = 3e-3
      on_policy = linear(0.0 -> 1.0)  sample_temperature = 1.0  max_new_tokens = 6
      loss sft weight 1.0
      loss forward_kl weight 1.0
    }}
    """
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + body))
    records = metrics(report, "gkd")
    on = [r for r in records if r["on_policy_batch"]]
    off = [r for r in records if not r["on_policy_batch"]]
    assert 5 <= len(on) <= 25 and off
    assert records[0]["on_policy"] == 0.0 and records[-1]["on_policy"] == pytest.approx(29 / 30)
    # Samples are at most 6 tokens per row; the data's targets are longer.
    assert all(r["tokens"] <= 4 * 6 for r in on)
    assert all(r["tokens"] > 4 * 6 for r in off)
    assert all("sft" not in r for r in on) and all("sft" in r for r in off)
    assert on[-1]["forward_kl"] < on[0]["forward_kl"]


def test_lora_student_trains_adapters_and_evaluate_and_export_use_it(tmp_path, tiny_pair):
    body = f"""
    model adapted = hf("{tiny_pair.student}", lora = lora(r = 4, alpha = 8.0))
    train tuned {{
      student = adapted  data = rows  prompt = ask  target = a  max_steps = 20  batch = 4
      lr = 1e-2
      loss sft weight 1.0
    }}
    eval check = evaluate(tuned, rows) {{
      prompt = ask  max_tokens = 12
      metric exact_match(output, a)
      metric long = len(output) > 3
      metric perplexity(a)
    }}
    export tuned to "exported/merged"
    export tuned to "exported/adapter" {{ merge_lora = false }}
    """
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + body))
    records = metrics(report, "tuned")
    assert records[-1]["sft"] < 0.8 * records[0]["sft"]
    folder = artifact(report, "tuned")
    assert (folder / "adapter" / "adapter_config.json").is_file()
    evaluation = next(e for e in report["evaluations"] if e["name"] == "check")
    assert evaluation["rows"] == 4 and evaluation["model"] == "tuned"
    assert set(evaluation["metrics"]) == {"exact_match", "long", "perplexity"}
    # scored on the trained student: lower than the untrained one's exp(cross-entropy)
    assert 1.0 <= evaluation["metrics"]["perplexity"] < math.exp(records[0]["sft"]) / 10
    predictions = (artifact(report, "check") / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 4 and "output" in json.loads(predictions[0])
    merged, adapter = tmp_path / "exported" / "merged", tmp_path / "exported" / "adapter"
    assert (merged / "model.safetensors").is_file() and not (
        merged / "adapter_config.json"
    ).exists()
    assert (adapter / "adapter_config.json").is_file()
    card = (merged / "README.md").read_text()
    assert "sft" in card and "exact_match" in card and "LoRA r = 4" in card
    assert not list(tmp_path.glob("exported/.*"))  # no temporary folders left
    again = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + body))
    assert node(again, "export:tuned")["status"] == "cached"


def test_tokenizers_with_different_vocabularies_are_refused(tiny_pair, tiny_other_vocab_dir):
    """The runtime check (the checker compares local tokenizer files; hub models are compared
    once loaded, before the first step)."""
    from kdlang.runtime.errors import RunError
    from kdlang.runtime.train.models import check_same_vocab
    from transformers import AutoTokenizer

    student = AutoTokenizer.from_pretrained(tiny_pair.student)
    check_same_vocab(student, AutoTokenizer.from_pretrained(tiny_pair.teacher), "s", "t")
    other = AutoTokenizer.from_pretrained(tiny_other_vocab_dir)
    with pytest.raises(RunError, match=r"do not share a vocabulary.*320 vs 300 tokens"):
        check_same_vocab(student, other, "student", "other")


def test_gradient_checkpointing_follows_the_same_trajectory(tmp_path, tiny_pair):
    """Recomputing the decoder layers in the backward pass changes memory, not the numbers:
    the same losses and gradient norms step by step, for a full and for a LoRA student."""
    loss = "loss sft weight 0.5\n  loss forward_kl weight 1.0 temperature 2.0"
    runs = ""
    for name, student in (("full", "student"), ("lora", "adapted")):
        for suffix, extra in (("", ""), ("_ckpt", "gradient_checkpointing = true")):
            runs += f"""
    train {name}{suffix} {{
      student = {student}  teacher = teacher  data = rows  prompt = ask  target = a
      max_steps = 6  batch = 4  lr = 1e-2  {extra}
      {loss}
    }}"""
    body = f'model adapted = hf("{tiny_pair.student}", lora = lora(r = 4, alpha = 8.0))\n' + runs
    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + DATA + body))
    for name in ("full", "lora"):
        plain, recomputed = metrics(report, name), metrics(report, f"{name}_ckpt")
        assert len(plain) == len(recomputed) == 6
        for a, b in zip(plain, recomputed, strict=True):
            for key in ("loss", "sft", "forward_kl", "grad_norm"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (name, a["step"], key)
        assert plain[-1]["loss"] < plain[0]["loss"]


def test_gradient_checkpointing_recomputes_the_decoder_layers(tiny_pair):
    """With it, each decoder layer's insides run twice per step: again in the backward pass."""
    import torch
    from kdlang.runtime.train.models import enable_gradient_checkpointing
    from transformers import AutoModelForCausalLM

    def layer_calls(checkpointing: bool) -> int:
        model = AutoModelForCausalLM.from_pretrained(tiny_pair.student)
        model.train()
        if checkpointing:
            enable_gradient_checkpointing(model)
        calls = []
        mlp = model.model.layers[0].mlp
        forward = mlp.forward
        mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
        ids = torch.arange(8).unsqueeze(0)
        model(input_ids=ids, labels=ids).loss.backward()
        return len(calls)

    assert layer_calls(False) == 1
    assert layer_calls(True) == 2
