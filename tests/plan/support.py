"""Helpers of the planner tests: a complete recipe over the project of ``tests/check/support.py``,
and plans of it."""

from __future__ import annotations

from pathlib import Path

from kdlang.check import load_checked
from kdlang.plan import Plan, build_plan
from tests.check.support import write

RECIPE = '''\
recipe "arith-cot" {
  seed = 3
}

model teacher = hf("models/teacher")
model student = hf("models/student")

dataset problems = jsonl("data/train.jsonl")   # question, answer, level
dataset heldout  = jsonl("data/test.jsonl")

prompt solve = """
Q: {{ question }}
A:"""

stage rationales = label(problems) {
  teacher = teacher  prompt = solve  samples = 4  temperature = 0.8  max_tokens = 96
  output  = rationale
}

stage clean = filter(rationales) {
  keep matches(rationale, r"#### -?\\d+\\s*$")
  keep len(rationale) in 8..400
  dedup rationale by minhash(threshold = 0.9)
}

stage soft = teacher_logits(clean) { teacher = teacher  prompt = solve  target = rationale  top_k = 32 }

train distill {
  student = student  data = soft  prompt = solve  target = rationale
  epochs = 3  batch = 16  max_length = 2048  lr = 3e-4  lr_schedule = cosine(warmup = 5%)
  loss sft        weight 0.5
  loss forward_kl weight linear(0.0 -> 1.0, over = 30%)  temperature 2.0
}

eval accuracy = evaluate(distill, heldout) {
  prompt = solve
  metric exact_match(extract(output, r"#### (-?\\d+)"), answer)
}

export distill to "out/student"
'''
"""Every kind of node: two datasets, three stages, a train, an eval and an export."""

NODES = [
    "problems",
    "heldout",
    "rationales",
    "clean",
    "soft",
    "distill",
    "accuracy",
    "export:distill",
]


def plan_of(root: Path, text: str | None = None, overrides=(), cache: Path | None = None) -> Plan:
    """The plan of ``root/recipe.kd`` (written from ``text`` when given)."""
    if text is not None:
        write(root, {"recipe.kd": text})
    program, _ = load_checked(str(root / "recipe.kd"), list(overrides))
    return build_plan(program, str(cache or root / "cache"))


def fingerprints(root: Path, text: str | None = None, overrides=(), name: str = "recipe.kd"):
    """Node name -> fingerprint."""
    if text is not None:
        write(root, {name: text})
    program, _ = load_checked(str(root / name), list(overrides))
    return {node.name: node.fingerprint for node in build_plan(program, str(root / "cache")).nodes}
