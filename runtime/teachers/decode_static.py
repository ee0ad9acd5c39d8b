"""A Llama-layout decoder run over a static, preallocated KV cache.

The decode engine (:mod:`.decode_engine`) needs a forward pass whose shapes never change, so
that one decode step can be captured in a CUDA graph, and whose rows never see each other, so
that a sequence decodes the same tokens whatever shares its batch. transformers' own forward
and caches are built for a batch that starts and ends together; here each cache row belongs to
one sequence, and a token at position ``p`` of that sequence is written at slot ``p`` of its
row, so where a sequence's keys live depends on the sequence alone.

The runner reuses the model's own modules (embedding, projections, norms, rotary embedding,
MLP, head) and replaces only the attention's cache and mask. It supports the decoders whose
layers follow the Llama layout: ``llama``, ``mistral``, ``qwen2`` and ``qwen3`` (the latter's
per-head q/k norms included), without a sliding window shorter than the context.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SUPPORTED_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# The memory-efficient kernel takes any mask and reads the cache at full bandwidth; cuDNN's
# fused attention, the default on Hopper, is several times slower for decode's few queries.
BACKENDS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def unsupported_reason(model: Any, context: int | None = None) -> str | None:
    """Why :class:`StaticRunner` cannot run ``model`` (``None`` when it can)."""
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    if kind not in SUPPORTED_TYPES:
        return f"model type {kind!r} is not one of {sorted(SUPPORTED_TYPES)}"
    inner: Any = getattr(model, "model", None)
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(inner, name):
            return f"the decoder has no {name!r}"
    if getattr(model, "lm_head", None) is None:
        return "the model has no lm_head"
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", True)
    layer_types = set(getattr(config, "layer_types", None) or ())
    if window and uses_window and (context is None or window < context):
        return "sliding-window attention shorter than the context"
    if layer_types - {"full_attention"}:
        return f"layer types {sorted(layer_types)}"
    for layer in inner.layers:
        attn = getattr(layer, "self_attn", None)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            if not hasattr(attn, name):
                return f"an attention block has no {name!r}"
        if not hasattr(layer, "mlp") or not hasattr(layer, "post_attention_layernorm"):
            return "a decoder layer is not in the Llama layout"
    return None


class StaticRunner:
    """The model's forward over ``rows`` cache rows of ``context`` slots each (one more row,
    the last, is scratch space that padding rows write into)."""

    def __init__(self, model: Any, rows: int, context: int) -> None:
        reason = unsupported_reason(model, context)
        if reason is not None:
            raise ValueError(f"the static decoder cannot run this model: {reason}")
        self.model = model
        self.inner = model.model
        config = model.config
        attn = self.inner.layers[0].self_attn
        self.head_dim = int(attn.head_dim)
        self.q_heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.q_heads)
        self.group = self.q_heads // self.kv_heads
        self.scale = float(attn.scaling)
        self.rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        self.rows = rows
        self.context = context
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        shape = (rows + 1, self.kv_heads, context, self.head_dim)
        self.keys = [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.slots = torch.arange(context, device=self.device)
        self.all_rows = torch.arange(rows, device=self.device)

    @property
    def layers(self) -> Any:
        return self.inner.layers

    @staticmethod
    def row_bytes(model: Any, context: int) -> int:
        """Bytes of KV cache one row of ``context`` slots takes."""
        config = model.config
        attn = model.model.layers[0].self_attn
        kv = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        size = next(model.parameters()).element_size()
        return 2 * len(model.model.layers) * kv * int(attn.head_dim) * context * size

    # ------------------------------------------------------------------ the two passes

    def decode(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One token for every row: ``tokens``/``pos`` int64 ``[rows]``; float32 logits
        ``[rows, V]`` of the next token. Writes each row's key and value at slot ``pos``."""
        x = self.inner.embed_tokens(tokens[:, None])  # [B, 1, H]
        cos, sin = self.inner.rotary_emb(x, pos[:, None])
        mask = self._mask(pos[:, None])
        for i, layer in enumerate(self.layers):
            x = self._layer(i, layer, x, cos, sin, mask, self.all_rows, pos[:, None], None)
        hidden = rms_norm(self.inner.norm, x)
        return self.model.lm_head(hidden)[:, 0, :].float()

    def prefill(self, rows: torch.Tensor, tokens: torch.Tensor, pos: torch.Tensor) -> None:
        """Write the keys and values of ``tokens`` ``[G, Q]`` at positions ``pos`` ``[G, Q]``
        of cache rows ``rows`` ``[G]``; each query attends to its row's slots up to its own
        position. Padding units name the scratch row ``self.rows``."""
        x = self.inner.embed_tokens(tokens)  # [G, Q, H]
        cos, sin = self.inner.rotary_emb(x, pos)
        mask = self._mask(pos)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = self._layer(i, layer, x, cos, sin, mask, rows, pos, i == last)

    def _mask(self, pos: torch.Tensor) -> torch.Tensor:
        """``[G, 1, group·Q, C]``: query ``(head in group, q)`` of row ``g`` sees the slots up to
        its position (the grouped query heads are laid out as extra queries)."""
        g, q_len = pos.shape
        mask = self.slots[None, None, :] <= pos[:, :, None]  # [G, Q, C]
        mask = mask[:, None, None].expand(g, 1, self.group, q_len, self.context)
        mask = mask.reshape(g, 1, self.group * q_len, self.context)
        # additive, in the model's dtype: the form the attention kernels take without converting
        return torch.zeros(mask.shape, dtype=self.dtype, device=self.device).masked_fill(
            ~mask, float("-inf")
        )

    # ------------------------------------------------------------------ one layer

    def _layer(
        self,
        i: int,
        layer: Any,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        rows: torch.Tensor,
        pos: torch.Tensor,
        skip_mlp: bool | None,
    ) -> torch.Tensor:
        """``x`` ``[G, Q, H]``; ``skip_mlp`` is ``None`` for decode (all rows, in order)."""
        attn = layer.self_attn
        g, q_len, _ = x.shape
        h = rms_norm(layer.input_layernorm, x)
        q = attn.q_proj(h).view(g, q_len, self.q_heads, self.head_dim)
        k = attn.k_proj(h).view(g, q_len, self.kv_heads, self.head_dim)
        v = attn.v_proj(h).view(g, q_len, self.kv_heads, self.head_dim)
        if hasattr(attn, "q_norm"):
            q, k = rms_norm(attn.q_norm, q), rms_norm(attn.k_norm, k)
        q, k = self._rotate(q, k, cos, sin)  # [G, Q, heads, D]
        keys, values = self.keys[i], self.values[i]
        # Advanced indices at dims 0 and 2 put the [G, Q] index shape first: [G, Q, kv, D].
        # (under autocast the projections come out in bf16; the cache keeps the model's dtype)
        keys[rows[:, None], :, pos] = k.to(keys.dtype)
        values[rows[:, None], :, pos] = v.to(values.dtype)
        if skip_mlp is None:
            row_keys, row_values = keys[: self.rows], values[: self.rows]
        else:
            row_keys, row_values = keys[rows], values[rows]
        # Grouped-query attention: the query heads sharing a key head become extra queries.
        q = q.view(g, q_len, self.kv_heads, self.group, self.head_dim).permute(0, 2, 3, 1, 4)
        q = q.reshape(g, self.kv_heads, self.group * q_len, self.head_dim)
        with sdpa_kernel(BACKENDS):
            out = F.scaled_dot_product_attention(
                q, row_keys, row_values, attn_mask=mask.to(q.dtype), scale=self.scale
            )
        out = out.view(g, self.kv_heads, self.group, q_len, self.head_dim)
        out = out.permute(0, 3, 1, 2, 4).reshape(g, q_len, self.q_heads * self.head_dim)
        x = x + attn.o_proj(out)
        if skip_mlp:
            return x  # the last layer's MLP feeds only logits, which a prefill does not need
        return x + layer.mlp(rms_norm(layer.post_attention_layernorm, x))

    def _rotate(
        self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary embedding of ``q`` ``[G, Q, Hq, D]`` and ``k`` ``[G, Q, Hkv, D]`` at once
        (the half-split rotation of the Llama family), in that layout; a rotation of part of
        the head falls back to the model's own function."""
        if cos.shape[-1] != self.head_dim:
            q, k = self.rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            return q.transpose(1, 2), k.transpose(1, 2)
        both = torch.cat((q, k), dim=2)
        half = self.head_dim // 2
        turned = torch.cat((-both[..., half:], both[..., :half]), dim=-1)
        both = both * cos[:, :, None, :] + turned * sin[:, :, None, :]
        return both[:, :, : self.q_heads], both[:, :, self.q_heads :]


def rms_norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for the Llama family's RMSNorm (``weight * normed(x in float32)``, cast
    back before the weight), through PyTorch's fused kernel; any other norm as it is."""
    eps = getattr(module, "variance_epsilon", None)
    weight = getattr(module, "weight", None)
    if eps is None or weight is None or not type(module).__name__.endswith("RMSNorm"):
        return module(x)
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)
