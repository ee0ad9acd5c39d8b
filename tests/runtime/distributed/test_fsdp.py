"""``strategy = "fsdp"``: two processes (Gloo on CPU) shard the student with FSDP2 and follow the
single-process trajectory — materialized logits, the fused-linear path (the lm_head run outside
``forward`` through the root's registered forward method), tied embeddings, a cached top-k,
hidden-state projections, on-policy samples, DPO pairs, a LoRA student (frozen and trained parameters in
one unit), a rank with no rows (filler micro-batches) and a checkpoint written from gathered full
state dicts."""

from __future__ import annotations

import math

import pytest

from tests.runtime.distributed.support import launch, report
from tests.runtime.train.support import artifact, metrics, node, run_recipe, write_recipe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TRAINS = ("plain", "fused", "tied", "adapted", "prefer")
STEPS, LR, BETAS = 6, 1e-3, (0.9, 0.999)  # the trains' settings (see body) and AdamW's default

# The students of this test start from transformers' usual initialisation (std 0.02), not from
# the shared tiny fixtures' wide one (std 0.6, chosen there for peaked next-token choices). On
# those, one process and two do not train to float32 accuracy alike: saturated attention
# softmaxes and large activations make the loss ill-conditioned, so the rounding difference of
# the gradients (2e-7 relative at step 0, equal weights) feeds back through the weights and
# grows 600-fold in five steps, and the probe's logits amplify weight differences 10 to 60
# times more than at std 0.02. At std 0.02 the two runs' gradients stay 0.5-3e-7 apart at every
# step. The teachers keep the wide initialisation: they are frozen, and their peaked
# distributions give the distillation terms real gradients (a teacher as flat as a std-0.02
# model leaves on-policy JSD gradients that are mostly cancellation, 5e-6 relative rounding).
STUDENT_INIT_RANGE = 0.02
TEACHER_INIT_RANGE = 0.6


@pytest.fixture(scope="module")
def llama_pair(tiny_pair, tiny_root):
    """The shared tiny Llama teacher and a std-0.02 Llama student (width 32) of its
    vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from tests.fixtures.tiny_models import TinyPair

    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=STUDENT_INIT_RANGE, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(2)
    folder = tiny_root / "fsdp_student"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return TinyPair(teacher=tiny_pair.teacher, student=folder, tokenizer=tiny_pair.tokenizer)


@pytest.fixture(scope="module")
def tied_pair(tiny_root, tiny_tokenizer_dir):
    """GPT-2 student and teacher without dropout (so two processes can match one), with tied
    embeddings (the lm_head is the embedding matrix, in the root unit)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    folders = []
    for name, width, seed, init in (
        ("tied_student", 32, 3, STUDENT_INIT_RANGE),
        ("tied_teacher", 48, 4, TEACHER_INIT_RANGE),
    ):
        config = GPT2Config(
            vocab_size=len(tokenizer), n_embd=width, n_layer=2, n_head=4, n_positions=256,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=init,
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
    # STEPS and LR enter the bound on how far the runs may drift apart (see WEIGHT_DRIFT).
    common = f"max_steps = {STEPS}  batch = 4  grad_accum = 2  lr = {LR:g}  checkpoint_every = 3"
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


def adam_step_bound(t: int, beta1: float = BETAS[0], beta2: float = BETAS[1]) -> float:
    """The largest AdamW step of one element at step ``t`` (from 1), in units of lr: the
    bias-corrected ``m / sqrt(v)``, bounded by Cauchy-Schwarz over the gradients averaged."""
    q = beta1**2 / beta2
    return (
        (1 - beta1)
        / (1 - beta1**t)
        * math.sqrt((1 - beta2**t) / (1 - beta2))
        * math.sqrt((1 - q**t) / (1 - q))
    )


# How far the two runs' students may compute apart, from the numerics:
#
# - ROUNDING: at equal weights the two runs' gradients differ only by float32 sums taken in
#   another order (each rank sums its half of the micro-batches, padded to other lengths, and
#   the halves are added by the reduction): 0.5-3e-7 relative here at every step, a few units
#   of float32 roundoff (6e-8). Other x86 CPUs (other SIMD widths, other GEMM blockings) sum in
#   other orders but to the same few units; 1e-6 is 16 units.
# - AdamW steps an element by at most adam_step_bound(t) * lr (1.00 to 1.016 for t <= 6), a
#   ratio of averages of the same gradients: a relative error r of the gradients moves the
#   step by at most 2 r of it. With the gradients staying ROUNDING apart from step to step
#   (well-conditioned students, see STUDENT_INIT_RANGE), the weights end at most WEIGHT_DRIFT
#   apart. Elements whose gradient is near AdamW's eps (1e-8) or zero in exact arithmetic take
#   a step that follows their own rounding (lr * g / (|g| + eps)); they are few, and the loss,
#   by their gradient, hardly depends on them.
# - SENSITIVITY: how far the probe's logits move per unit of a change of that size in every
#   weight (random signs, in float64 on each trained student by `sensitivity`; a property of
#   the model, the same on every machine): 42 to 59 for the five trains here, 670 to 2700 for
#   students of std 0.6, where this comparison says nothing.
#
# LOGITS_BOUND = SENSITIVITY * WEIGHT_DRIFT = 200 * 1.2e-8 = 2.4e-6; measured 1.2e-7 to 5e-7.
# A real fault (a gradient not summed or summed twice, a filler batch counted) moves gradients
# by O(1), five orders of magnitude past ROUNDING.
ROUNDING = 1e-6
WEIGHT_DRIFT = 2 * ROUNDING * LR * sum(adam_step_bound(t) for t in range(1, STEPS + 1))
SENSITIVITY = 200.0
LOGITS_BOUND = SENSITIVITY * WEIGHT_DRIFT


def student(report_document, name):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(artifact(report_document, name) / "model")


def probe_ids():
    """60 ordinary tokens, past the special ones (ids 0-4). The pad token (id 0) has an
    all-zero embedding, which a norm layer divides by its own vanishing norm: logits there
    are singular in that row, no probe."""
    import torch

    from tests.fixtures.tiny_models import SPECIAL_TOKENS

    return len(SPECIAL_TOKENS) + torch.arange(60).reshape(3, 20)


def logits(model):
    """The trained student's logits on the probe."""
    import torch

    with torch.no_grad():
        return model(input_ids=probe_ids()).logits


def sensitivity(model, draws: int = 4, step: float = 1e-6) -> float:
    """The most the probe's logits move per unit of a change of every weight by +-``step``
    (random signs), in float64 so that rounding does not blur the measurement."""
    import copy

    import torch

    model = copy.deepcopy(model).double()
    generator = torch.Generator().manual_seed(0)
    base = logits(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    worst = 0.0
    for _ in range(draws):
        with torch.no_grad():
            for key, value in model.state_dict().items():
                signs = torch.randint(0, 2, value.shape, generator=generator) * 2 - 1
                value.copy_(weights[key] + step * signs)
        worst = max(worst, (logits(model) - base).abs().max().item() / step)
    return worst


def test_fsdp_on_two_processes_matches_one_process(tmp_path, llama_pair, tied_pair):
    text = body(llama_pair, tied_pair)
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
        # and need not agree), within LOGITS_BOUND; the bound needs a well-conditioned probe.
        model = student(single, name)
        assert sensitivity(model) <= SENSITIVITY, name
        gap = (logits(student(document, name)) - logits(model)).abs().max().item()
        assert gap <= LOGITS_BOUND, (name, gap)
    assert any(r["on_policy_batch"] for r in metrics(single, "fused"))
    assert metrics(single, "plain")[-1]["loss"] < metrics(single, "plain")[0]["loss"]
    assert (artifact(document, "adapted") / "adapter").is_dir()
    assert node(single, "fused")["stats"]["loss_path"]["path"] == "fused_linear"


LOSSES = {"sft", "forward_kl", "jsd", "hidden_mse", "dpo"}
