"""Greedy decode throughput on one GPU: kdlang's decode engine against kdlang's per-token loop
(what ``HFTeacher.generate`` ran before the engine) and transformers' ``generate`` with its
dynamic and its static cache, in the same process.

    python benchmarks/decode.py [--batches 16,64,128,256] [--models 1b,3b] [--compile]
                                [--out benchmarks/results] [--name decode_h200]

Models: random-init, bf16. ``1b``: the shape of the issue's probe (Llama-1B-like: hidden 2048,
16 layers, 32/8 heads, MLP 8192, vocabulary 32,000, tied embeddings). ``3b``: a
Llama-3.2-3B-like teacher (hidden 3072, 28 layers, 24/8 heads, MLP 8192, vocabulary 128,256).
Work: prompts of 64 random tokens, 128 new tokens each, greedy, EOS never ends a sequence.
The engine decodes max(128, batch) prompts through ``batch`` slots; the per-token loop and
transformers decode one batch of ``batch`` prompts (every batch of a run has the same shape, so
one batch gives the run's rate), after a warm-up. ``--compile`` lets transformers compile its
static-cache forward (its default; minutes of compilation per batch size); without it the
static cache runs eagerly.

Beside each rate, the bound: a decode step must read every weight and each row's keys and
values once (bytes over the copy bandwidth measured here) and do 2 FLOPs per weight per row
(over the bf16 matrix rate measured here); the slower of the two is the floor. Greedy outputs:
the engine's tokens against transformers' dynamic-cache ``generate`` for the same prompts, and
the engine's own tokens at every batch size (its contract: the same tokens whatever the batch).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from source_tree import ROOT, use_checkout

PROMPT, NEW = 64, 128
SHAPES = {
    "1b": ({"hidden": 2048, "layers": 16, "heads": 32, "kv_heads": 8, "mlp": 8192}, 32000),
    "3b": ({"hidden": 3072, "layers": 28, "heads": 24, "kv_heads": 8, "mlp": 8192}, 128256),
}


def build(name: str):
    import torch
    from shapes import llama_config
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    shape, vocab = SHAPES[name]
    words = {f"w{i}": i for i in range(vocab - 3)}
    words.update({"<pad>": vocab - 3, "<s>": vocab - 2, "</s>": vocab - 1})
    core = Tokenizer(models.WordLevel(words, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    config = llama_config(shape, vocab, eos_token_id=vocab - 1, pad_token_id=vocab - 3)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    return model, tokenizer, vocab


def prompts_for(count: int, vocab: int) -> list[list[int]]:
    import torch

    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, vocab - 3, (count, PROMPT), generator=generator).tolist()


def specs_of(prompts, new=NEW):
    from kdlang.runtime.teachers.hf_decode import SequenceSpec

    return [
        SequenceSpec(prompt_ids=p, seed=0, temperature=0.0, top_p=1.0, max_tokens=new)
        for p in prompts
    ]


def timed(fn):
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, result


def words_of(texts) -> list[list[str]]:
    """The word-level tokens of decoded texts (the benchmark's tokenizer maps word <-> id)."""
    return [t.split() for t in texts]


def run_engine(model, tokenizer, prompts, batch):
    from kdlang.runtime.teachers.decode_engine import DecodeEngine

    engine = DecodeEngine(model, slots=batch, context=256)
    specs = specs_of(prompts)
    engine.run(specs[:batch], tokenizer, eos_ids=set(), pad_id=0)  # capture, warm up
    seconds, out = timed(lambda: engine.run(specs, tokenizer, eos_ids=set(), pad_id=0))
    return seconds, words_of(g.text for g in out)


def run_loop(model, tokenizer, prompts):
    from kdlang.runtime.teachers.hf_decode import decode_padded

    specs = specs_of(prompts)
    decode_padded(model, tokenizer, specs_of(prompts, 4), set(), 0)
    seconds, out = timed(lambda: decode_padded(model, tokenizer, specs, set(), 0))
    return seconds, [None] * len(out)


def run_generate(model, tokenizer, prompts, cache: str | None, compile_static: bool):
    import torch

    ids = torch.tensor(prompts, device="cuda")
    settings = dict(do_sample=False, min_new_tokens=NEW, pad_token_id=0)
    if cache:
        settings.update(cache_implementation=cache, disable_compile=not compile_static)

    def go(new):
        with torch.no_grad():
            return model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, **settings
            )

    go(NEW)  # warm-up at the timed shape (a static cache compiles for its length)
    seconds, out = timed(lambda: go(NEW))
    new = out[:, ids.shape[1] :].tolist()
    return seconds, words_of(tokenizer.batch_decode(new, skip_special_tokens=True))


def ceilings():
    """(copy bandwidth in bytes/s counting read + write, bf16 matmul FLOP/s), measured."""
    import torch

    a = torch.empty(2 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    seconds, _ = timed(lambda: [b.copy_(a) for _ in range(10)])
    bandwidth = 2 * a.numel() * 10 / seconds
    x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    x @ x
    seconds, _ = timed(lambda: [x @ x for _ in range(10)])
    return bandwidth, 2 * 8192**3 * 10 / seconds


def bound(model, batch: int, bandwidth: float, flops: float) -> float:
    """Tokens/s no decode can beat at ``batch`` rows, mean context PROMPT + NEW / 2."""
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    head = config.hidden_size // config.num_attention_heads
    kv_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head * 2
    step_bytes = 2 * params + batch * (PROMPT + NEW // 2) * kv_per_token
    step = max(step_bytes / bandwidth, 2 * params * batch / flops)
    return batch / step


def agreement(mine, theirs) -> str:
    """Rows identical, and the share of tokens before each row's first difference."""
    pairs = list(zip(mine, theirs, strict=True))
    same = sum(a == b for a, b in pairs)
    prefix = sum(
        next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        for a, b in pairs
    )
    total = max(1, sum(len(b) for b in theirs))
    return f"{same}/{len(pairs)} rows, {prefix / total:.1%} tokens"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="16,64,128,256")
    parser.add_argument("--models", default="1b,3b")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument(
        "--engine-only", action="store_true", help="time the engine alone (no baselines)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="decode_h200")
    args = parser.parse_args()
    use_checkout("kdlang.runtime.teachers.decode_engine")
    import torch

    bandwidth, flops = ceilings()
    rows = []
    for name in args.models.split(","):
        model, tokenizer, vocab = build(name)
        engine_tokens: dict[int, list] = {}
        for batch in (int(b) for b in args.batches.split(",")):
            prompts = prompts_for(max(128, batch), vocab)
            row = {"model": name, "batch": batch, "prompts": len(prompts)}
            seconds, engine_tokens[batch] = run_engine(model, tokenizer, prompts, batch)
            row["engine"] = len(prompts) * NEW / seconds
            row["bound"] = bound(model, batch, bandwidth, flops)
            if args.engine_only:
                rows.append(row)
                print(
                    json.dumps(
                        {k: round(v) if isinstance(v, float) else v for k, v in row.items()}
                    ),
                    flush=True,
                )
                continue
            seconds, _ = run_loop(model, tokenizer, prompts[:batch])
            row["loop"] = batch * NEW / seconds
            seconds, dynamic = run_generate(model, tokenizer, prompts[:batch], None, False)
            row["hf_dynamic"] = batch * NEW / seconds
            seconds, _ = run_generate(model, tokenizer, prompts[:batch], "static", args.compile)
            row["hf_static"] = batch * NEW / seconds
            row["greedy_vs_hf"] = agreement(engine_tokens[batch][:batch], dynamic)
            first = engine_tokens[min(engine_tokens)]
            row["engine_across_batches"] = agreement(engine_tokens[batch][:128], first[:128])
            rows.append(row)
            print(
                json.dumps({k: round(v) if isinstance(v, float) else v for k, v in row.items()}),
                flush=True,
            )
            torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()
    if args.engine_only:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
        return
    write(rows, args, bandwidth, flops)


def write(rows, args, bandwidth: float, flops: float) -> None:
    import torch
    import transformers

    static = "compiled" if args.compile else "eager"
    lines = [
        f"# Greedy decode throughput, {torch.cuda.get_device_name()}",
        "",
        f"`python benchmarks/decode.py --batches {args.batches} --models {args.models}"
        f"{' --compile' if args.compile else ''}`; torch {torch.__version__}, transformers "
        f"{transformers.__version__}. Prompts of {PROMPT} tokens, {NEW} new tokens, greedy, bf16. "
        f"Measured ceilings: copy {bandwidth / 1e12:.2f} TB/s, bf16 matmul {flops / 1e12:.0f} TFLOP/s.",
        "",
        "| model | batch | kdlang engine tok/s | per-token loop (before) | transformers dynamic | "
        f"transformers static ({static}) | engine / loop | engine / best transformers | bound tok/s "
        "| engine % of bound | greedy: engine = transformers dynamic | engine across batch sizes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = max(r["hf_dynamic"], r["hf_static"])
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['engine']:,.0f} | {r['loop']:,.0f} | "
            f"{r['hf_dynamic']:,.0f} | {r['hf_static']:,.0f} | {r['engine'] / r['loop']:.1f}x | "
            f"{r['engine'] / best:.1f}x | {r['bound']:,.0f} | {r['engine'] / r['bound']:.0%} | "
            f"{r['greedy_vs_hf']} | {r['engine_across_batches']} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
