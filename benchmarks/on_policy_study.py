"""On-policy distillation where exposure bias matters: running sums, CPU-sized.

    python benchmarks/on_policy_study.py [--seeds 0 1 2] [--methods ...] [--steps 150]
                                         [--digits 8] [--work DIR] [--out docs]

The task: "Q: 35271940\\nA:" -> " 38071504" — answer digit i is the sum of the question's
first i digits, mod 10. Written left to right, each answer digit is the one before it plus one
question digit, so a student that slips once is in a context it never saw when it learned on
the teacher's (correct) text: the exposure bias that on-policy methods address by learning on
the student's own samples.

Assets (made once into ``--work``, offline): the quickstart's tokenizer (every digit is one
token), a teacher GPT-2 (4 layers x 128) trained on fresh questions in a plain loop until its
greedy answers are exact on the held-out and dev questions, and the student: the same training
stopped at its first evaluation with exact match >= 0.3 (a fine-tuned, imperfect start). Then one ``kdlang run`` per (method, seed): the same student, rows, steps, batch and learning
rate, differing only in the train's losses and sampling settings (:data:`METHODS`), evaluated
greedily on the held-out questions: exact match of the whole answer, and accuracy per answer
position (where exposure bias shows as accuracy falling along the answer).

Writes ``<out>/on-policy-study.json`` and the picture ``<out>/images/on_policy_study.png``, and
prints the table. Every process here runs on one thread (``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from source_tree import ROOT

N_TRAIN, N_DEV, N_TEST = 4000, 100, 300
BATCH, LR = 32, 1e-3
STUDENT_AT = 0.3
PROMPT = "Q: {question}\nA:"
SETTINGS = {"digits": 8}
"""The answer length, set from ``--digits`` (assets record it)."""


def digits() -> int:
    return SETTINGS["digits"]


def running_sums(values: list[int]) -> list[int]:
    total, sums = 0, []
    for d in values:
        total = (total + d) % 10
        sums.append(total)
    return sums


def make_row(values: list[int]) -> dict:
    question = "".join(map(str, values))
    answer = " " + "".join(map(str, running_sums(values)))
    return {
        "question": question,
        "answer": answer,
        "text": PROMPT.format(question=question) + answer,
    }


def rows(rng: random.Random, n: int, taken: set) -> list[dict]:
    """``n`` rows of questions not in ``taken`` (their questions are added to it)."""
    made = []
    while len(made) < n:
        values = [rng.randrange(10) for _ in range(digits())]
        key = tuple(values)
        if key not in taken:
            taken.add(key)
            made.append(make_row(values))
    return made


def _assets_module():
    spec = importlib.util.spec_from_file_location(
        "make_assets", ROOT / "recipes" / "assets" / "make_assets.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def greedy_exact(model, tokenizer, data: list[dict], batch: int = 100) -> float:
    import torch

    model.eval()
    right = 0
    tokenizer.padding_side = "left"
    for start in range(0, len(data), batch):
        chunk = data[start : start + batch]
        prompts = [PROMPT.format(question=r["question"]) for r in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=digits() + 2, do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        right += sum(t.strip() == r["answer"].strip() for t, r in zip(texts, chunk, strict=True))
    model.train()
    return right / len(data)


def teacher_after_slip(model, tokenizer, data: list[dict], seed: int = 0) -> dict:
    """What the teacher writes after a wrong answer digit: one slip per question (digit j - 1
    replaced by another), then its greedy next digit. ``follows``: the slipped digit plus
    question digit j (it continues from the student's mistake); ``recovers``: the true sum."""
    import torch

    rng = random.Random(seed)
    assets = _assets_module()
    follows = recovers = 0
    prompts, targets, wants = [], [], []
    for r in data:
        q = [int(c) for c in r["question"]]
        a = running_sums(q)
        j = rng.randrange(1, digits())
        slipped = (a[j - 1] + rng.randrange(1, 10)) % 10
        prefix = [*a[: j - 1], slipped]
        prompts.append(PROMPT.format(question=r["question"]))
        targets.append(" " + "".join(map(str, prefix)))
        wants.append(((slipped + q[j]) % 10, a[j]))
    batch = assets.encode_batch(tokenizer, prompts, targets)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    lengths = batch["attention_mask"].sum(1)  # the <eos> the batch appends is the next slot
    for i, (follow, truth) in enumerate(wants):
        said = tokenizer.decode(int(logits[i, lengths[i] - 2].argmax()))
        follows += said == str(follow)
        recovers += said == str(truth)
    return {"follows": follows / len(data), "recovers": recovers / len(data)}


def make_assets(work: Path, seed: int = 0, until_student: bool = False) -> dict:
    """Data, the trained teacher and the student in ``work`` (reused when there). The student is
    the teacher's training stopped early: the checkpoint of the first evaluation with greedy
    exact match >= :data:`STUDENT_AT` (the methods' papers start from a fine-tuned student)."""
    done = work / "assets.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if info["digits"] != digits():
            raise SystemExit(f"{work} holds assets for {info['digits']} digits; use another --work")
        return info
    import torch
    from transformers import AutoTokenizer

    assets = _assets_module()
    work.mkdir(parents=True, exist_ok=True)
    rng, taken = random.Random(seed), set()
    test, dev, train = rows(rng, N_TEST, taken), rows(rng, N_DEV, taken), rows(rng, N_TRAIN, taken)
    for name, part in (("train", train), ("dev", dev), ("test", test)):
        with (work / f"{name}.jsonl").open("w") as out:
            out.writelines(json.dumps(r) + "\n" for r in part)
    held_out = {tuple(int(c) for c in r["question"]) for r in test + dev}
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "recipes" / "assets" / "tiny-teacher")
    teacher = assets.new_model(assets.gpt2_config(tokenizer, assets.TEACHER_SHAPE), seed)
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=1e-3, weight_decay=0.0)
    fresh = random.Random(seed + 100)
    began, steps, accuracy, student_info = time.monotonic(), 0, 0.0, {}
    while accuracy < 1.0 and steps < 20_000:
        for group in optimizer.param_groups:  # warm up, then constant
            group["lr"] = 1e-3 * min(1.0, (steps + 1) / 200)
        picked = rows(fresh, 64, set(held_out))
        batch = assets.encode_batch(
            tokenizer, [PROMPT.format(question=r["question"]) for r in picked],
            [r["answer"] for r in picked],
        )  # fmt: skip
        loss = teacher(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(teacher.parameters(), 1.0)
        optimizer.step()
        steps += 1
        if steps % 250 == 0:
            accuracy = min(
                greedy_exact(teacher, tokenizer, test), greedy_exact(teacher, tokenizer, dev)
            )
            print(
                f"  teacher step {steps}: loss {loss.item():.4f}, exact {accuracy:.3f}", flush=True
            )
            if accuracy >= STUDENT_AT and not (work / "student").is_dir():
                teacher.save_pretrained(work / "student")  # the warm start: this run, stopped early
                tokenizer.save_pretrained(work / "student")
                student_info = {"student_steps": steps, "student_exact": accuracy}
                if until_student:
                    return student_info
    teacher.eval()
    teacher.save_pretrained(work / "teacher")
    tokenizer.save_pretrained(work / "teacher")
    info = {
        **student_info,
        "digits": digits(),
        "rows": {"train": N_TRAIN, "dev": N_DEV, "test": N_TEST},
        "teacher_steps": steps,
        "teacher_exact": accuracy,
        "teacher_after_slip": teacher_after_slip(teacher, tokenizer, test),
        "teacher_seconds": round(time.monotonic() - began, 1),
        "teacher_params": sum(p.numel() for p in teacher.parameters()),
        "shape": assets.TEACHER_SHAPE,
    }
    done.write_text(json.dumps(info, indent=1))
    return info


def methods(steps: int) -> dict[str, str]:
    """Each method's train lines (beyond what every run shares), from its gallery recipe."""
    sample = f"sample_temperature = 1.0  max_new_tokens = {digits() + 1}"
    return {
        "sft": "loss sft weight 1.0",
        "forward_kl": "loss forward_kl weight 1.0 temperature 1.0",
        "jsd_offpolicy": "loss jsd(beta = 0.5) weight 1.0 temperature 1.0",  # GKD at λ = 0
        "gkd_0.5": f"on_policy = 0.5  {sample}\n  loss jsd(beta = 0.5) weight 1.0 temperature 1.0",
        "gkd_1": f"on_policy = 1.0  {sample}\n  loss jsd(beta = 0.5) weight 1.0 temperature 1.0",
        "minillm": f"on_policy = 1  {sample}\n  teacher_mix = 0.2  ppo_epochs = 4\n"
        "  lm_data = problems  lm_text = text  lm_weight = 1.0\n"
        "  loss minillm(gamma = 1.0, clip_eps = 0.2) weight 1.0",
        "distillm_adaptive": f"eval_data = dev  eval_every = {max(1, steps // 10)}\n"
        f"  replay = adaptive(threshold = 0.5, capacity = 1000, loss_eps = 0.1)  {sample}\n"
        "  loss skew_kl(alpha = 0.1) weight 1.0 temperature 1.0",
    }


METHODS = list(methods(150))


def recipe(method: str, seed: int, steps: int) -> str:
    return f"""recipe "study-{method}-{seed}" {{
  seed = {seed}
}}

model teacher = hf("../../teacher")
model student = hf("../../student")
dataset problems = jsonl("../../train.jsonl")
dataset dev = jsonl("../../dev.jsonl")
dataset heldout = jsonl("../../test.jsonl")
prompt ask = "Q: {{{{ question }}}}\\nA:"

train distill {{
  student = student  teacher = teacher  data = problems  prompt = ask  target = answer
  max_steps = {steps}  batch = {BATCH}  lr = {LR}  lr_schedule = cosine(warmup = 5%)
  checkpoint_every = {steps}
  {methods(steps)[method]}
}}

eval exact = evaluate(distill, heldout) {{
  prompt = ask
  max_tokens = {digits() + 1}
  metric exact = exact_match(output, answer)
}}
"""


def position_accuracy(predictions: Path) -> list[float]:
    """Per answer position, the share of held-out answers whose digit there is right."""
    right = [0] * digits()
    lines = predictions.read_text().splitlines()
    for line in lines:
        row = json.loads(line)
        said, want = row.get("output", "").strip(), row["answer"].strip()
        for i in range(digits()):
            right[i] += i < len(said) and said[i] == want[i]
    return [r / len(lines) for r in right]


def run_one(work: Path, method: str, seed: int, steps: int) -> dict:
    folder = work / "runs" / f"{method}-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path, kept = folder / "recipe.kd", folder / "result.json"
    if kept.is_file() and path.read_text() == recipe(method, seed, steps):
        return json.loads(kept.read_text())  # this run was measured before
    path.write_text(recipe(method, seed, steps))
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kdlang", "run", str(path), "--workdir", str(folder), "-q",
         "--device", "cpu"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    seconds = time.monotonic() - began
    if done.returncode != 0:
        return {"method": method, "seed": seed, "error": (done.stderr or done.stdout)[-800:]}
    report = max((folder / "runs").glob("*/report.json"), key=lambda p: p.stat().st_mtime)
    document = json.loads(report.read_text())
    (evaluation,) = document["evaluations"]
    node = next(n for n in document["nodes"] if n["name"] == "exact")
    result = {
        "method": method,
        "seed": seed,
        "exact": evaluation["metrics"]["exact"],
        "positions": position_accuracy(Path(node["output"]) / "predictions.jsonl"),
        "seconds": round(seconds, 1),
    }
    kept.write_text(json.dumps(result) + "\n")
    return result


def summarise(results: list[dict]) -> list[dict]:
    table = []
    for method in dict.fromkeys(r["method"] for r in results):
        done = [r for r in results if r["method"] == method and "exact" in r]
        if not done:
            continue
        exact = [r["exact"] for r in done]
        late = [statistics.mean(r["positions"][digits() // 2 :]) for r in done]
        table.append(
            {
                "method": method,
                "seeds": len(done),
                "exact_mean": statistics.mean(exact),
                "exact_sd": statistics.stdev(exact) if len(exact) > 1 else 0.0,
                "exact_each": exact,
                "late_positions_mean": statistics.mean(late),
                "seconds_mean": statistics.mean(r["seconds"] for r in done),
            }
        )
    return table


def picture(results: list[dict], table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [row["method"] for row in table]
    left.bar(names, [row["exact_mean"] for row in table], yerr=[row["exact_sd"] for row in table])
    for i, row in enumerate(table):
        left.scatter([i] * len(row["exact_each"]), row["exact_each"], color="black", s=8, zorder=3)
    left.set_ylabel("held-out exact match")
    left.set_title("whole answer right (mean, sd, each seed)")
    left.tick_params(axis="x", labelrotation=20)
    for name in names:
        curves = [r["positions"] for r in results if r["method"] == name and "positions" in r]
        mean = [statistics.mean(c[i] for c in curves) for i in range(digits())]
        right.plot(range(1, digits() + 1), mean, marker="o", markersize=3, label=name)
    right.set_xlabel("answer position")
    right.set_ylabel("digit right (mean over seeds)")
    right.set_title("accuracy along the answer")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--digits", type=int, default=SETTINGS["digits"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/kdlang-on-policy-study"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    SETTINGS["digits"] = args.digits
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    began = time.monotonic()
    info = make_assets(args.work)
    print(f"assets: {info}", flush=True)
    results = []
    for seed in args.seeds:
        for method in args.methods:
            results.append(run_one(args.work, method, seed, args.steps))
            said = results[-1].get("exact", results[-1].get("error"))
            print(f"  {method} seed {seed}: {said} ({results[-1].get('seconds')} s)", flush=True)
    table = summarise(results)
    lines = {m: methods(args.steps)[m] for m in args.methods}
    document = dict(assets=info, steps=args.steps, batch=BATCH, lr=LR, methods=lines)
    document.update(results=results, table=table, seconds=round(time.monotonic() - began, 1))
    (args.out / "on-policy-study.json").write_text(json.dumps(document, indent=1) + "\n")
    picture(results, table, args.out / "images" / "on_policy_study.png")
    late = f"positions {digits() // 2 + 1}-{digits()}"
    print(f"\n| method | seeds | exact match (mean ± sd) | each seed | {late} | s/run |")
    print("|---|---|---|---|---|---|")
    for row in table:
        each = ", ".join(f"{x:.3f}" for x in row["exact_each"])
        print(
            f"| {row['method']} | {row['seeds']} | {row['exact_mean']:.3f} ± {row['exact_sd']:.3f}"
            f" | {each} | {row['late_positions_mean']:.3f} | {row['seconds_mean']:.0f} |"
        )


if __name__ == "__main__":
    main()
