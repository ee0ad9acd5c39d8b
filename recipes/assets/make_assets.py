"""Build the offline quickstart assets: the shared-digits task data, a tokenizer, a trained tiny
teacher and a random-init tiny student.

    python recipes/assets/make_assets.py [--out recipes/assets] [--data recipes/data/digits]
                                         [--seed 0]

The task: "which digits do 690243 and 647281 share?" -> " 246" (or " 642", " 426", ...). Any
order of the shared digits is a correct answer, so a teacher trained on random orders spreads its
probability over all of them; that spread is what token-level distillation passes on and what SFT
on one sampled answer per question does not see.

For a given seed, the data and tokenizer are the same everywhere; the weights are the same on a
given machine and torch version. It runs in about two and a half minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------- the task

PROMPT = "Q: {question}\nA:"
NUMBER_LOW, NUMBER_HIGH = 100_000, 999_999
# How many digits a question's two numbers share, and how often. Uniform 6-digit pairs share
# 2 or 3 digits most of the time and 5 almost never; this mix keeps every size common enough to
# be learned and measured. No question has an empty answer.
SHARED_COUNT_WEIGHTS = {1: 0.15, 2: 0.25, 3: 0.30, 4: 0.20, 5: 0.10}
N_TRAIN, N_TEST = 1000, 500

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK]


def shared_digits(a: int, b: int) -> list[int]:
    """The distinct digits that occur in both numbers, ascending."""
    return sorted(set(map(int, str(a))) & set(map(int, str(b))))


def question_text(a: int, b: int) -> str:
    return f"which digits do {a} and {b} share?"


def answer_text(digits: list[int]) -> str:
    """The digits written together, in the given order: [6, 2, 4] -> "624".

    No separator: with one between the digits the teacher needs several times more steps to stop
    repeating digits it has already written.
    """
    return "".join(str(d) for d in digits)


def is_correct(output: str, answer: str) -> bool:
    """Exact match up to order: `output` without whitespace, its characters sorted, equals the
    canonical `answer` (the shared digits ascending). A repeated digit, a missing or extra one,
    or any other character makes it wrong."""
    return "".join(sorted("".join(output.split()))) == answer


def pair_key(a: int, b: int) -> tuple[int, int]:
    """A question and its mirror ("b and a") count as the same question."""
    return (min(a, b), max(a, b))


def sample_pair(rng: random.Random, shared_count: int) -> tuple[int, int]:
    """A uniform 6-digit pair conditioned on sharing exactly `shared_count` digits."""
    while True:
        a, b = rng.randint(NUMBER_LOW, NUMBER_HIGH), rng.randint(NUMBER_LOW, NUMBER_HIGH)
        if a != b and len(shared_digits(a, b)) == shared_count:
            return a, b


def sample_shared_count(rng: random.Random) -> int:
    counts, weights = zip(*SHARED_COUNT_WEIGHTS.items(), strict=True)
    return rng.choices(counts, weights)[0]


def sample_questions(rng: random.Random, n: int, taken: set) -> list[tuple[int, int]]:
    """`n` new pairs, none of whose keys is in `taken`; adds their keys to `taken`."""
    pairs = []
    while len(pairs) < n:
        a, b = sample_pair(rng, sample_shared_count(rng))
        if pair_key(a, b) not in taken:
            taken.add(pair_key(a, b))
            pairs.append((a, b))
    return pairs


def row(a: int, b: int) -> dict:
    digits = shared_digits(a, b)
    return {"question": question_text(a, b), "answer": answer_text(digits), "digits": digits}


def shared_count_histogram(rows: list[dict]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in rows:
        counts[len(r["digits"])] = counts.get(len(r["digits"]), 0) + 1
    return dict(sorted(counts.items()))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


# ---------------------------------------------------------------- tokenizer


def build_tokenizer(rng: random.Random) -> PreTrainedTokenizerFast:
    """Letters merge into words; every digit, space and punctuation mark stays one token.

    The pre-tokenizer isolates each non-letter character, so no merge can ever join two digits
    and `tok(prompt) + tok(target) == tok(prompt + target)` for any split at a non-letter. The
    alphabet holds all printable ASCII, so any English prompt encodes without <unk>.
    """
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[A-Za-z]+|[^A-Za-z]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    trainer = trainers.BpeTrainer(
        vocab_size=256,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    corpus = []
    for _ in range(200):
        a, b = sample_pair(rng, sample_shared_count(rng))
        corpus.append(PROMPT.format(question=question_text(a, b)) + " " + answer_text([1]))
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=128,
    )


# ---------------------------------------------------------------- models

TEACHER_SHAPE = {"n_layer": 4, "n_embd": 128, "n_head": 4}
STUDENT_SHAPE = {"n_layer": 2, "n_embd": 96, "n_head": 4}


def gpt2_config(tokenizer: PreTrainedTokenizerFast, shape: dict) -> GPT2Config:
    return GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=128,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shape,
    )


def new_model(config: GPT2Config, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.generation_config.pad_token_id = config.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.bos_token_id = config.bos_token_id
    return model


# ---------------------------------------------------------------- teacher training


def encode_batch(tokenizer, prompts: list[str], targets: list[str]) -> dict:
    """Right-padded prompt + target + <eos>; labels count only target and <eos> tokens."""
    rows, labels = [], []
    for p, t in zip(prompts, targets, strict=True):
        p_ids = tokenizer(p, add_special_tokens=False).input_ids
        t_ids = [*tokenizer(t, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
        rows.append(p_ids + t_ids)
        labels.append([-100] * len(p_ids) + t_ids)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([r + [-100] * (width - len(r)) for r in labels]),
    }


def train_teacher(model, tokenizer, rng: random.Random, held_out: set, args) -> list[float]:
    """Fresh questions every step, each answered in a random order of its shared digits."""
    opt = torch.optim.AdamW(model.parameters(), lr=args.teacher_lr, weight_decay=0.0)
    warmup = args.teacher_steps // 20
    losses = []
    model.train()
    for step in range(args.teacher_steps):
        lr_scale = min(1.0, (step + 1) / warmup)
        lr_scale *= 0.5 * (1 + math.cos(math.pi * step / args.teacher_steps))
        for group in opt.param_groups:
            group["lr"] = args.teacher_lr * lr_scale
        prompts, targets = [], []
        while len(prompts) < args.teacher_batch:
            a, b = sample_pair(rng, sample_shared_count(rng))
            if pair_key(a, b) in held_out:
                continue
            digits = shared_digits(a, b)
            rng.shuffle(digits)
            prompts.append(PROMPT.format(question=question_text(a, b)))
            targets.append(" " + answer_text(digits))
        loss = model(**encode_batch(tokenizer, prompts, targets)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"  teacher step {step + 1:4d}  loss {sum(losses[-100:]) / 100:.4f}")
    model.eval()
    return losses


@torch.no_grad()
def exact_match(model, tokenizer, rows: list[dict], *, sample: bool, seed: int) -> float:
    """Share of `rows` answered correctly, decoding greedily or by sampling at temperature 1."""
    torch.manual_seed(seed)
    prompts = [PROMPT.format(question=r["question"]) for r in rows]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    kwargs = {"do_sample": True, "temperature": 1.0, "top_k": 0} if sample else {"do_sample": False}
    out = model.generate(**enc, max_new_tokens=16, **kwargs)
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return sum(is_correct(t, r["answer"]) for t, r in zip(texts, rows, strict=True)) / len(rows)


# ---------------------------------------------------------------- driver


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "recipes/assets")
    parser.add_argument("--data", type=Path, default=ROOT / "recipes/data/digits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-steps", type=int, default=1000)
    parser.add_argument("--teacher-batch", type=int, default=64)
    parser.add_argument("--teacher-lr", type=float, default=1e-3)
    args = parser.parse_args()

    torch.set_num_threads(min(2, torch.get_num_threads()))
    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    rng = random.Random(args.seed)

    taken: set = set()
    train = [row(a, b) for a, b in sample_questions(rng, N_TRAIN, taken)]
    test = [row(a, b) for a, b in sample_questions(rng, N_TEST, taken)]
    write_jsonl(args.data / "train.jsonl", train)
    write_jsonl(args.data / "test.jsonl", test)

    tokenizer = build_tokenizer(rng)
    teacher = new_model(gpt2_config(tokenizer, TEACHER_SHAPE), args.seed)
    student = new_model(gpt2_config(tokenizer, STUDENT_SHAPE), args.seed + 1)

    t0 = time.perf_counter()
    losses = train_teacher(teacher, tokenizer, rng, taken, args)
    train_seconds = time.perf_counter() - t0
    em = {
        "greedy": exact_match(teacher, tokenizer, test, sample=False, seed=args.seed),
        "sampled_t1": exact_match(teacher, tokenizer, test, sample=True, seed=args.seed),
    }
    student_em = exact_match(student, tokenizer, test, sample=False, seed=args.seed)
    print(f"teacher: trained in {train_seconds:.1f} s, test exact match {em}")
    print(f"student (random init): test exact match {student_em:.3f}")

    files = {}
    for name, model in (("tiny-teacher", teacher), ("tiny-student", student)):
        folder = args.out / name
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for path in sorted(folder.iterdir()):
            files[f"{name}/{path.name}"] = sha256(path)
    data_files = {name: sha256(args.data / name) for name in ("train.jsonl", "test.jsonl")}

    def param_count(m):
        return sum(p.numel() for p in m.parameters())

    report = {
        "seed": args.seed,
        "task": {
            "prompt": PROMPT,
            "shared_count_weights": SHARED_COUNT_WEIGHTS,
            "n_train": N_TRAIN,
            "n_test": N_TEST,
            "train_shared_counts": shared_count_histogram(train),
            "test_shared_counts": shared_count_histogram(test),
        },
        "vocab_size": len(tokenizer),
        "teacher": {
            **TEACHER_SHAPE,
            "parameters": param_count(teacher),
            "bytes": (args.out / "tiny-teacher/model.safetensors").stat().st_size,
            "train_steps": args.teacher_steps,
            "train_batch": args.teacher_batch,
            "train_lr": args.teacher_lr,
            "final_loss": sum(losses[-50:]) / 50,
            "test_exact_match": em,
            "train_seconds": round(train_seconds, 1),
        },
        "student": {
            **STUDENT_SHAPE,
            "parameters": param_count(student),
            "bytes": (args.out / "tiny-student/model.safetensors").stat().st_size,
            "test_exact_match": {"greedy": student_em},
        },
        "sha256": files,
        "data_sha256": data_files,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (args.out / "assets.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("vocab_size", "teacher", "student", "seconds")}))


if __name__ == "__main__":
    main()
