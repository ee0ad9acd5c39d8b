"""Padding-free packing and token-budget micro-batches.

**Packed batches.** :func:`pack` concatenates a micro-batch's sequences into one row
(``[1, N]``, N the sum of their lengths: no padding) with ``position_ids`` restarting at 0 for
each sequence. The model is called with ``position_ids`` and no ``attention_mask``: transformers
(5.x) then derives the sequences from where the positions restart and keeps attention within
each one — a block-diagonal causal mask under ``sdpa``, ``eager`` and ``flex_attention``,
variable-length kernels (``cu_seqlens``) under ``flash_attention_2``/``_3``, the format its own
``DataCollatorWithFlattening`` produces. Each sequence's labels, cached top-k rows and teacher
positions are exactly those :func:`~.examples.collate` gives it alone, shifted by its offset in
the row; the last position of a sequence (which would predict the next sequence's first token)
counts for nothing. Every loss being a masked sum over positions divided by the step's counts,
a packed step minimises the same function as a padded one; ``dpo``'s sequence log-probs are
summed per sequence (:func:`sequence_logprobs`).

**Which models pack.** :func:`packs_apart` tries a model once on two short sequences: packed,
the second one's logits must not change when the first one's tokens do (no attention across
sequences) and must match the second one alone (positions restart). ``packing = auto`` packs
when the student (and an online teacher) pass *and* their attention runs packed rows as
variable-length sequences (``flash_attention_2``/``_3``, ``flex_attention``: no N x N mask);
under ``sdpa`` or ``eager`` the block-diagonal mask of a packed micro-batch of N tokens costs
N² attention (a dense mask also keeps SDPA off its flash kernel), against B·L² padded: on one
H200, 4 rows of 2048 tokens took 550 ms a step packed under ``sdpa`` against about 300 padded.
``packing = true`` packs wherever the models keep rows apart, and makes a failure an error.

**Token budgets.** With packing, or with ``tokens_per_micro_batch``, a step's rows are split by
tokens instead of ``grad_accum``'s count (:func:`micro_plan`): packed, a micro-batch holds rows
whose tokens sum to at most the budget (first-fit, longest rows first); padded, rows in data
order while rows x the longest stays within it. A row is never split: one longer than the budget
is a micro-batch alone. The default budget is ``ceil(batch / grad_accum) x max_length``, the most
tokens a padded micro-batch can hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RunError
from .examples import IGNORE, Batch, Example, Pair, collate, micro_batches


@dataclass(frozen=True)
class Layout:
    """How a run lays out its micro-batches: ``packed`` rows or padded ones, split by a token
    ``budget`` (``None``: ``grad_accum`` parts); ``reason`` says why (for the run's stats)."""

    packed: bool
    budget: int | None
    reason: str

    def stats(self) -> dict:
        return {"packed": self.packed, "budget": self.budget, "reason": self.reason}


def resolve_layout(train, student: nn.Module, teacher: nn.Module | None) -> Layout:
    """The layout of a run: ``packing`` (``auto``: where the models keep packed sequences
    apart) and the token budget (``tokens_per_micro_batch``, else the default when packed)."""
    setting = train.packing  # "auto", "true" or "false"
    problem = None if setting == "false" else _problem(student, teacher)
    if setting == "true" and problem is not None:
        raise RunError(f"packing = true, but {problem}; set `packing = auto` or `false`")
    dense = None if setting != "auto" else _dense_attention(student, teacher)
    packed = setting != "false" and problem is None and dense is None
    if setting == "false":
        reason = "packing = false"
    elif problem is not None:
        reason = f"padded: {problem}"
    elif dense is not None:
        reason = f"padded: {dense} (packing = true packs anyway)"
    else:
        reason = "packing = true" if setting == "true" else "packing = auto: the models pack"
    budget = train.tokens_per_micro_batch
    if budget is None and packed:
        budget = train.micro_tokens()
    return Layout(packed, budget, reason)


VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")
"""Attention implementations that run a packed row as separate sequences, without a dense mask."""


def _dense_attention(student: nn.Module, teacher: nn.Module | None) -> str | None:
    """Why ``auto`` does not pack: a model whose attention would take a packed micro-batch
    with a dense N x N mask (``None``: every model runs packed rows as variable-length)."""
    from .models import base_model

    for role, model in (("the student", student), ("the online teacher", teacher)):
        if model is None:
            continue
        config = getattr(base_model(model), "config", None)
        kind = getattr(config, "_attn_implementation", None) or "eager"
        if kind not in VARLEN_ATTENTION:
            return (
                f"{role}'s `{kind}` attention would take a packed micro-batch with a dense "
                "N x N mask; flash_attention_2 or flex_attention run it as separate sequences"
            )
    return None


def _problem(student: nn.Module, teacher: nn.Module | None) -> str | None:
    for role, model in (("the student", student), ("the online teacher", teacher)):
        if model is None:
            continue
        found = packs_apart(model)
        if found is not None:
            return f"{role} {found}"
    return None


@torch.no_grad()
def packs_apart(model: nn.Module) -> str | None:
    """``None`` when ``model`` keeps packed sequences apart (see the module docstring), else
    what it does wrong."""
    import inspect

    from .models import base_model

    base = base_model(model)
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return f"({type(base).__name__}) takes no position_ids"
    vocab = int(base.get_input_embeddings().num_embeddings)
    device = next(model.parameters()).device
    first = torch.tensor([3, 5, 7, 11], device=device) % vocab
    second = torch.tensor([13, 17, 19, 23, 29], device=device) % vocab
    positions = torch.cat([torch.arange(len(first)), torch.arange(len(second))])[None].to(device)
    was_training = model.training
    model.eval()
    try:

        def tail(head: torch.Tensor) -> torch.Tensor:
            ids = torch.cat([head, second])[None]
            out = model(input_ids=ids, position_ids=positions, use_cache=False).logits
            return out[0, len(head) :].float()

        packed = tail(first)
        other = tail((first + 1) % vocab)
        alone = model(input_ids=second[None], use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    if not torch.equal(packed, other):
        return f"({type(base).__name__}) attends across packed sequences"
    scale = float(alone.abs().max()) + 1e-6
    tolerance = 1e-3 if next(model.parameters()).dtype == torch.float32 else 5e-2
    if float((packed - alone).abs().max()) > tolerance * scale:
        return f"({type(base).__name__}) does not restart positions at each packed sequence"
    return None


# -- micro-batches of a step ------------------------------------------------------------------


def micro_plan(
    sizes: list[tuple[int, ...]], budget: int | None, packed: bool, count: int
) -> list[list[int]]:
    """The step's rows (indices into ``sizes``) grouped into micro-batches. ``sizes[i]``: the
    token lengths of row i's sequences by kind (its example, its pair's longer response with
    the prompt — counted twice: chosen and rejected), 0 for a kind it has not. ``budget``:
    tokens per micro-batch (``None``: ``count`` nearly equal parts, :func:`micro_batches`)."""
    rows = list(range(len(sizes)))
    if budget is None:
        return micro_batches(rows, count)
    if packed:
        return _first_fit(sizes, budget)
    groups: list[list[int]] = []
    for row in rows:
        if groups and padded_tokens([sizes[i] for i in groups[-1] + [row]]) <= budget:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def padded_tokens(sizes: list[tuple[int, ...]]) -> int:
    """Token slots of these rows padded: per kind, rows x the longest (a pair kind twice)."""
    if not sizes:
        return 0
    example, pair = zip(*sizes, strict=True)
    return len(sizes) * (max(example) + 2 * max(pair))


def _first_fit(sizes: list[tuple[int, ...]], budget: int) -> list[list[int]]:
    """First-fit decreasing on each row's packed tokens; rows keep data order in a group."""
    cost = [example + 2 * pair for example, pair in sizes]
    groups: list[list[int]] = []
    used: list[int] = []
    for row in sorted(range(len(sizes)), key=lambda i: (-cost[i], i)):
        for g, total in enumerate(used):
            if total + cost[row] <= budget:
                groups[g].append(row)
                used[g] += cost[row]
                break
        else:
            groups.append([row])
            used.append(cost[row])
    return [sorted(group) for group in groups]


def row_sizes(examples: list[Example], pairs: list[Pair], rows: int) -> list[tuple[int, int]]:
    """``(example tokens, longer pair response + prompt)`` of each of ``rows`` step rows."""
    out = []
    for i in range(rows):
        example = len(examples[i].prompt) + len(examples[i].target) if examples else 0
        pair = 0
        if pairs:
            p = pairs[i]
            pair = len(p.prompt) + max(len(p.chosen), len(p.rejected))
        out.append((example, pair))
    return out


# -- packed batches -----------------------------------------------------------------------------


def pack(examples: list[Example], pad_id: int, *, kd_everywhere: bool = True) -> Batch:
    """``examples`` as one packed row (module docstring): what :func:`collate` gives each
    example alone, concatenated, with positions restarting at each example."""
    parts = [collate([e], pad_id, kd_everywhere=kd_everywhere) for e in examples]
    k = next((p.topk_ids.shape[-1] for p in parts if p.topk_ids is not None), 0)
    ids, labels, kd_labels, topk_ids, topk_lps, positions = [], [], [], [], [], []
    boundary = torch.full((1, 1), IGNORE, dtype=torch.long)
    for part in parts:
        length = part.input_ids.shape[1]
        ids.append(part.input_ids)
        positions.append(torch.arange(length)[None])
        labels += [part.labels, boundary]  # a sequence's last position predicts nothing
        kd_labels += [part.kd_labels, boundary]
        if k:
            if part.topk_ids is None:  # filler rows, as collate makes them
                part.topk_ids = torch.arange(k).expand(1, length - 1, k).clone()
                part.topk_logprobs = torch.zeros((1, length - 1, k))
            topk_ids += [part.topk_ids, torch.arange(k).expand(1, 1, k)]
            topk_lps += [part.topk_logprobs, torch.zeros((1, 1, k))]
    input_ids = torch.cat(ids, dim=1)
    return Batch(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        labels=torch.cat(labels, dim=1)[:, :-1],
        kd_labels=torch.cat(kd_labels, dim=1)[:, :-1],
        topk_ids=torch.cat(topk_ids, dim=1)[:, :-1] if k else None,
        topk_logprobs=torch.cat(topk_lps, dim=1)[:, :-1] if k else None,
        position_ids=torch.cat(positions, dim=1),
    )


def pack_pairs(pairs: list[Pair], pad_id: int) -> Batch:
    """The chosen responses (sequences ``0 .. P-1``) then the rejected ones, each after its
    prompt, packed into one row (as :func:`~.examples.collate_pairs` orders them)."""
    sequences = [Example(p.prompt, p.chosen) for p in pairs]
    sequences += [Example(p.prompt, p.rejected) for p in pairs]
    return pack(sequences, pad_id)


def sequence_index(position_ids: torch.Tensor) -> torch.Tensor:
    """``[1, N]``: the sequence each position of a packed row belongs to (0, 1, ...)."""
    return (position_ids == 0).long().cumsum(-1) - 1


def sequence_logprobs(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """``[S]``: Σ log p(label) over each packed sequence's counted positions (float32), as
    :func:`kdlang.runtime.losses.dpo.sequence_logprobs` gives each padded row."""
    assert batch.position_ids is not None
    nll = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        batch.labels.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    )
    index = sequence_index(batch.position_ids)[:, :-1].reshape(-1)
    count = int(batch.position_ids.eq(0).sum())
    return torch.zeros(count, dtype=nll.dtype, device=nll.device).index_add(0, index, -nll)
