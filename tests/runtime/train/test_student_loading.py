"""Students as people load them: LoRA on every linear layer, DoRA, modules trained in full beside
the adapters, frozen modules, embeddings padded to a multiple."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.errors import RunError
from kdlang.runtime.train.models import load_student, save_student
from torch import nn

from kdlang.ir.sources import LoRA
from tests.runtime.train.support import SPAN, artifact, models, run_recipe, write_recipe

pytestmark = pytest.mark.timeout(300)

CPU = torch.device("cpu")


def settings(path) -> dict:
    return {"path": str(path), "dtype": "auto", "revision": None, "trust_remote_code": False}


def lora(**given) -> LoRA:
    return LoRA(span=SPAN, **{"r": 4, "alpha": 8.0, **given})


def linear_names(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_all_linear_adapts_every_linear_layer_but_the_head(tiny_pair):
    plain, _ = load_student(settings(tiny_pair.student), device=CPU, seed=0)
    expected = linear_names(plain) - {"lm_head"}
    assert len(expected) == 7 * plain.config.num_hidden_layers  # q k v o gate up down
    model, _ = load_student(
        settings(tiny_pair.student), lora(target_modules="all_linear"), device=CPU, seed=0
    )
    adapted = {
        n.removeprefix("base_model.model.").removesuffix(".lora_A.default")
        for n, _ in model.named_modules()
        if n.endswith(".lora_A.default")
    }
    assert adapted == expected


def test_dora_learns_magnitudes_and_merges_into_the_same_function(tmp_path, tiny_pair):
    model, tokenizer = load_student(
        settings(tiny_pair.student), lora(dora=True, target_modules=["q_proj", "v_proj"]),
        device=CPU, seed=0,
    )  # fmt: skip
    magnitudes = [n for n, p in model.named_parameters() if "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * model.config.num_hidden_layers
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move the adapters away from the identity
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=generator))
    ids = torch.tensor([[1, 5, 9, 14, 20, 7]])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids).logits.double()
    save_student(model, tokenizer, tmp_path)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        after = merged(input_ids=ids).logits.double()
    assert (before - after).abs().max().item() < 1e-4


def test_modules_to_save_are_trained_in_full_beside_the_adapters(tiny_pair):
    model, _ = load_student(
        settings(tiny_pair.student), lora(modules_to_save=["lm_head"]), device=CPU, seed=0
    )
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lm_head.modules_to_save.default.weight" in n for n in trained)
    assert not any("lm_head.original_module" in n for n in trained)


def test_a_module_name_the_student_lacks_is_told_its_near_names(tiny_pair):
    with pytest.raises(
        RunError, match=r"lora: the student has no module `q_prj`; near names: q_proj"
    ):
        load_student(
            settings(tiny_pair.student), lora(target_modules=["q_prj"]), device=CPU, seed=0
        )
    with pytest.raises(
        RunError, match=r"freeze: the student has no module `embed_token`; near.*embed_tokens"
    ):
        load_student(settings(tiny_pair.student), device=CPU, seed=0, freeze=["embed_token"])


def test_freeze_stops_the_named_modules_only(tiny_pair):
    model, _ = load_student(
        settings(tiny_pair.student), device=CPU, seed=0, freeze=["embed_tokens", "layers.0"]
    )
    for name, p in model.named_parameters():
        frozen = "embed_tokens" in name or ".layers.0." in name
        assert p.requires_grad is not frozen, name
    with pytest.raises(RunError, match="leave nothing of the student to train"):
        load_student(settings(tiny_pair.student), device=CPU, seed=0, freeze=["model", "lm_head"])


BODY = """
dataset rows = inline([{q: "What is 1 plus 2?", a: "3"}, {q: "Say hi.", a: "Hi!"}])
prompt ask = "Q: {{ q }}\\nA:"
train t {
  student = student  data = rows  prompt = ask  target = a  max_steps = 3  batch = 2  lr = 1e-2
  freeze = ["layers.0"]  pad_vocab_to_multiple = 96
  loss sft weight 1.0
}
"""


def test_a_run_with_frozen_modules_and_padded_embeddings(tmp_path, tiny_pair):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = run_recipe(write_recipe(tmp_path, models(tiny_pair) + BODY))
    before = AutoModelForCausalLM.from_pretrained(tiny_pair.student)
    after = AutoModelForCausalLM.from_pretrained(artifact(report, "t") / "model")
    tokens = len(AutoTokenizer.from_pretrained(tiny_pair.student))
    rows = before.get_input_embeddings().weight.shape[0]
    assert rows % 96 != 0  # the padding has something to do
    wanted = -(-max(rows, tokens) // 96) * 96  # the next multiple of 96
    assert after.get_input_embeddings().weight.shape[0] == wanted
    assert after.get_output_embeddings().weight.shape[0] == wanted
    assert after.config.vocab_size == wanted
    old, new = dict(before.named_parameters()), dict(after.named_parameters())
    head = new["model.embed_tokens.weight"][:rows]
    assert not torch.equal(head, old["model.embed_tokens.weight"])  # the embeddings trained
    for name, p in new.items():
        if ".layers.0." in name:
            assert torch.equal(p, old[name]), name  # frozen: as it was
    changed = [n for n in new if ".layers.1." in n and not torch.equal(new[n], old[n])]
    assert changed  # the rest trained
