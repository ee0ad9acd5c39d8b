"""What a card says for the Hugging Face Hub: the YAML metadata at its top (``library_name``,
``license``, ``base_model``, ``datasets``, ``tags``), the recipe that made it and the final
training losses (model cards, :mod:`.card`), and the dataset card of rows exported to the hub.

Every value is written as a JSON string, which YAML reads as the same string whatever it holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kdlang.ir.sources import HFData, HFModel
from kdlang.plan import needed

if TYPE_CHECKING:
    from kdlang.ir.training import Export

    from ..context import StageContext

TAGS = ("kdlang", "knowledge-distillation")
"""The tags every card has, before the export's own ``tags``."""


def metadata(
    ctx: StageContext, export: Export, *, library: str | None, base: str | None
) -> list[str]:
    """The card's YAML header, ``---`` lines included."""
    lines = ["---"]
    if library is not None:
        lines.append(f"library_name: {library}")
    if export.license is not None:
        lines.append(f"license: {_quoted(export.license)}")
    if base is not None:
        lines.append(f"base_model: {_quoted(base)}")
    datasets = hub_datasets(ctx, export.train.name)
    if datasets:
        lines += ["datasets:", *(f"- {_quoted(d)}" for d in datasets)]
    tags = list(dict.fromkeys([*TAGS, *export.tags]))
    lines += ["tags:", *(f"- {_quoted(t)}" for t in tags)]
    return [*lines, "---"]


def _quoted(value: str) -> str:
    plain = value.replace("-", "").replace(".", "").replace("/", "").replace("_", "")
    return value if plain.isalnum() and value[0].isalnum() else json.dumps(value)


def hub_datasets(ctx: StageContext, name: str) -> list[str]:
    """The hub ids of the ``hf`` datasets that ``name`` reads, transitively, in plan order."""
    wanted = needed(ctx.plan, [name])
    found = []
    for node in ctx.plan.nodes:
        if node.name in wanted and node.kind == "dataset" and isinstance(node.node, HFData):
            found.append(node.node.id)
    return list(dict.fromkeys(found))


def base_model(ctx: StageContext, student) -> str | None:
    """The student's hub id (None for a local folder)."""
    return ctx.hub_id(student) if isinstance(student, HFModel) else None


def recipe_sections(ctx: StageContext, export: Export) -> list[str]:
    """``## Final training losses`` (the last step's, from the train's manifest) and
    ``## Recipe`` (the recipe file as written: secrets are ``env()`` names only)."""
    lines: list[str] = []
    final = (ctx.manifest(export.train.name) or {}).get("final") or {}
    if final:
        lines += ["", "## Final training losses", "", "| term | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" for key, value in final.items()]
    return lines + recipe_text(ctx)


def dataset_card(ctx: StageContext, export: Export, rows: int, columns: list[str]) -> str:
    """The ``README.md`` of rows exported to the hub."""
    recipe = ctx.program.recipe
    header = recipe.header
    title = header.title if header else recipe.title
    lines = metadata(ctx, export, library=None, base=None)
    lines += ["", f"# {title}: `{export.train.name}`", ""]
    if header is not None and header.description:
        lines += [header.description, ""]
    lines += [
        f"{rows} rows made by kdlang from the recipe `{Path(recipe.file).name}` (seed "
        f"{recipe.seed}), in `data/train.parquet`.",
        "",
        "Columns: " + ", ".join(f"`{c}`" for c in columns) + ".",
    ]
    return "\n".join(lines + recipe_text(ctx)) + "\n"


def recipe_text(ctx: StageContext) -> list[str]:
    """``## Recipe``: the recipe file as written (nothing when it cannot be read)."""
    path = Path(ctx.program.recipe.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return ["", "## Recipe", "", f"`{path.name}`:", "", "```kd", text.rstrip("\n"), "```"]
