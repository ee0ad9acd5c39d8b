"""Distillation kernels on one GPU: kdlang against torch eager, torch.compile and Liger.

    python benchmarks/kernel_bench.py bench [--kinds ...] [--widths ...] [--rows 8192] [--out DIR]
    python benchmarks/kernel_bench.py fused [--out DIR]       # fused linear case only
    python benchmarks/kernel_bench.py tune  [--widths ...]    # kernel configurations, fwd+bwd
    python benchmarks/kernel_bench.py test  [pytest args]     # the test suite on this machine

Every case is forward + backward of a token-mean loss on bf16 logits at T = 2; time is
the median of ``triton.testing.do_bench``; "extra peak" is the most memory one step
allocates beyond what the step before it left (its gradients), as in the measured peers.
The logits-level floor is 6 bytes per entry (read student and teacher, write the
gradient, bf16); effective bandwidth is that floor over the measured time, against the
device copy rate measured in the same run. Results go to ``--out`` as JSON and markdown.

(The file is not called ``kernels.py``: a module of that name in this folder, which every script
here has on its path, would stand in for the ``kernels`` package transformers imports.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

try:
    from benchmarks.source_tree import ROOT, use_checkout  # loaded as a pytest plugin
except ImportError:
    from source_tree import ROOT, use_checkout  # run as a script

T = 2.0
KINDS = ("forward_kl", "reverse_kl", "jsd", "tvd")
WIDTHS = (128256, 32000, 151936)  # the headline width first


def bootstrap() -> None:
    """Make ``kdlang.runtime`` importable, from this checkout if kdlang is not installed (for
    this process and its children, e.g. pytest workers)."""
    use_checkout("kdlang.runtime.losses")


def pytest_configure(config) -> None:
    """As a pytest plugin (``test`` loads it), every test process bootstraps the import."""
    bootstrap()


# ---------------------------------------------------------------- measuring


def peak_extra_mib(fn) -> float:
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    fn()  # leaves its gradients allocated, like a training step before the next one
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def measure(fn, *, memory=True, rep=100) -> dict:
    import torch
    import triton

    try:
        fn()
        ms = triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median")
        out = {"ms": round(ms, 3)}
        if memory:
            out["peak_extra_MiB"] = round(peak_extra_mib(fn), 1)
        return out
    except Exception as exc:  # a failing peer is a finding, not the end of the run
        torch.cuda.empty_cache()
        return {"error": repr(exc)[:200]}


def device_facts() -> dict:
    import torch
    import triton

    x = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=20, rep=200, return_mode="median")
    return {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "copy_GBps": round(2 * 2**30 / ms / 1e6, 1),
    }


# ---------------------------------------------------------------- the peers


def torch_losses():
    """Eager formulas on fp32-upcast log-probs (what a training script writes)."""
    import torch
    import torch.nn.functional as F

    def logp(s, t):
        return F.log_softmax(s.float() / T, -1), F.log_softmax(t.float() / T, -1)

    def forward_kl(s, t):
        ls, lt = logp(s, t)
        return F.kl_div(ls, lt, log_target=True, reduction="batchmean")

    def reverse_kl(s, t):
        ls, lt = logp(s, t)
        return F.kl_div(lt, ls, log_target=True, reduction="batchmean")

    def jsd(s, t, beta=0.5):  # mixture through logsumexp, as TRL's GKD trainer
        ls, lt = logp(s, t)
        mix = torch.logsumexp(torch.stack([ls + math.log(1 - beta), lt + math.log(beta)]), 0)
        kl_t = F.kl_div(mix, lt, log_target=True, reduction="batchmean")
        kl_s = F.kl_div(mix, ls, log_target=True, reduction="batchmean")
        return beta * kl_t + (1 - beta) * kl_s

    def tvd(s, t):
        p, q = F.softmax(s.float() / T, -1), F.softmax(t.float() / T, -1)
        return 0.5 * (p - q).abs().sum(-1).mean()

    return {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "jsd": jsd, "tvd": tvd}


def liger_losses():
    """Liger's losses, fed torch (log-)softmax as their documentation shows."""
    import torch.nn.functional as F
    from liger_kernel.transformers.jsd import LigerJSD
    from liger_kernel.transformers.kl_div import LigerKLDIVLoss
    from liger_kernel.transformers.tvd import LigerTVDLoss

    kl, rkl, js, tv = (
        LigerKLDIVLoss(reduction="batchmean", log_target=True),
        LigerJSD(beta=1.0),
        LigerJSD(beta=0.5),
        LigerTVDLoss(),
    )

    def logp(s, t):
        return F.log_softmax(s.float() / T, -1), F.log_softmax(t.float() / T, -1)

    return {
        "forward_kl": lambda s, t: kl(*logp(s, t)),
        "reverse_kl": lambda s, t: rkl(*logp(s, t)),
        "jsd": lambda s, t: js(*logp(s, t)),
        "tvd": lambda s, t: tv(F.softmax(s.float() / T, -1), F.softmax(t.float() / T, -1)),
    }


def kdlang_losses(**options):
    from kdlang.runtime.kernels import entries
    from kdlang.runtime.kernels.divergence import DivergenceSpec, divergence

    def make(kind):
        weight = 0.5
        spec = DivergenceSpec(entries.MODES[kind], T, weight)
        return lambda s, t: divergence(s, t, spec, **options)

    return {kind: make(kind) for kind in KINDS}


def logits(rows, width, seed):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    return (torch.randn(rows, width, device="cuda", generator=g) * 3).to(torch.bfloat16)


def step(loss_fn, s, t):
    def run():
        s.grad = None
        loss_fn(s, t).backward()

    return run


def agreement(fn_a, fn_b, s, t) -> dict:
    """Loss and gradient of two implementations on the same inputs (relative error)."""
    s.grad = None
    la = fn_a(s, t)
    la.backward()
    ga = s.grad
    s.grad = None
    lb = fn_b(s, t)
    lb.backward()
    gb = s.grad.float()
    s.grad = None
    d_loss = abs(float(la) - float(lb)) / abs(float(lb))
    d_grad = float((ga.float() - gb).norm() / gb.norm())
    return {"loss_rel": float(f"{d_loss:.2e}"), "grad_rel": float(f"{d_grad:.2e}")}


def logits_cases(kinds, widths, rows, peers, facts) -> list[dict]:
    import torch

    out = []
    floor_gbps = facts["copy_GBps"]
    for width in widths:
        s = logits(rows, width, 0).requires_grad_(True)
        t = logits(rows, width, 1)
        floor_bytes = 6 * rows * width
        eager = torch_losses()
        impls = {"kdlang": kdlang_losses()}
        if "eager" in peers:
            impls["eager"] = eager
        if "compile" in peers:
            impls["torch.compile"] = {k: torch.compile(f) for k, f in torch_losses().items()}
        if "liger" in peers:
            try:
                impls["liger"] = liger_losses()
            except ImportError as exc:
                print("liger unavailable:", exc)
        for kind in kinds:
            check = agreement(impls["kdlang"][kind], eager[kind], s, t)
            for name, fns in impls.items():
                r = {"case": "logits", "kind": kind, "N": rows, "V": width, "impl": name}
                r.update(measure(step(fns[kind], s, t)))
                if "ms" in r:
                    r["GBps_effective"] = round(floor_bytes / r["ms"] / 1e6, 1)
                    r["floor_ms"] = round(floor_bytes / floor_gbps / 1e6, 3)
                if name == "kdlang":
                    r.update(check)
                out.append(r)
                print(json.dumps(r), flush=True)
        del s, t
        torch.cuda.empty_cache()
    return out


def fused_cases(peers, rows=8192, hs=2048, ht=4096, width=128256, chunks=(None,)) -> list[dict]:
    import torch
    from kdlang.runtime.losses import fused_linear_distill_loss

    g = torch.Generator(device="cuda").manual_seed(2)
    x_s = (torch.randn(rows, hs, device="cuda", generator=g) * 0.5).bfloat16().requires_grad_()
    w_s = (torch.randn(width, hs, device="cuda", generator=g) * hs**-0.5).bfloat16()
    w_s.requires_grad_(True)
    x_t = (torch.randn(rows, ht, device="cuda", generator=g) * 0.5).bfloat16()
    w_t = (torch.randn(width, ht, device="cuda", generator=g) * ht**-0.5).bfloat16()
    flops = 2 * rows * width * ht + 3 * 2 * rows * width * hs
    eager_kl = torch_losses()["forward_kl"]

    def run(loss_fn):
        def f():
            x_s.grad = None
            w_s.grad = None
            loss_fn().backward()

        return f

    impls = {}
    for chunk in chunks:
        name = "kdlang" if chunk is None else f"kdlang chunk={chunk}"
        impls[name] = lambda c=chunk: fused_linear_distill_loss(
            x_s, w_s, x_t, w_t, "forward_kl", temperature=T, chunk_size=c
        )

    def naive():
        with torch.no_grad():
            z_t = x_t @ w_t.T
        return eager_kl(x_s @ w_s.T, z_t)

    if "eager" in peers:
        impls["naive"] = naive
    if "liger" in peers:
        try:
            from liger_kernel.transformers.fused_linear_jsd import LigerFusedLinearJSD

            liger = LigerFusedLinearJSD(jsd_beta=0.0, temperature=T)
            impls["liger fused_linear_jsd"] = lambda: liger(x_s, w_s, x_t, w_t, None)
        except ImportError as exc:
            print("liger unavailable:", exc)
    out = []
    for name, fn in impls.items():
        r = {
            "case": "fused_linear",
            "kind": "forward_kl",
            "N": rows,
            "H_S": hs,
            "H_T": ht,
            "V": width,
            "impl": name,
        }
        r.update(measure(run(fn)))
        if "ms" in r:
            r["TFLOPs"] = round(flops / r["ms"] / 1e9, 1)
        out.append(r)
        print(json.dumps(r), flush=True)
    return out


# ---------------------------------------------------------------- tuning


def tune(widths, kinds, rows, shapes, mults=(1, 2, 4, 8, 0)) -> list[dict]:
    import torch

    out = []
    for width in widths:
        s = logits(rows, width, 0).requires_grad_(True)
        t = logits(rows, width, 1)
        for kind in kinds:
            for block, warps in shapes:
                for mult in mults:
                    segment = block * mult if mult else width
                    if mult and segment >= width:
                        continue
                    options = dict(block=block, segment=segment, num_warps=warps)
                    fn = kdlang_losses(**options)[kind]
                    r = {"kind": kind, "V": width, **options}
                    r.update(measure(step(fn, s, t), memory=False, rep=60))
                    out.append(r)
                    print(json.dumps(r), flush=True)
        del s, t
        torch.cuda.empty_cache()
    return out


# ---------------------------------------------------------------- output


def table(rows: list[dict], facts: dict) -> str:
    head = (
        f"Device: {facts['gpu']}, torch {facts['torch']}, triton {facts['triton']}; "
        f"device copy {facts['copy_GBps']} GB/s (read + write).\n\n"
    )
    lines = [
        "| case | kind | V | impl | ms | extra peak MiB | GB/s (6 B/entry) | "
        "floor ms | TFLOP/s | check |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        check = f"loss {r['loss_rel']:.1e}, grad {r['grad_rel']:.1e}" if "grad_rel" in r else ""
        lines.append(
            f"| {r['case']} | {r['kind']} | {r['V']} | {r['impl']} | "
            f"{r.get('ms', r.get('error', ''))} | {r.get('peak_extra_MiB', '')} | "
            f"{r.get('GBps_effective', '')} | {r.get('floor_ms', '')} | {r.get('TFLOPs', '')} | "
            f"{check} |"
        )
    return head + "\n".join(lines) + "\n"


def save(out_dir: Path, name: str, payload: dict, markdown: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out_dir / f"{name}.md").write_text(markdown)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["bench", "fused", "tune", "test"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--widths", nargs="+", type=int, default=list(WIDTHS))
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--peers", nargs="*", default=["eager", "compile", "liger"])
    parser.add_argument("--chunks", nargs="*", type=int, default=[])
    parser.add_argument("--shapes", nargs="*", default=["2048x4", "2048x8", "4096x8", "4096x16"])
    # segment = block × mult; 0: one program per row
    parser.add_argument("--mults", nargs="*", type=int, default=[1, 2, 4, 8, 0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args, rest = parser.parse_known_args(argv)
    bootstrap()
    if args.command == "test":
        import pytest

        return pytest.main(["-p", "no:cacheprovider", "-p", "benchmarks.kernel_bench", *rest])
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    facts = device_facts()
    print(json.dumps(facts), flush=True)
    if args.command == "tune":
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
        rows = tune(args.widths, args.kinds, args.rows, shapes, args.mults)
        save(args.out, "kernels_tune", {"device": facts, "rows": rows}, json.dumps(rows))
        return 0
    name = "kernels" if args.command == "bench" else "kernels_fused"
    rows = []

    def keep(new_rows):  # saved after every case: a run cut short keeps what it measured
        rows.extend(new_rows)
        payload = {"device": facts, "T": T, "dtype": "bfloat16", "rows": rows}
        save(args.out, name, payload, table(rows, facts))

    if args.command == "bench":
        for width in args.widths:
            keep(logits_cases(args.kinds, [width], args.rows, args.peers, facts))
    keep(fused_cases(args.peers, chunks=[None, *args.chunks]))
    print(table(rows, facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
