"""The realistic shapes the training benchmarks measure: a random-init Llama-3.2-1B-like student
and a Llama-3.2-3B-like teacher sharing a vocabulary of 128,256 (``small`` shrinks them for a
quick check on a CPU)."""

from __future__ import annotations

VOCAB = 128256
STUDENT = {"hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "mlp": 8192}
TEACHER = {"hidden": 3072, "layers": 28, "heads": 24, "kv_heads": 8, "mlp": 8192}


def vocab(small: bool) -> int:
    return VOCAB // 16 if small else VOCAB


def llama_config(shape: dict, vocab_size: int, *, small: bool = False, **settings):
    """A ``LlamaConfig`` of ``shape`` (tied embeddings, RoPE θ = 500,000 as Llama 3.2); with
    ``small``, hidden and MLP widths / 16 and 2 layers. ``settings`` add or override fields."""
    from transformers import LlamaConfig

    hidden, layers, heads, kv_heads, mlp = (
        shape[k] for k in ("hidden", "layers", "heads", "kv_heads", "mlp")
    )
    if small:
        hidden, layers, heads, kv_heads, mlp = hidden // 16, 2, 4, 2, mlp // 16
    fields = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": mlp,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    }
    return LlamaConfig(**{**fields, **settings})
