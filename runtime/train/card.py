"""The model card (``README.md``) an export writes: what the student is and how it was made,
from the recipe — models, the data stages the training read, the training settings, every loss
with its weight and schedule, and the metrics of the recipe's evaluations of this student when
they have run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kdlang.ir.sources import HFModel
from kdlang.ir.values import Percent, Schedule
from kdlang.plan import Plan, PlanNode, needed

from . import hub_card

if TYPE_CHECKING:
    from kdlang.ir.training import Export

    from ..context import StageContext


def model_card(ctx: StageContext, export: Export, *, merged: bool, lora: bool) -> str:
    recipe = ctx.program.recipe
    train = recipe.trains[export.train.name]
    student = ctx.model(train.student)
    teacher = ctx.model(train.teacher) if train.teacher else None
    header = recipe.header
    title = header.title if header else recipe.title
    base = hub_card.base_model(ctx, student)
    lines = hub_card.metadata(ctx, export, library="transformers", base=base)
    lines += ["", f"# {title}: `{export.train.name}`", ""]
    if header is not None and header.description:
        lines += [header.description, ""]
    form = (
        "full weights, LoRA merged in"
        if lora and merged
        else ("a LoRA adapter (load it on the student)" if lora else "full weights")
    )
    lines += [
        f"A student trained by knowledge distillation with kdlang from the recipe "
        f"`{Path(recipe.file).name}` (seed {recipe.seed}); this folder holds {form}.",
        "",
        "## Models",
        "",
        f"- student `{train.student.name}`: {_model(student)}",
    ]
    if train.teacher is not None and teacher is not None:
        lines.append(f"- teacher `{train.teacher.name}`: {_model(teacher)}")
    lines += ["", "## Data", ""]
    lines += [f"- `{n.name}`: {_stage(n, recipe)}" for n in _upstream(ctx.plan, train.data.name)]
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    for key in (
        "epochs",
        "max_steps",
        "batch",
        "grad_accum",
        "lr",
        "weight_decay",
        "clip",
        "max_length",
        "on_policy",
        "loss_path",
        "precision",
    ):
        value = getattr(train, key)
        if value is not None:
            lines.append(f"| {key} | {describe(value)} |")
    lines.append(f"| lr_schedule | {_lr(train.lr_schedule)} |")
    lines += ["", "## Losses", "", "| loss | weight | settings |", "|---|---|---|"]
    for loss in train.losses:
        extra = [
            f"{key} {describe(getattr(loss, key))}"
            for key in type(loss).model_fields  # its own options: each loss has only its own
            if key not in _NOT_OPTIONS
        ]
        if getattr(loss, "temperature_scale", False):
            extra.append("× T²")
        lines.append(f"| {loss.name} | {describe(loss.weight)} | {', '.join(extra)} |")
    lines += _during_training(ctx, export.train.name, train)
    evaluations = _evaluations(ctx, export.train.name)
    if evaluations:
        lines += ["", "## Evaluation", "", "| eval | rows | metric | value |", "|---|---|---|---|"]
        for name, manifest in evaluations:
            for metric, value in (manifest.get("metrics") or {}).items():
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                lines.append(f"| {name} | {manifest.get('rows')} | {metric} | {shown} |")
    lines += hub_card.recipe_sections(ctx, export)
    return "\n".join(lines) + "\n"


def describe(value) -> str:
    """A setting as a recipe would write it: ``linear(0 -> 1, over = 30%)``."""
    if isinstance(value, Schedule):
        if value.kind == "constant":
            return f"{value.start:g}"
        if value.kind == "warmup":
            return f"warmup({value.end:g}, over = {_duration(value.over)})"
        args = [f"{value.start:g} -> {value.end:g}"]
        for key, field in (("over", value.over), ("at", value.at), ("start", value.begin)):
            if field is not None:
                args.append(f"{key} = {_duration(field)}")
        return f"{value.kind}({', '.join(args)})"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _duration(value) -> str:
    return f"{value.fraction * 100:g}%" if isinstance(value, Percent) else f"{value} steps"


def _lr(schedule) -> str:
    args = []
    if schedule.warmup is not None:
        args.append(f"warmup = {_duration(schedule.warmup)}")
    if schedule.min_ratio:
        args.append(f"min_ratio = {schedule.min_ratio:g}")
    return f"{schedule.kind}({', '.join(args)})"


def _model(model) -> str:
    if isinstance(model, HFModel):
        text = f'hf("{model.path}")' + (f" @ {model.revision}" if model.revision else "")
        if model.lora is not None:
            text += f", LoRA r = {model.lora.r}, alpha = {model.lora.alpha:g}"
        return text
    return f'openai("{model.model}")'


_NOT_OPTIONS = frozenset({"span", "spans", "name", "weight", "temperature_scale"})


def _upstream(plan: Plan, name: str) -> list[PlanNode]:
    """The plan nodes ``name`` reads, transitively, in plan order (itself last)."""
    wanted = needed(plan, [name])
    return [n for n in plan.nodes if n.name in wanted]


def _stage(node, recipe) -> str:
    decl = node.node
    if node.kind == "dataset":
        where = getattr(decl, "path", None) or getattr(decl, "id", None)
        return f"dataset ({decl.kind}{f' {where}' if where else ''})"
    parts = [node.op]
    for key in ("teacher", "judge"):
        ref = getattr(decl, key, None)
        if ref is not None:
            parts.append(f"{key} `{ref.name}`")
    if node.op == "teacher_logits":
        parts.append(f"top_k {decl.top_k}")
    return ", ".join(parts)


def _evaluations(ctx: StageContext, train_name: str) -> list[tuple[str, dict]]:
    """The committed manifests of the recipe's evaluations of ``train_name``'s student."""
    found = []
    for node in ctx.plan.nodes:
        if node.op == "evaluate" and node.node.model.name == train_name:
            manifest = ctx.manifest(node.name)
            if manifest is not None:
                found.append((node.name, manifest))
    return found


def _during_training(ctx: StageContext, name: str, train) -> list[str]:
    """The section of the last evaluation on the dev rows during training (``eval_data``)."""
    from .evaluation import last_evaluation
    from .metrics import METRICS, read_metrics

    if train.eval_data is None:
        return []
    last = last_evaluation(read_metrics(ctx.artifact(name) / METRICS))
    if not last:
        return []
    out = ["", "## Evaluation during training", "", "| dev rows | after step | metric | value |"]
    out.append("|---|---|---|---|")
    for key, value in last.items():
        if key != "step":
            out.append(f"| {train.eval_data.name} | {last['step'] + 1} | {key} | {value:.4f} |")
    return out
