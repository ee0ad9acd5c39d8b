"""On-policy distillation (GKD): some steps learn on the student's own samples.

At step s a step is on-policy with probability λ(s) (``on_policy``, schedulable); the draw is
seeded by (seed, s) alone, and each row's sample by (seed, s, row), so a resumed run makes the
same decisions and draws the same samples as an uninterrupted one. The student samples at
``sample_temperature`` (and ``sample_top_k``, ``sample_top_p``) up to ``max_new_tokens`` (eval mode, no gradient) with the teachers'
seeded decoder; the sampled tokens, EOS included when it was drawn, become the targets that
the online teacher then scores.
"""

from __future__ import annotations

import hashlib
import random

from torch import nn

from .examples import Example
from .models import base_model


def is_on_policy(seed: int, step: int, ratio: float) -> bool:
    if ratio <= 0.0:
        return False
    return random.Random(f"kdlang-on-policy:{seed}:{step}").random() < ratio


def sample_seed(seed: int, step: int, row: int, generation: int = 0, source: str = "sample") -> int:
    """The seed of sample ``generation`` of ``row`` at ``step``; ``source``: ``sample`` (the
    student's) or ``teacher`` (``seq_kd``), two streams that never share a seed's text."""
    extra = f":{generation}" if generation else ""
    text = f"kdlang-{source}:{seed}:{step}:{row}{extra}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big") & 0x7FFFFFFF


def sample_targets(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    *,
    seed: int,
    step: int,
    temperature: float,
    max_new_tokens: int,
    batch_size: int,
    top_p: float = 1.0,
    top_k: int = 0,
    generations: list[int] | None = None,
    source: str = "sample",
) -> list[Example]:
    """``examples`` with their targets replaced by the model's samples (``generations``: the
    index of each example's sample of its row, 0 when not given)."""
    from ..teachers.hf import _eos_ids
    from ..teachers.hf_decode import SequenceSpec, decode_batch

    base = base_model(model)
    eos = _eos_ids(base, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    specs = [
        SequenceSpec(
            prompt_ids=e.prompt,
            seed=sample_seed(seed, step, e.row, g, source),
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            max_tokens=max_new_tokens,
            top_logprobs=1,  # returns the sampled ids with the text
        )
        for e, g in zip(examples, generations or [0] * len(examples), strict=True)
    ]
    was_training = base.training
    base.eval()
    out = []
    try:
        out = decode_batch(base, tokenizer, specs, eos_ids=eos, pad_id=pad, slots=batch_size)
    finally:
        base.train(was_training)
    return [
        e.with_target([int(t) for t in g.logprobs.target_ids.tolist()])
        for e, g in zip(examples, out, strict=True)
    ]
