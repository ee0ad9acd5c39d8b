"""The recipe gallery (``recipes/*.kd``): every recipe checks, plans and is laid out canonically,
and every recipe but the quickstart (which has its own run) runs end to end in this suite on the
tiny fixture models, shrunk with ``--set`` overrides (rows, samples, tokens, steps, batch).

How a gallery recipe runs here:

- **Models.** The recipes name hub models (``meta-llama/Llama-3.2-3B-Instruct`` and ``-1B``).
  ``--set teacher.path=...`` cannot replace them yet (see
  ``test_model_and_data_paths_can_be_overridden_with_set``), so each recipe runs from a copy of
  its folder: the recipe file byte for byte, ``data/`` and ``common/`` linked, and the hub id of
  each ``hf`` model a local folder (relative to the recipe, as the runtime resolves it) linking
  to a tiny model. Everything else is changed with ``--set``.
- **Primed models.** Random tiny models write gibberish, and the filters of five recipes check
  what the text says (an answer after ``####``, a least number of words). Those recipes get a
  *primed* copy of the pair: fine-tuned for a few seconds to answer every prompt they render on
  their first rows with :data:`PRIMED_ANSWER`, a worked answer to the first math question, so
  decisively that sampling reproduces it on any machine (see :func:`primed_margin`). Rows of
  that question then pass the answer checks, the others are dropped, and the filter's report
  says so.
- **API models** are served by the local OpenAI-compatible test server: a scripted judge
  answering ``Score: N`` for ``ultrafeedback_dpo.kd``, the tiny teacher itself (its generations
  and top-k log-probs) for ``api_topk_logits.kd``; keys come from the variables the recipes
  name.

Each run is checked node by node against its plan: every node ran, row counts agree from node
to node and with the settings (``samples``, ``per_item``, ``limit``), every train made exactly
``max_steps`` steps, every export is written under the working directory, and a second plan
finds every node cached.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kdlang.check import check_files, load_checked
from kdlang.cli import app
from kdlang.ir.sources import HFModel

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
GALLERY = sorted(path.name for path in RECIPES.glob("*.kd"))
QUICKSTART = "quickstart.kd"

# The first training problem is "Eli has 23 shells and gets 11 more. ..." (answer "34"): rows of
# that question pass the answer checks; its 23 words pass `words(...) >= 20` and `>= 15`.
PRIMED_ANSWER = (
    "23 + 11 = 34. The teacher answers; the student learns from the answers and the logits "
    "of a small model.\n#### 34"
)
PRIMED_ROWS = 6  # rows of each data file whose prompts the primed models are trained on
JUDGE_KEY = "judge-key"
TEACHER_KEY = "teacher-key"


# --------------------------------------------------------------------------- check, plan, fmt


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def declared_nodes(recipe: str) -> list[str]:
    """The plan's node names a recipe's declarations call for (imports included)."""
    program, _ = load_checked(str(RECIPES / recipe))
    declared = program.recipe
    names = [*declared.datasets, *declared.stages, *declared.trains, *declared.evals]
    return names + [f"export:{export.train.name}" for export in declared.exports]


def test_the_gallery_is_every_recipe_of_the_docs():
    table = (RECIPES.parent / "docs" / "recipes.md").read_text(encoding="utf-8")
    linked = sorted({line.split("`")[1] for line in table.splitlines() if "(../recipes/" in line})
    # the quickstart has its own tests; every other recipe is in the table and in the folder
    assert set(linked) - {QUICKSTART} == set(GALLERY) - {QUICKSTART}
    assert len(set(GALLERY) - {QUICKSTART}) >= 11


@pytest.mark.parametrize("recipe", GALLERY)
def test_recipe_checks_without_any_diagnostic(recipe, monkeypatch):
    # the secrets a recipe reads are set where it runs (unset, each would be a KD0406 warning)
    for name in re.findall(r'env\("([A-Z_]+)"\)', (RECIPES / recipe).read_text()):
        monkeypatch.setenv(name, "http://127.0.0.1:9/v1")
    diagnostics, _ = check_files([str(RECIPES / recipe)])
    assert [f"{d.code} {d.message} ({d.span.file}:{d.span.line})" for d in diagnostics] == []


@pytest.mark.parametrize("recipe", GALLERY)
def test_recipe_plans_one_node_per_declaration(recipe, tmp_path):
    result = cli("plan", str(RECIPES / recipe), "--format", "json", "--cache", str(tmp_path))
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.stdout)["nodes"]
    names = [node["name"] for node in nodes]
    assert sorted(names) == sorted(declared_nodes(recipe))
    assert len(set(names)) == len(names)
    for position, node in enumerate(nodes):  # execution order: inputs first
        assert set(node["inputs"]) <= set(names[:position]), node["name"]
        assert node["status"] == "will run"  # an empty cache


@pytest.mark.parametrize("recipe", [*GALLERY, "common/math_prompts.kd"])
def test_recipe_is_formatted(recipe):
    path = RECIPES / recipe
    before = path.read_bytes()
    result = cli("fmt", "--check", str(path))
    assert result.exit_code == 0, result.output
    assert path.read_bytes() == before


def test_model_and_data_paths_can_be_overridden_with_set(tiny_pair, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n', encoding="utf-8")
    overrides = [
        f'teacher.path="{tiny_pair.teacher}"',
        f'student.path="{tiny_pair.student}"',
        f'problems.path="{data}"',
    ]
    diagnostics, _ = check_files([str(RECIPES / "cot_distill.kd")], overrides)
    assert [f"{d.code} {d.message}" for d in diagnostics] == []


# --------------------------------------------------------------------------- models and servers


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def recipe_prompt(recipe: str, name: str) -> str:
    program, _ = load_checked(str(RECIPES / recipe))
    return program.recipe.prompts[name].text


def primed_conversations(*, math_only: bool) -> list[tuple[str, str | None]]:
    """(prompt, system) of every request the primed recipes send their generator on their first
    rows, rendered from the recipes' own prompts and data."""
    from kdlang.runtime.context import PromptTemplate

    def render(recipe: str, prompt: str, data: str) -> list[str]:
        template = PromptTemplate(prompt, recipe_prompt(recipe, prompt))
        rows = read_jsonl(RECIPES / "data" / data)[:PRIMED_ROWS]
        return [template.render(**row) for row in rows]

    pairs = [(p, None) for p in render("cot_distill.kd", "solve_cot", "math/train.jsonl")]
    if math_only:
        return pairs
    system = recipe_prompt("orca_explain.kd", "explain_system")
    pairs += [(p, system) for p in render("orca_explain.kd", "user", "instructions/seeds.jsonl")]
    pairs += [(p, None) for p in render("topic_curation.kd", "write_item", "topics/topics.jsonl")]
    return pairs


# How decisive a primed model is: at every position of PRIMED_ANSWER, the target token's logit
# beats every other token's by at least PRIMED_MARGIN. Why this reproduces the answer whatever
# the machine, the temperature T <= 1 (the gallery samples at 0.7 to 1.0) or top_p:
#
# - Sampling draws u = k * 2^-24 (torch.rand, float32), so u <= 1 - 2^-24, and takes the top
#   token unless u * cdf[-1] >= cdf[0], i.e. unless the mass of all other tokens reaches
#   2^-24 = 5.96e-8 of the total. top_p < 1 only removes tokens from that mass.
# - With a margin m, each of the V - 1 other tokens weighs at most exp(-m / T) <= exp(-m) next
#   to the top token (T <= 1), so their mass is below (V - 1) * exp(-m). A margin of
#   ln(V - 1) + 24 ln 2 (22.4 for the 320-token vocabulary) makes it 2^-24; one logit more
#   makes it 2^-24 / e = 2.2e-8, below half an ulp of 1.0: the float32 softmax sum rounds to
#   exactly 1, the top token's probability is exactly 1.0 and cdf[0] = 1 > u * cdf[-1].
# - That one logit of slack is 1000 times what floating-point rounding moves a logit on any
#   x86 CPU (another kernel, ISA or reduction order, left padding in a batch: below 1e-3, see
#   tests/runtime/teachers/test_hf_batch_decode.py), so no machine's rounding can undo it.
#
# By induction every generated token is the target's, so every step's context is the one
# measured here, EOS included. A mean loss below a threshold is not enough: with a mean of 0.003
# one position still gave " 3" (ending the text in "## 34") 15% after the first "##" of "####".
def primed_margin(vocab: int) -> float:
    return math.log(vocab - 1) + 24 * math.log(2) + 1.0


def target_margins(logits, labels):
    """The target token's logit minus the best other logit, at every labelled position."""
    shifted, targets = logits[:, :-1], labels[:, 1:]
    labelled = targets != -100
    rows, targets = shifted[labelled], targets[labelled]
    own = rows.gather(-1, targets[:, None]).squeeze(-1)
    others = rows.scatter(-1, targets[:, None], float("-inf")).amax(dim=-1)
    return own - others


def prime(source: Path, out: Path, conversations: list[tuple[str, str | None]]) -> Path:
    """Fine-tune the model in ``source`` until it answers every conversation with PRIMED_ANSWER
    by a margin of :func:`primed_margin` logits at every token (so sampling at any temperature
    up to 1 reproduces it) and save it to ``out``. Prompts are encoded exactly as the ``hf``
    teacher encodes them."""
    import torch
    from kdlang.runtime.teachers.prompts import encode_pair
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    target = PRIMED_ANSWER + tokenizer.eos_token
    encoded = [
        encode_pair(tokenizer, prompt, target, system, chat=True)
        for prompt, system in conversations
    ]
    length = max(len(p) + len(t) for p, t in encoded)
    ids = torch.full((len(encoded), length), tokenizer.pad_token_id)
    labels = torch.full((len(encoded), length), -100)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, (prompt_ids, target_ids) in enumerate(encoded):
        end = len(prompt_ids) + len(target_ids)
        ids[row, :end] = torch.tensor(prompt_ids + target_ids)
        labels[row, len(prompt_ids) : end] = torch.tensor(target_ids)
        mask[row, :end] = 1
    needed = primed_margin(model.get_output_embeddings().out_features)
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(400):
        step = model(input_ids=ids, attention_mask=mask, labels=labels)
        margins = target_margins(step.logits, labels)
        if margins.min().item() >= needed:
            break
        # Cross-entropy gets the answer right; its gradient fades as the margins grow, so a
        # hinge on every position below the margin (aiming one logit past it) finishes the job.
        loss = step.loss + torch.relu(needed + 1.0 - margins).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    worst = target_margins(logits, labels).min().item()
    assert worst >= needed, f"priming {source} did not converge: margin {worst:.2f} < {needed:.2f}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def primed_pair(tiny_pair, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("primed")
    return {
        "teacher": prime(
            tiny_pair.teacher, root / "teacher", primed_conversations(math_only=False)
        ),
        "student": prime(tiny_pair.student, root / "student", primed_conversations(math_only=True)),
    }


@pytest.fixture(scope="session")
def random_pair(tiny_pair) -> dict[str, Path]:
    return {"teacher": tiny_pair.teacher, "student": tiny_pair.student}


def judge_reply(prompt: str, seed: int | None) -> str:
    """A judge's verdict that varies with the response it reads (1..10)."""
    return f"Score: {1 + zlib.crc32(prompt.encode()) % 10}"


# --------------------------------------------------------------------------- running a recipe


def stage_recipe(recipe: str, folder: Path, models: dict[str, Path]) -> Path:
    """A copy of ``recipes/RECIPE`` in ``folder`` whose ``hf`` models resolve to ``models``
    (by declaration name); data and imports are the gallery's own."""
    folder.mkdir(parents=True)
    staged = folder / recipe
    staged.write_bytes((RECIPES / recipe).read_bytes())
    for shared in ("data", "common"):
        (folder / shared).symlink_to(RECIPES / shared, target_is_directory=True)
    program, _ = load_checked(str(staged))
    hf = {name: m for name, m in program.recipe.models.items() if isinstance(m, HFModel)}
    assert sorted(hf) == sorted(models), "every hf model of the recipe gets a tiny one"
    for name, model in hf.items():
        link = folder / model.path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(models[name], target_is_directory=True)
    return staged


def run_recipe(recipe: Path, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """``kdlang run RECIPE --workdir WORKDIR --device cpu --set ...``; returns report.json."""
    args = ["run", str(recipe), "--workdir", str(workdir), "--device", "cpu"]
    for override in overrides:
        args += ["--set", override]
    result = cli(*args)
    (path,) = (workdir / "runs").glob("*/report.json")
    document = json.loads(path.read_text(encoding="utf-8"))
    failures = {n["name"]: n["error"] for n in document["nodes"] if n["status"] != "ran"}
    assert result.exit_code == 0, f"{failures}\n{result.output}"
    return document


class Run:
    """A finished gallery run: its report, its checked program and plan (with the overrides),
    and what each node wrote."""

    def __init__(self, recipe: Path, workdir: Path, overrides: list[str], document: dict):
        from kdlang.plan import build_plan

        self.folder = recipe.parent
        self.workdir = workdir
        self.document = document
        self.program, _ = load_checked(str(recipe), overrides)
        self.recipe = self.program.recipe
        self.plan = build_plan(self.program, str(workdir / ".kdcache"))
        self.nodes = {n["name"]: n for n in document["nodes"]}

    def rows(self, name: str) -> list[dict[str, Any]]:
        from kdlang.runtime.data import read_rows

        return read_rows(Path(self.nodes[name]["output"]))

    def count(self, name: str) -> int:
        return self.nodes[name]["rows_out"]

    def metrics(self, train: str) -> list[dict[str, Any]]:
        return read_jsonl(Path(self.nodes[train]["output"]) / "metrics.jsonl")


def run_gallery(recipe: str, tmp_path: Path, models: dict[str, Path], overrides: list[str]) -> Run:
    staged = stage_recipe(recipe, tmp_path / "recipe", models)
    workdir = tmp_path / "work"
    document = run_recipe(staged, workdir, overrides)
    run = Run(staged, workdir, overrides, document)
    check_run(run)
    return run


def check_run(run: Run) -> None:
    """What holds for every gallery run, node by node."""
    document = run.document
    assert document["ok"] is True
    assert [(n["name"], n["status"]) for n in document["nodes"]] == [
        (n.name, "ran") for n in run.plan.nodes
    ]
    assert {n.status for n in run.plan.nodes} == {"cached"}  # every output was committed
    for planned in run.plan.nodes:
        node, decl = run.nodes[planned.name], planned.node
        if planned.kind == "stage" or planned.op == "train":
            feeding = decl.input.name if planned.kind == "stage" else decl.data.name
            assert node["rows_in"] == run.count(feeding), planned.name
        dropped = sum((node["dropped"] or {}).values())
        op = planned.op
        if op == "dataset":
            assert node["rows_out"] == decl.limit, planned.name
        elif op == "label":
            assert node["rows_out"] == node["rows_in"] * decl.samples, planned.name
            assert node["teacher"]["failures"] == 0
            texts = [row[decl.output] for row in run.rows(planned.name)]
            # a conversation, one answer per drawn teacher (`route = all | sample(...)`), or text
            written = list if decl.messages is not None or decl.routed() else str
            assert len(texts) == node["rows_out"] and all(isinstance(t, written) for t in texts)
        elif op == "curate":
            assert node["rows_out"] == node["rows_in"] * decl.per_item - dropped, planned.name
        elif op == "expand":
            kept = run.rows(planned.name)
            assert len(kept) == node["rows_out"] >= node["rows_in"]  # the seeds are kept
            assert [r["origin"] for r in kept[: node["rows_in"]]] == ["seed"] * node["rows_in"]
        elif op == "filter":
            assert 0 < node["rows_out"] == node["rows_in"] - dropped, planned.name
        elif op == "judge":
            assert node["rows_out"] == node["rows_in"] - dropped, planned.name
            scales = decl.metrics or {decl.output: decl.scale}
            for column, (low, high) in scales.items():
                assert all(low <= r[column] <= high for r in run.rows(planned.name)), column
        elif op in ("map", "explode", "select"):
            assert node["rows_out"] > 0, planned.name
        elif op == "pairs":
            made = run.rows(planned.name)
            groups = {r[decl.group] for r in run.rows(decl.input.name)}
            assert 0 < len(made) <= len(groups)
            assert all(
                r["margin"] >= decl.min_margin and r["chosen"] != r["rejected"] for r in made
            )
        elif op == "teacher_logits":
            assert node["rows_out"] == node["rows_in"], planned.name
            check_topk(run.rows(planned.name), decl.top_k)
        elif op == "train":
            check_train(run, planned.name, decl)
        elif op == "evaluate":
            check_evaluation(run, planned.name, decl)
        elif op == "export":
            check_export(run, decl)


def check_topk(rows: list[dict[str, Any]], k: int) -> None:
    assert rows
    for row in rows:
        positions = len(row["topk_target_ids"])
        assert positions > 0 and len(row["topk_ids"]) == len(row["topk_logprobs"]) == positions
        for ids, logprobs in zip(row["topk_ids"], row["topk_logprobs"], strict=True):
            assert len(ids) == len(logprobs) == k
            assert logprobs == sorted(logprobs, reverse=True) and logprobs[0] <= 0.0


def check_train(run: Run, name: str, train) -> None:
    artifact = Path(run.nodes[name]["output"])
    assert (artifact / "model" / "config.json").is_file()
    student = run.recipe.models[train.student.name]
    assert (artifact / "adapter").is_dir() == (student.lora is not None)
    metrics = run.metrics(name)
    assert train.max_steps == 2
    assert [m["step"] for m in metrics] == list(range(train.max_steps))
    terms = [loss.name for loss in train.losses]
    for record in metrics:
        assert all(math.isfinite(record[term]) for term in terms if term in record)
        assert math.isfinite(record["loss"])
        if terms != ["dpo"]:  # DPO rows have no target column: their steps count no tokens
            assert record["tokens"] > 0
    manifest = json.loads((artifact / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["steps"] == train.max_steps


def check_evaluation(run: Run, name: str, evaluation) -> None:
    (entry,) = [e for e in run.document["evaluations"] if e["name"] == name]
    assert entry["model"] == evaluation.model.name
    assert entry["rows"] == run.count(evaluation.data.name)
    assert set(entry["metrics"]) == {metric.name for metric in evaluation.metrics}
    assert all(0.0 <= value <= 1.0 for value in entry["metrics"].values())
    predictions = read_jsonl(Path(run.nodes[name]["output"]) / "predictions.jsonl")
    assert len(predictions) == entry["rows"]


def check_export(run: Run, export) -> None:
    target = run.workdir / export.path
    assert (target / "config.json").is_file() and (target / "README.md").is_file()
    assert (target / "tokenizer.json").is_file()
    assert not (run.folder / export.path).exists()  # not next to the recipe


def test_every_gallery_recipe_but_the_quickstart_runs_here():
    """Each recipe has a ``test_<recipe>_runs_end_to_end`` in a test module of this folder."""
    here = Path(__file__).parent
    defined = "\n".join(path.read_text(encoding="utf-8") for path in here.glob("test_*.py"))
    ran = set(re.findall(r"^def test_(\w+)_runs_end_to_end\(", defined, re.MULTILINE))
    expected = {recipe.removesuffix(".kd") for recipe in GALLERY if recipe != QUICKSTART}
    assert expected <= ran


# --------------------------------------------------------------------------- the runs


FLOAT32_TEACHER = ["teacher.dtype=float32"]  # the gallery's teachers are bfloat16


def test_cot_distill_runs_end_to_end(tmp_path, primed_pair, random_pair):
    run = run_gallery(
        "cot_distill.kd",
        tmp_path,
        {"teacher": primed_pair["teacher"], "student": random_pair["student"]},
        [
            *FLOAT32_TEACHER,
            "problems.limit=4",
            "heldout.limit=2",
            "rationales.samples=2",
            "rationales.max_tokens=64",
            "distill.max_steps=2",
            "distill.batch=2",
            "accuracy.max_tokens=8",
        ],
    )
    assert run.count("rationales") == 8
    verified = run.rows("verified")
    # only the primed question's rationales are right; its two samples are one after dedup
    assert [(r["answer"], r["rationale"]) for r in verified] == [("34", PRIMED_ANSWER)]
    dropped = run.nodes["verified"]["dropped"]
    assert sum(n for rule, n in dropped.items() if rule.startswith("keep")) == 6  # 3 questions
    assert dropped["dedup rationale by minhash"] == 1
    metrics = run.metrics("distill")
    assert metrics[0]["weight/forward_kl"] == 0.0  # linear(0.0 -> 0.5) starts at 0
    assert all("forward_kl" in m and "sft" in m for m in metrics)
    assert (run.workdir / "runs" / "cot-distill" / "student" / "model.safetensors").is_file()


def test_orca_explain_runs_end_to_end(tmp_path, primed_pair, random_pair):
    run = run_gallery(
        "orca_explain.kd",
        tmp_path,
        {"teacher": primed_pair["teacher"], "student": random_pair["student"]},
        [
            *FLOAT32_TEACHER,
            "instructions.limit=3",
            "explained.max_tokens=64",
            "explain.max_steps=2",
            "explain.batch=2",
        ],
    )
    assert run.count("explained") == 3
    assert [r["explanation"] for r in run.rows("clean")] == [PRIMED_ANSWER] * 3
    assert (run.workdir / "runs" / "orca-explain" / "student" / "config.json").is_file()


def test_self_instruct_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "self_instruct.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "seeds.limit=4",
            "more.n=4",
            "more.max_tokens=16",
            "answered.max_tokens=12",
            "tuned.max_steps=2",
            "tuned.batch=2",
        ],
    )
    origins = [r["origin"] for r in run.rows("more")]
    assert origins.count("seed") == 4 and set(origins) <= {"seed", "self_instruct"}
    assert origins.count("self_instruct") <= 4
    assert run.count("answered") == run.count("distinct")
    assert (run.workdir / "runs" / "self-instruct" / "student" / "config.json").is_file()


def test_evol_instruct_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "evol_instruct.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "seeds.limit=2",
            "evolved.max_tokens=16",
            "answered.max_tokens=12",
            "wizard.max_steps=2",
            "wizard.batch=2",
        ],
    )
    evolved = run.rows("evolved")
    # two seeds, two rounds: at most one accepted evolution per seed and round
    assert 2 <= len(evolved) <= 2 + 2 * 2
    operations = {"add_constraints", "deepen", "concretize", "increase_reasoning", "breadth"}
    assert {r["origin"] for r in evolved[2:]} <= operations
    assert all(len(r["instruction"].split()) >= 4 for r in run.rows("kept"))


def test_topic_curation_runs_end_to_end(tmp_path, primed_pair, random_pair):
    run = run_gallery(
        "topic_curation.kd",
        tmp_path,
        {"teacher": primed_pair["teacher"], "student": random_pair["student"]},
        [
            *FLOAT32_TEACHER,
            "taxonomy.limit=2",
            "written.per_item=2",
            "written.max_tokens=64",
            "textbook.max_steps=2",
            "textbook.batch=2",
        ],
    )
    assert run.count("written") == 4
    # the primed teacher writes one text for every item: near-duplicates leave one row
    assert [r["text"] for r in run.rows("clean")] == [PRIMED_ANSWER]
    assert run.nodes["clean"]["dropped"]["dedup text by minhash"] == 3


def test_ultrafeedback_dpo_runs_end_to_end(tmp_path, random_pair, monkeypatch):
    from tests.fixtures.openai_server import FakeOpenAIServer, ScriptedModel

    with FakeOpenAIServer(ScriptedModel(judge_reply), api_key=JUDGE_KEY) as server:
        monkeypatch.setenv("OPENAI_API_KEY", JUDGE_KEY)
        run = run_gallery(
            "ultrafeedback_dpo.kd",
            tmp_path,
            {"student": random_pair["student"]},
            [
                "instructions.limit=3",
                "candidates.max_tokens=12",
                f'judge.base_url="{server.url}"',
                "aligned.max_steps=2",
                "aligned.batch=2",
            ],
        )
        requests = server.requests
    assert run.count("candidates") == 3 * 4
    assert requests == run.count("candidates")  # one judgement per candidate, no retry
    assert run.count("scored") == 12
    for pair in run.rows("preferences"):
        assert pair["chosen"] != pair["rejected"] and pair["margin"] >= 1.0
    metrics = run.metrics("aligned")
    assert all(math.isfinite(m["dpo"]) for m in metrics)
    assert (run.workdir / "runs" / "ultrafeedback-dpo" / "student" / "config.json").is_file()


def test_minillm_reverse_kl_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "minillm_reverse_kl.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "instructions.limit=3",
            "responses.max_tokens=12",
            "mode_seeking.max_steps=2",
            "mode_seeking.batch=2",
        ],
    )
    assert run.count("responses") == 6
    assert {r["sample"] for r in run.rows("responses")} == {0, 1}
    assert all(m["reverse_kl"] >= 0.0 and m["sft"] > 0.0 for m in run.metrics("mode_seeking"))


def test_minillm_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "minillm.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "instructions.limit=3",
            "responses.max_tokens=12",
            "policy_gradient.max_steps=2",
            "policy_gradient.batch=2",
            "policy_gradient.max_new_tokens=8",
            "policy_gradient.ppo_epochs=2",
        ],
    )
    metrics = run.metrics("policy_gradient")
    assert [(m["rollout"], m["ppo_pass"]) for m in metrics] == [(0, 0), (0, 1)]
    for m in metrics:
        assert m["minillm/single_step"] >= 0.0 and m["lm"] > 0.0
        assert m["importance_weight"] > 0.0 and 0.0 <= m["clip_fraction"] <= 1.0


def test_gkd_on_policy_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "gkd_on_policy.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "problems.limit=4",
            "heldout.limit=2",
            "solutions.max_tokens=12",
            "gkd.max_steps=2",
            "gkd.batch=2",
            "gkd.max_new_tokens=8",
            "accuracy.max_tokens=8",
        ],
    )
    metrics = run.metrics("gkd")
    assert metrics[0]["on_policy"] == 0.0  # linear(0.0 -> 0.5) starts at 0
    assert all(m["beta/jsd"] == 0.5 and m["jsd"] >= 0.0 for m in metrics)


def test_distillm_skew_kl_runs_end_to_end(tmp_path, primed_pair, random_pair):
    run = run_gallery(
        "distillm_skew_kl.kd",
        tmp_path,
        {"teacher": primed_pair["teacher"], "student": random_pair["student"]},
        [
            *FLOAT32_TEACHER,
            "problems.limit=4",
            "solutions.max_tokens=64",
            "skew.max_steps=2",
            "skew.batch=2",
        ],
    )
    assert run.count("solutions") == 8
    assert sum(run.nodes["correct"]["dropped"].values()) == 6  # the other three questions
    assert [(r["answer"], r["solution"]) for r in run.rows("correct")] == [
        ("34", PRIMED_ANSWER)
    ] * 2
    metrics = run.metrics("skew")
    assert metrics[0]["alpha/skew_kl"] == pytest.approx(0.3)
    assert all(math.isfinite(m["skew_kl"]) for m in metrics)


def test_distillm_adaptive_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "distillm_adaptive.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "problems.limit=4",
            "heldout.limit=2",
            "solutions.max_tokens=12",
            "dev_solutions.max_tokens=12",
            "adaptive.max_steps=2",
            "adaptive.batch=2",
            "adaptive.eval_every=1",
            "adaptive.max_new_tokens=8",
        ],
    )
    metrics = run.metrics("adaptive")
    # an empty buffer is filled first: a draw under the threshold (0.5) samples fresh
    assert {m["batch_source"] for m in metrics} <= {"fresh", "data"}
    assert [m["replay_threshold"] for m in metrics] == [0.5, 0.5] or metrics[1][
        "replay_threshold"
    ] == pytest.approx(0.6)  # the second evaluation may have risen by more than 0.1
    assert all(math.isfinite(m["eval/loss"]) and m["eval/skew_kl"] >= 0.0 for m in metrics)


def test_star_self_knowledge_runs_end_to_end(tmp_path, primed_pair):
    run = run_gallery(
        "star_self_knowledge.kd",
        tmp_path,
        {"student": primed_pair["student"]},
        [
            "problems.limit=4",
            "heldout.limit=2",
            "attempts.samples=2",
            "attempts.max_tokens=64",
            "improved.max_steps=2",
            "improved.batch=2",
            "accuracy.max_tokens=8",
        ],
    )
    assert run.count("attempts") == 8
    assert [(r["answer"], r["rationale"]) for r in run.rows("successes")] == [("34", PRIMED_ANSWER)]
    export = run.workdir / "runs" / "star" / "student-iteration-1"
    assert (export / "model.safetensors").is_file()


def test_chat_distill_runs_end_to_end(tmp_path, random_pair):
    run = run_gallery(
        "chat_distill.kd",
        tmp_path,
        random_pair,
        [
            *FLOAT32_TEACHER,
            "chats.limit=3",
            "answered.max_tokens=8",
            "chat.max_steps=2",
            "chat.batch=2",
        ],
    )
    chats = run.rows("chats")
    assert chats[0]["conversations"][:2] == [
        {"role": "system", "content": "You are a patient maths tutor."},
        {"role": "user", "content": "What is 15% of 80?"},
    ]
    for before, after in zip(chats, run.rows("answered"), strict=True):
        dialogue = after["dialogue"]
        # every assistant turn rewritten by the teacher, the other turns as they were
        assert [t["role"] for t in dialogue] == [t["role"] for t in before["conversations"]]
        kept = [t for t in before["conversations"] if t["role"] != "assistant"]
        assert [t for t in dialogue if t["role"] != "assistant"] == kept
    assert run.nodes["answered"]["teacher"]["requests"] == sum(
        t["role"] == "assistant" for row in chats for t in row["conversations"]
    )
    assert all(m["sft"] > 0.0 and m["forward_kl"] >= 0.0 for m in run.metrics("chat"))


API_TOPK_OVERRIDES = [
    "instructions.limit=3",
    "answers.max_tokens=12",
    "student_kd.max_steps=2",
    "student_kd.batch=2",
]


def run_api_topk(
    folder: Path, tiny_pair, monkeypatch: pytest.MonkeyPatch, overrides: list[str]
) -> tuple[Run, int]:
    """api_topk_logits.kd against the tiny teacher served by the local server; the run and the
    requests the server answered."""
    from kdlang.runtime.teachers import load_teacher

    from tests.fixtures.openai_server import FakeOpenAIServer, HFServedModel

    served = HFServedModel(load_teacher("hf", path=str(tiny_pair.teacher), device="cpu"))
    with FakeOpenAIServer(served, api_key=TEACHER_KEY) as server:
        monkeypatch.setenv("TEACHER_BASE_URL", server.url)
        monkeypatch.setenv("TEACHER_API_KEY", TEACHER_KEY)
        run = run_gallery("api_topk_logits.kd", folder, {"student": tiny_pair.student}, overrides)
        return run, server.requests


@pytest.fixture(scope="module")
def api_topk_run(tiny_pair, tmp_path_factory) -> tuple[Run, int]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        return run_api_topk(
            tmp_path_factory.mktemp("api_topk"),
            tiny_pair,
            monkeypatch,
            API_TOPK_OVERRIDES,
        )


def test_api_topk_logits_runs_end_to_end(api_topk_run, tiny_pair):
    from transformers import AutoTokenizer

    run, requests = api_topk_run
    answers, soft = run.rows("answers"), run.rows("soft")
    assert len(answers) == 3 and requests == 3 + 3  # three answers written, three scored
    assert [r["response"] for r in soft] == [r["response"] for r in answers]
    # the served tokens map back onto the student's ids: the cached targets are the answers
    tokenizer = AutoTokenizer.from_pretrained(tiny_pair.student)
    for row in soft:
        assert tokenizer.decode(row["topk_target_ids"]) == row["response"]
    metrics = run.metrics("student_kd")
    assert all(m["forward_kl"] >= 0.0 and m["sft"] > 0.0 for m in metrics)


def test_teacher_logits_reports_its_own_teacher_usage(api_topk_run):
    run, _ = api_topk_run
    assert run.nodes["answers"]["teacher"]["requests"] == 3
    assert run.nodes["soft"]["teacher"]["requests"] == 3


def test_api_topk_logits_runs_as_written(tmp_path, tiny_pair, monkeypatch):
    run_api_topk(tmp_path, tiny_pair, monkeypatch, API_TOPK_OVERRIDES)
