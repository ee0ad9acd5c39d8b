"""Compiled bodies (``compile = true | auto``): each decoder layer its own compiled region, the
losses and gradients those of the eager model (CUDA, bf16 tolerance), and which layers are
regions (CPU)."""

from __future__ import annotations

import pytest
import torch
from kdlang.runtime.train.compile import compile_layers, decoder_layers, wants_compile


def _llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def test_the_regions_are_the_decoder_layers_of_the_model_and_of_its_peft_wrapper():
    model = _llama()
    assert decoder_layers(model) == list(model.model.layers)
    from peft import LoraConfig, get_peft_model

    wrapped = get_peft_model(_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert [type(m).__name__ for m in decoder_layers(wrapped)] == ["LlamaDecoderLayer"] * 3


def test_auto_compiles_on_cuda_only():
    assert wants_compile("auto", "cuda") and not wants_compile("auto", "cpu")
    assert wants_compile("true", "cpu") and not wants_compile("false", "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_layers_give_the_eager_loss_and_gradients_in_bf16():
    device = torch.device("cuda")
    eager, compiled = _llama().to(device), _llama().to(device)
    assert compile_layers(compiled) == 3
    ids = torch.randint(0, 96, (4, 48), device=device)
    results = []
    for model in (eager, compiled):
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten().float() for p in model.parameters()])
        results.append((loss.detach().float(), grads))
    (loss_e, grad_e), (loss_c, grad_c) = results
    # bf16 autocast: each matmul rounds to 8 bits of mantissa (relative 2^-8 = 0.4 %); the
    # fused elementwise work changes where the roundings happen, not how large they are.
    assert torch.allclose(loss_c, loss_e, rtol=2e-2, atol=0)
    cosine = torch.nn.functional.cosine_similarity(grad_c, grad_e, dim=0)
    assert cosine > 0.999
    assert (grad_c - grad_e).norm() <= 0.05 * grad_e.norm()
