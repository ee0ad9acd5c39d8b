"""``teacher_logits(data) { teacher = .. prompt = .. target = .. top_k = k }``: cache the teacher's
top-k next-token log-probs on every target token, so training runs without the teacher.

Each row gains three columns: ``topk_ids`` (per target token, the k ids, int32),
``topk_logprobs`` (their log-probs at temperature 1, descending) and ``topk_target_ids``
(the target's own token ids, int32), row t describing the teacher's prediction *for* target
token t. ``storage`` says how: ``fp16`` (the default) and ``fp32`` store Arrow
``list<fixed_size_list<int32|float16|float32, k>>`` (6 or 8 bytes per entry);
``compressed(exact, bits)`` stores one packed byte string per position in ``topk_packed``
instead (:mod:`kdlang.runtime.logit_codec`), which every reader decodes to the float columns.

A white-box (``hf``) teacher scores ``prompt + target + EOS`` (so the end of the answer is
distilled too) with its own tokenizer. A black-box (``openai``) teacher returns tokens as
strings: each must be a single token of the student's vocabulary (the students of the trains
that read this stage) and is mapped to its id, else the stage fails naming the token. Targets
longer than ``max_length`` tokens with their prompt keep their first tokens only.

A conversation target (a ``messages`` column; the stage then takes no prompt) is rendered by
the ``hf`` teacher's chat template and scored only on the tokens its ``train_on`` picks, the
positions a train learns (:class:`~kdlang.runtime.train.conversation.ConversationScorer`):
``topk_target_ids`` holds those tokens, and a train spreads the rows back over its own
rendering, which must have the same tokens there.

Rows are scored in fixed chunks (a teacher batch each), saved to the progress folder as they
finish, and written ``shard_rows`` rows to a file as soon as a shard's chunks are scored
(:mod:`._logit_shards`): a killed run resumes at the first shard not written, with the chunks
it had saved, and gives the same bytes as an uninterrupted run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from kdlang.ir.teacher_logits import TOPK_COLUMNS
from kdlang.plan import PlanNode, needed

from ..context import StageContext
from ..errors import RunError
from ..logit_codec import id_bits
from ..teachers import TeacherError
from ..train.models import vocab_digest
from ._logit_shards import Shards, chunk_path, save_chunk


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    teacher = ctx.teacher(stage.teacher)
    before = teacher.stats.as_dict()  # a teacher is shared by the run's stages: count ours only
    white = getattr(teacher, "white_box", False)
    conversations = _conversations(node.name, rows, stage.target)
    if conversations is not None:
        from ..train.conversation import ConversationScorer

        if stage.prompt is not None:
            raise RunError(f"{node.name}: `{stage.target}` holds conversations: a `prompt` "
                           "would go unused")  # fmt: skip
        scorer = ConversationScorer(node.name, teacher, stage, conversations)
    elif stage.prompt is None:
        raise RunError(f"{node.name}: `{stage.target}` holds text, which needs a `prompt`")
    tokenizer = teacher.tokenizer if white else _student_tokenizer(ctx, node)
    mapper = None if white else TokenMapper(tokenizer)
    template = ctx.template(stage.prompt) if conversations is None else None
    prompts = [template.render(i, **row) for i, row in enumerate(rows)] if template else []
    eos = (tokenizer.eos_token or "") if white else ""
    targets = [str(row.get(stage.target) or "") + eos for row in rows]

    folder = ctx.progress_dir()
    size = teacher.batch_size if white else max(1, getattr(teacher, "concurrency", 8) * 4)
    bounds = [(start, min(len(rows), start + size)) for start in range(0, len(rows), size)]
    columns = [c for c in (node.columns or {}) if c not in TOPK_COLUMNS]
    shards = Shards(
        folder, _base(rows, columns), bounds, stage.shard_rows, stage.top_k, stage.storage,
        _id_bits(teacher, tokenizer, stage.top_k, white),
    )  # fmt: skip
    dist = ctx.dist
    mine = [bound for b, bound in enumerate(bounds) if b % dist.world == dist.rank]
    ctx.count(
        "resumed_rows",
        sum(
            end - max(start, shards.covered) if chunk_path(folder, start).exists() else 0
            for start, end in bounds
            if shards.needs(start, end)
        )
        + shards.covered,
    )
    dist.wait()  # every rank has counted the chunks found before any rank adds one
    ctx.start(sum(end - start for start, end in mine))
    error = None
    try:
        for start, end in mine:
            chunk = chunk_path(folder, start)
            if shards.needs(start, end) and not chunk.exists():
                _score(node, teacher, tokenizer, mapper, stage, prompts, targets, white,
                       scorer if conversations is not None else None, chunk, start, end)  # fmt: skip
            if not dist.active:
                shards.advance()  # a shard is written as soon as its chunks are
            ctx.advance(end - start)
    except RunError as failure:
        if not dist.active:
            raise
        error = str(failure)  # told to the other ranks below, then raised on every one
    finally:
        used = {k: v - before.get(k, 0) for k, v in teacher.stats.as_dict().items()}
        ctx.stats["teacher"] = used
    if dist.active:  # rank 0 writes the artifact from every rank's chunks
        reports = dist.gather((error, used))
        ctx.stats["teacher"] = {k: sum(u[k] for _, u in reports) for k in used}
        errors = [e for e, _ in reports if e]
        if errors:
            raise RunError(errors[0])
        if not dist.is_main:
            return {}
    shards.advance()
    ctx.stats["target_tokens"] = shards.publish(out)
    ctx.stats["shards"] = len(shards.spans)
    manifest = {
        "rows": len(rows),
        "top_k": stage.top_k,
        "vocab_digest": vocab_digest(tokenizer),
        "storage": repr(stage.storage),
        "shards": len(shards.spans),
    }
    if conversations is not None:
        manifest["conversations"] = True  # scored on the tokens `train_on` picks
    return manifest


def _score(node, teacher, tokenizer, mapper, stage, prompts, targets, white, scorer, chunk,
           start: int, end: int) -> None:  # fmt: skip
    """Score the rows ``[start, end)`` and save them as the chunk file ``chunk``."""
    if scorer is not None:
        save_chunk(chunk, scorer.score(start, end))
        return
    try:
        found = teacher.topk_logprobs(prompts[start:end], targets[start:end], stage.top_k)
    except TeacherError as failure:
        raise RunError(f"{node.name}: {failure}") from None
    budgets = [
        _budget(teacher, tokenizer, p, t, stage.max_length, white)
        for p, t in zip(prompts[start:end], targets[start:end], strict=True)
    ]
    save_chunk(chunk, [_row(t, b, mapper) for t, b in zip(found, budgets, strict=True)])


def _base(rows: list[dict], columns: list[str]) -> pa.Table:
    """The rows' own columns (one schema for every shard)."""
    if rows:
        return pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
    return pa.table({c: pa.array([], pa.string()) for c in columns})


def _id_bits(teacher, tokenizer, k: int, white: bool) -> int:
    """Bits that hold every id the stage can store: the teacher's logits (white-box), else the
    student's vocabulary and the spare ids of empty slots."""
    if white:
        width = teacher.model.get_output_embeddings().out_features
        return id_bits(max(width, len(tokenizer)))
    return id_bits(len(tokenizer.get_vocab()) + k)


def _conversations(name: str, rows: list[dict], column: str) -> list[list[dict]] | None:
    """The target's conversations, when it holds conversations (every row then), else None."""
    kinds = [isinstance(row.get(column), list) for row in rows]
    if not any(kinds):
        return None
    if not all(kinds):
        row = kinds.index(False)
        raise RunError(f"{name}: row {row + 1}: `{column}` holds no conversation, unlike row "
                       f"{kinds.index(True) + 1}")  # fmt: skip
    return [row[column] for row in rows]


def _budget(teacher, tokenizer, prompt: str, target: str, max_length: int, white: bool) -> int:
    """Target tokens that fit after the prompt within ``max_length``."""
    if white:
        prompt_ids, _ = teacher.encode_pair(prompt, target)
    else:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return max(0, max_length - len(prompt_ids))


def _row(topk, budget: int, mapper) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lps = topk.logprobs[:budget].float().numpy()
    if mapper is None:
        ids = topk.ids[:budget].numpy().astype(np.int32)
        targets = topk.target_ids[:budget].numpy().astype(np.int32)
    else:
        rows = [
            mapper.row(names, values)
            for names, values in zip(topk.tokens[:budget], lps, strict=True)
        ]
        ids = np.stack([r[0] for r in rows]) if rows else np.zeros((0, lps.shape[1]), np.int32)
        lps = np.stack([r[1] for r in rows]) if rows else lps
        targets = np.array([mapper.id(t) for t in topk.target_tokens[:budget]], np.int32)
    return ids, lps.astype(np.float32), targets


class TokenMapper:
    """Token strings of a black-box teacher → ids of the student's vocabulary."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab = tokenizer.get_vocab()
        self.known: dict[str, int] = {}

    def id(self, token: str) -> int:
        if token not in self.known:
            if token in self.vocab:  # the server returned the raw vocabulary entry
                self.known[token] = self.vocab[token]
            else:
                ids = self.tokenizer(token, add_special_tokens=False)["input_ids"]
                if len(ids) != 1:
                    raise RunError(
                        f"the teacher's token {token!r} is {len(ids)} tokens of the student's "
                        "vocabulary, not one; cached top-k needs a teacher that tokenizes like "
                        "the student (use `loss sft` on its text otherwise)"
                    )
                self.known[token] = ids[0]
        return self.known[token]

    def row(self, names: list[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One position's k entries as ids; strings naming the same id merge (their
        probabilities add); empty slots get distinct unused ids at log-prob −inf."""
        merged: dict[int, float] = {}
        for name, value in zip(names, values.tolist(), strict=True):
            if name == "" or value == -np.inf:
                continue
            token = self.id(name)
            merged[token] = float(np.logaddexp(merged[token], value)) if token in merged else value
        ranked = sorted(merged.items(), key=lambda item: -item[1])
        spare = (i for i in range(len(self.vocab) + len(values)) if i not in merged)
        while len(ranked) < len(values):
            ranked.append((next(spare), -np.inf))
        return (
            np.array([i for i, _ in ranked], np.int32),
            np.array([v for _, v in ranked], np.float32),
        )


def _student_tokenizer(ctx: StageContext, node: PlanNode):
    """The tokenizer of the students trained on this stage's output (they must agree)."""
    readers = [
        n for n in ctx.plan.nodes if n.op == "train" and node.name in needed(ctx.plan, n.inputs)
    ]
    if not readers:
        raise RunError(
            f"{node.name}: a black-box teacher's tokens are mapped to a student's vocabulary, "
            "but no `train` reads this stage"
        )
    tokenizers, digests = [], set()
    for reader in readers:
        tokenizer = ctx.tokenizer(reader.node.student)
        tokenizers.append(tokenizer)
        digests.add(vocab_digest(tokenizer))
    if len(digests) > 1:
        raise RunError(
            f"{node.name}: the students that read this stage have different vocabularies"
        )
    return tokenizers[0]
