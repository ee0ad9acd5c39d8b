"""``strategy = "fsdp"``: two processes (Gloo on CPU) shard the student with FSDP2 and follow the
single-process trajectory — materialized logits, the fused-linear path (the lm_head run outside
``forward`` through the root's registered forward method), tied embeddings, a cached top-k,
hidden-state projections, on-policy samples, DPO pairs, a LoRA student (frozen and trained parameters in
one unit), a rank with no rows (filler micro-batches) and a checkpoint written from gathered full
state dicts."""

from __future__ import annotations

import pytest

from tests.runtime.distributed.support import launch, report
from tests.runtime.train.support import artifact, metrics, node, run_recipe, write_recipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRAINS = ("plain", "fused", "tied", "adapted", "prefer")


@pytest.fixture(scope="module")
def tied_pair(tiny_root, tiny_tokenizer_dir):
    """GPT-2 student and teacher without dropout (so two processes can match one), with tied
    embeddings (the lm_head is the embedding matrix, in the root unit)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    folders = []
    for name, width, seed in (("tied_student", 32, 3), ("tied_teacher", 48, 4)):
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=width, n_layer=2, n_head=4, n_positions=256,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.6,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
        assert model.lm_head.weight is model.transformer.wte.weight
        model.save_pretrained(tiny_root / name)
        tokenizer.save_pretrained(tiny_root / name)
        folders.append(tiny_root / name)
    return folders


def body(pair, tied) -> str:
    rows = ", ".join(
        f'{{q: "What is {i} plus {i + 3}?", a: "{2 * i + 3}, because {i} + {i + 3} = {2 * i + 3}"}}'
        for i in range(5)
    )
    # lr sets how far the two runs can drift apart: AdamW normalises each gradient, so where a
    # gradient is at the level of fp32 rounding (the two process counts sum it in another
    # order) the step is still up to ~lr (bias-corrected |m/sqrt(v)| <= 1.01 over 6 steps), in
    # a direction the rounding picks. That drift, and the logit difference it causes, is
    # proportional to lr x steps: at lr = 3e-3 one x86 CPU measured 1.07e-4 x max|logits| for
    # `plain` against the bound 1e-4 below; at 1e-3 it is a third of that.
    common = "max_steps = 6  batch = 4  grad_accum = 2  lr = 1e-3  checkpoint_every = 3"
    return f"""
model teacher = hf("{pair.teacher}")
model student = hf("{pair.student}")
model gteacher = hf("{tied[1]}")
model gstudent = hf("{tied[0]}")
model lstudent = hf("{pair.student}", lora = lora(r = 4, alpha = 8, dropout = 0.0))
dataset qs = inline([{rows}])
prompt ask = "Q: {{{{ q }}}}\\nA:"
stage soft = teacher_logits(qs) {{ teacher = gteacher  prompt = ask  target = a  top_k = 8 }}
train plain {{
  student = student  teacher = teacher  data = qs  prompt = ask  target = a
  {common}  strategy = fsdp  loss_path = materialized
  loss sft weight 0.5
  loss forward_kl weight 1.0 temperature 2.0
  loss hidden_mse(layers = [[-1, -1]]) weight 0.3
}}
train fused {{
  student = student  teacher = teacher  data = qs  prompt = ask  target = a
  {common}  strategy = fsdp  loss_path = fused_linear
  on_policy = 0.5  max_new_tokens = 4
  loss sft weight 0.5
  loss jsd(beta = 0.3) weight 1.0 temperature 1.5
}}
train adapted {{
  student = lstudent  teacher = teacher  data = qs  prompt = ask  target = a
  {common}  strategy = fsdp  loss_path = fused_linear
  loss sft weight 1.0
  loss forward_kl weight 1.0
}}
dataset prefs = inline([
  {{q: "What is 12 plus 7?", chosen: "19", rejected: "21"}},
  {{q: "What is 30 minus 4?", chosen: "26", rejected: "34"}},
  {{q: "How many cows?", chosen: "8 cows.", rejected: "I do not know."}},
  {{q: "Say hello.", chosen: "Hello!", rejected: "No."}},
  {{q: "Name a sea animal.", chosen: "A fish.", rejected: "A car."}},
])
train prefer {{
  student = student  data = prefs  prompt = ask  {common}  strategy = fsdp
  loss dpo(beta = 0.5) weight 1.0
}}
train tied {{
  student = gstudent  data = soft  prompt = ask  target = a
  {common}  strategy = fsdp  loss_path = fused_linear
  loss sft weight 0.5
  loss forward_kl weight 1.0
}}
"""


def weights(report_document, name):
    from safetensors.torch import load_file

    return load_file(artifact(report_document, name) / "model" / "model.safetensors")


def logits(report_document, name):
    """The trained student's logits on a fixed batch of token ids."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(artifact(report_document, name) / "model")
    ids = torch.arange(60).reshape(3, 20) % model.config.vocab_size
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_fsdp_on_two_processes_matches_one_process(tmp_path, tiny_pair, tied_pair):
    text = body(tiny_pair, tied_pair)
    single = run_recipe(write_recipe(tmp_path / "single", text))
    recipe = write_recipe(tmp_path / "multi", text)
    done = launch(recipe, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    document = report(recipe)
    for name in TRAINS:
        entry = node(document, name)
        assert entry["status"] == "ran" and entry["stats"]["processes"] == 2
        assert (
            entry["stats"]["loss_path"]["path"] == node(single, name)["stats"]["loss_path"]["path"]
        )
        found, expected = metrics(document, name), metrics(single, name)
        assert [r["step"] for r in found] == list(range(6))
        for a, b in zip(found, expected, strict=True):
            assert a["tokens"] == b["tokens"] and a["on_policy_batch"] == b["on_policy_batch"]
            for key in ("loss", "grad_norm", *(k for k in b if k.split("#")[0] in LOSSES)):
                assert a[key] == pytest.approx(b[key], rel=2e-4, abs=1e-6), (name, a["step"], key)
        trained, reference = weights(document, name), weights(single, name)
        assert trained.keys() == reference.keys()
        for key, value in reference.items():
            assert trained[key].dtype == value.dtype and trained[key].shape == value.shape
        # The trained students compute the same function (weights whose gradient is zero in
        # exact arithmetic, e.g. attention key biases, follow AdamW's reading of rounding noise
        # and need not agree).
        found, expected = logits(document, name), logits(single, name)
        assert (found - expected).abs().max() < 1e-4 * expected.abs().max(), name
    assert any(r["on_policy_batch"] for r in metrics(single, "fused"))
    assert metrics(single, "plain")[-1]["loss"] < metrics(single, "plain")[0]["loss"]
    assert (artifact(document, "adapted") / "adapter").is_dir()
    assert node(single, "fused")["stats"]["loss_path"]["path"] == "fused_linear"


LOSSES = {"sft", "forward_kl", "jsd", "hidden_mse", "dpo"}
