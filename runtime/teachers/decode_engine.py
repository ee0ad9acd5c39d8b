"""The decode engine: continuous batching over a static KV cache, one step a CUDA graph.

``DecodeEngine(model, slots=B, context=C)`` owns ``B`` slots, each a cache row of ``C``
positions (:mod:`.decode_static`). A call of :meth:`DecodeEngine.run` puts sequences into free
slots, writes their prompts' keys in chunks (``prefill_rows`` prompts × ``prefill_chunk``
tokens per forward), and decodes every slot one token per step. The step — forward, sampling
(temperature, top-k, top-p, the sequence's own uniforms: the per-token loop's
:func:`.hf_decode.sample_next`), top-k log-probs — reads and writes only preallocated
buffers, so on CUDA it is captured once in a graph and replayed. The host reads
the produced tokens every ``sync_every`` steps (never per token): it ends sequences at EOS,
stop strings or ``max_tokens`` and refills their slots with waiting sequences.

Invariance: every forward runs at a fixed shape (``B`` rows per decode step, ``prefill_rows``
× ``prefill_chunk`` per prefill), a sequence's keys sit at the same slots whichever slot it
takes, rows never attend to each other, and sample ``t`` of a sequence uses uniform ``t`` of
its own seeded stream (the same stream as the per-token loop of :mod:`.hf_decode`). So a
sequence decodes the same tokens whatever else is in the engine, and whichever slot it gets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .base import Generation
from .decode_rows import Row, prefill_units
from .decode_static import StaticRunner, unsupported_reason
from .hf_decode import SequenceSpec, build_generation, sample_next

MAX_SLOTS = 256
CONTEXT_STEP = 256
MEMORY_SHARE = 0.5  # of the free device memory, for the cache and the step's buffers


def engine_reason(model: Any, specs: Sequence[SequenceSpec]) -> str | None:
    """Why :func:`engine_for` would not take ``specs`` on ``model`` (``None``: it would)."""
    param = next(model.parameters(), None)
    if param is None or param.device.type != "cuda":
        return "the model is not on a CUDA device"
    if type(param).__name__ in ("DTensor", "FlatParameter"):
        return "the model's parameters are sharded"
    if any(not s.prompt_ids for s in specs):
        return "an empty prompt"
    return unsupported_reason(model, context_for(specs))


def context_for(specs: Sequence[SequenceSpec]) -> int:
    """Cache positions the specs need, rounded up to a multiple of ``CONTEXT_STEP``."""
    need = max((len(s.prompt_ids) + max(s.max_tokens, 0) for s in specs), default=1)
    return -(-need // CONTEXT_STEP) * CONTEXT_STEP


SIZING_CONTEXT = 2048
"""The context the default slot count is sized for, whatever the first call needs: the slot
count then does not depend on which rows come first (a resumed stage starts elsewhere), and
with it the matrix kernels cuBLAS picks, so the outputs do not either."""


def default_slots(model: Any) -> int:
    """Slots whose cache of ``SIZING_CONTEXT`` positions each fits in ``MEMORY_SHARE`` of the
    free device memory (a multiple of 8, 8..256)."""
    context = SIZING_CONTEXT
    free, _ = torch.cuda.mem_get_info(next(model.parameters()).device)
    vocab = model.get_output_embeddings().out_features
    # cache + output buffers + the sampler's sorted copies of one row of logits
    per_row = StaticRunner.row_bytes(model, context) + context * 48 + vocab * 48
    slots = int(free * MEMORY_SHARE // per_row)
    return max(8, min(MAX_SLOTS, slots // 8 * 8))


def engine_for(model: Any, specs: Sequence[SequenceSpec], slots: int | None = None) -> DecodeEngine:
    """The engine kept on ``model``, rebuilt when ``specs`` need a longer context or another
    slot count is asked for (``None``: sized from free memory when first built)."""
    engine: DecodeEngine | None = model.__dict__.get("_kdlang_decode_engine")
    context = context_for(specs)
    if engine is not None and engine.context >= context and slots in (None, engine.slots):
        return engine
    if engine is not None:
        context = max(context, engine.context)
        slots = slots or engine.slots
        model.__dict__.pop("_kdlang_decode_engine")
        del engine
        torch.cuda.empty_cache()
    engine = DecodeEngine(model, slots=slots or default_slots(model), context=context)
    model.__dict__["_kdlang_decode_engine"] = engine
    return engine


class DecodeEngine:
    """``slots`` sequences decoded at once over a cache of ``context`` positions per slot.

    ``graphs`` (default: on CUDA) captures the decode step; ``sync_every`` is the most steps
    between two reads of the produced tokens; ``prefill_rows`` × ``prefill_chunk`` is the
    fixed shape of a prefill forward.
    """

    def __init__(
        self,
        model: Any,
        *,
        slots: int,
        context: int,
        graphs: bool | None = None,
        sync_every: int = 16,
        prefill_rows: int = 16,
        prefill_chunk: int = 64,
    ) -> None:
        if slots < 1 or context < 2:
            raise ValueError(f"need slots >= 1 and context >= 2, got {slots} and {context}")
        self.model = model
        self.slots, self.context = slots, context
        self.runner = StaticRunner(model, slots, context)
        device = self.runner.device
        self.graphs = device.type == "cuda" if graphs is None else graphs
        self.sync_every = max(1, sync_every)
        self.prefill_rows, self.prefill_chunk = prefill_rows, prefill_chunk
        self.vocab = model.get_output_embeddings().out_features
        width = context + 1  # the last column takes what finished slots keep producing
        self.rows = torch.arange(slots, device=device)
        self.tok = torch.zeros(slots, dtype=torch.long, device=device)
        self.pos = torch.zeros(slots, dtype=torch.long, device=device)
        self.gen = torch.zeros(slots, dtype=torch.long, device=device)
        self.temp = torch.zeros(slots, dtype=torch.float32, device=device)
        self.top_p = torch.ones(slots, dtype=torch.float32, device=device)
        self.sample_k = torch.zeros(slots, dtype=torch.long, device=device)  # top-k; 0: off
        self.unif = torch.zeros(slots, width, dtype=torch.float32, device=device)
        self.out_tok = torch.zeros(slots, width, dtype=torch.long, device=device)
        self.out_lp = torch.zeros(slots, width, dtype=torch.float32, device=device)
        self.top_k = 0
        self.out_topv = torch.zeros(slots, width, 0, dtype=torch.float32, device=device)
        self.out_topi = torch.zeros(slots, width, 0, dtype=torch.int32, device=device)
        self._graphs: dict[tuple[bool, int, bool, bool], Any] = {}
        self._pool: Any = None
        # the prefill's inputs; padding units name the scratch row (index ``slots``)
        self.pf_rows = torch.full((prefill_rows,), slots, dtype=torch.long, device=device)
        self.pf_tokens = torch.zeros(prefill_rows, prefill_chunk, dtype=torch.long, device=device)
        self.pf_pos = torch.zeros(prefill_rows, prefill_chunk, dtype=torch.long, device=device)
        self._prefill_graph: Any = None
        self._prefill_graphs: dict[bool, Any] = {}

    def __repr__(self) -> str:
        return f"DecodeEngine(slots={self.slots}, context={self.context}, graphs={self.graphs})"

    # ------------------------------------------------------------------ the call

    @torch.no_grad()
    def run(
        self,
        specs: Sequence[SequenceSpec],
        tokenizer: Any,
        *,
        eos_ids: set[int],
        pad_id: int,
        on_done: Callable[[int, Generation], None] | None = None,
    ) -> list[Generation]:
        """Decode every spec; one :class:`Generation` per spec, in order. ``on_done(i, g)``
        is called when spec ``i`` finishes (sequences finish in any order)."""
        need = context_for(specs)
        if need > self.context:
            raise ValueError(
                f"the specs need {need} cache positions; the engine has {self.context}"
            )
        if any(not s.prompt_ids for s in specs):
            raise ValueError("every sequence needs at least one prompt token")
        sampling = any(s.temperature > 0 for s in specs)
        self._ensure_top_k(max((s.top_logprobs for s in specs), default=0))
        limited = sampling and any(s.top_k > 0 for s in specs)  # else the step skips top-k
        key = (sampling, self.top_k if any(s.top_logprobs for s in specs) else 0, limited)
        step = self._step_function(key)
        self._prefill_graph = None
        if self.graphs:  # a graph keeps the autocast state it was captured under
            autocast = torch.is_autocast_enabled("cuda")
            if autocast not in self._prefill_graphs:
                self._prefill_graphs[autocast] = self._capture(self._run_prefill, pool=None)
            self._prefill_graph = self._prefill_graphs[autocast]
        results: list[Generation | None] = [None] * len(specs)
        pending = deque(i for i, s in enumerate(specs) if s.max_tokens > 0)
        for i, spec in enumerate(specs):
            if spec.max_tokens <= 0:
                results[i] = build_generation(spec, [], "length", None, None, tokenizer, eos_ids)
                if on_done is not None:
                    on_done(i, results[i])  # type: ignore[arg-type]
        occupant: list[Row | None] = [None] * self.slots
        while True:
            free = [s for s in range(self.slots) if occupant[s] is None]
            placed = []
            while free and pending:
                slot, index = free.pop(0), pending.popleft()
                occupant[slot] = Row(index, specs[index])
                placed.append(slot)
            if placed:
                self._insert(placed, [occupant[s].spec for s in placed], pad_id)  # type: ignore[union-attr]
            active = [s for s in range(self.slots) if occupant[s] is not None]
            if not active:
                break
            steps = min(self.sync_every, max(occupant[s].remaining for s in active))  # type: ignore[union-attr]
            for _ in range(steps):
                step()
            low = min(occupant[s].read for s in active)  # type: ignore[union-attr]
            high = min(max(occupant[s].read for s in active) + steps, self.context + 1)  # type: ignore[union-attr]
            block = self.out_tok[:, low:high].tolist()  # one read; Python lists from here
            for slot in active:
                row = occupant[slot]
                assert row is not None
                first = row.read - low
                if row.absorb(block[slot][first : first + steps], tokenizer, eos_ids):
                    results[row.index] = generation = self._generation(
                        slot, row, tokenizer, eos_ids
                    )
                    occupant[slot] = None
                    if on_done is not None:
                        on_done(row.index, generation)
        return results  # type: ignore[return-value]

    def _generation(self, slot: int, row: Row, tokenizer: Any, eos_ids: set[int]) -> Generation:
        count, k = len(row.tokens), row.spec.top_logprobs
        topk = None
        if k and count:
            topk = (
                # copy=True: on a CPU engine .cpu() would return views of the buffers
                self.out_topv[slot, :count, :k].to("cpu", copy=True),
                self.out_topi[slot, :count, :k].to("cpu", copy=True),
                self.out_lp[slot, :count].to("cpu", copy=True),
            )
        return build_generation(
            row.spec, row.tokens, row.finish, row.stop_at, topk, tokenizer, eos_ids
        )

    # ------------------------------------------------------------------ filling slots

    def _insert(self, slots: list[int], specs: list[SequenceSpec], pad_id: int) -> None:
        """Reset ``slots`` for ``specs``: step state, sampling settings, uniforms, prompt keys."""
        device = self.tok.device
        index = torch.tensor(slots, device=device)
        if any(s.temperature > 0 for s in specs):  # greedy rows never read their uniforms
            uniforms = torch.zeros(len(slots), self.context + 1, dtype=torch.float32)
            for i, spec in enumerate(specs):
                if spec.temperature > 0:
                    generator = torch.Generator().manual_seed(spec.seed)
                    uniforms[i, : spec.max_tokens] = torch.rand(
                        spec.max_tokens, generator=generator
                    )
            self.unif[index] = uniforms.to(device)
        self.tok[index] = torch.tensor([s.prompt_ids[-1] for s in specs], device=device)
        self.pos[index] = torch.tensor([len(s.prompt_ids) - 1 for s in specs], device=device)
        self.gen[index] = 0
        self.temp[index] = torch.tensor([s.temperature for s in specs], device=device)
        self.top_p[index] = torch.tensor([s.top_p for s in specs], device=device)
        self.sample_k[index] = torch.tensor([s.top_k for s in specs], device=device)
        for wave in prefill_units(slots, [s.prompt_ids for s in specs], self.prefill_chunk):
            for start in range(0, len(wave), self.prefill_rows):
                self._prefill(wave[start : start + self.prefill_rows], pad_id)

    def _prefill(self, units: list[tuple[int, int, list[int]]], pad_id: int) -> None:
        rows, width, last = self.prefill_rows, self.prefill_chunk, self.context - 1
        slot, start = [self.slots] * rows, [0] * rows  # padding units: the scratch row
        tokens = [[pad_id] * width for _ in range(rows)]
        for i, (s, offset, ids) in enumerate(units):
            slot[i], start[i] = s, offset
            tokens[i][: len(ids)] = ids
        pos = [[min(offset + j, last) for j in range(width)] for offset in start]
        self.pf_rows.copy_(torch.tensor(slot))
        self.pf_tokens.copy_(torch.tensor(tokens))
        self.pf_pos.copy_(torch.tensor(pos))
        if self._prefill_graph is not None:
            self._prefill_graph.replay()
        else:
            self._run_prefill()
        self.pf_rows.fill_(self.slots)  # a later capture must write nowhere but scratch

    def _run_prefill(self) -> None:
        self.runner.prefill(self.pf_rows, self.pf_tokens, self.pf_pos)

    # ------------------------------------------------------------------ the step

    def _ensure_top_k(self, k: int) -> None:
        if k <= self.top_k:
            return
        k = min(self.vocab, 1 << (k - 1).bit_length())  # grow by powers of two
        shape = (self.slots, self.context + 1, k)
        self.out_topv = torch.zeros(shape, dtype=torch.float32, device=self.tok.device)
        self.out_topi = torch.zeros(shape, dtype=torch.int32, device=self.tok.device)
        self.top_k = k
        self._graphs = {key: g for key, g in self._graphs.items() if key[1] == 0}

    def _step(self, sampling: bool, k: int, limited: bool = True) -> None:
        """One token for every slot, reading and writing only the engine's buffers."""
        logits = self.runner.decode(self.tok, self.pos)
        column = self.gen
        uniforms = self.unif.gather(1, column[:, None])[:, 0]
        chosen = sample_next(
            logits,
            self.temp,
            self.top_p,
            uniforms,
            top_k=self.sample_k if limited else None,
            all_greedy=not sampling,
        )
        self.out_tok[self.rows, column] = chosen
        if k:
            logp = torch.log_softmax(logits, dim=-1)
            values, ids = logp.topk(k, dim=-1)
            self.out_topv[self.rows, column] = values
            self.out_topi[self.rows, column] = ids.to(torch.int32)
            self.out_lp[self.rows, column] = logp.gather(1, chosen[:, None])[:, 0]
        self.tok.copy_(chosen)
        self.pos.copy_((self.pos + 1).clamp(max=self.context - 1))
        self.gen.copy_((column + 1).clamp(max=self.context))

    def _step_function(self, key: tuple[bool, int, bool]) -> Any:
        """A callable running one step of variant ``key``: a graph replay on CUDA."""
        if not self.graphs:
            return lambda: self._step(*key)
        captured = (*key, torch.is_autocast_enabled("cuda"))
        graph = self._graphs.get(captured)
        if graph is None:
            graph = self._capture(lambda: self._step(*key), pool=self._pool)
            self._pool = graph.pool()
            self._graphs[captured] = graph
        return graph.replay

    @staticmethod
    def _capture(body: Callable[[], None], pool: Any) -> Any:
        # Capturing runs the body on whatever the buffers hold; no slot is in use between
        # calls, and every slot is reset when it is filled, so that is harmless.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm up: kernels chosen, workspaces allocated
                body()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            body()
        return graph
