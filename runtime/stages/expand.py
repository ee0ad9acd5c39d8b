"""``expand(seeds) { teacher = .. column = .. method = self_instruct | evol_instruct ... }``.

New items (instructions, questions) written by the teacher from the seed items in ``column``.
The output has two columns: ``column`` and ``origin`` (``"seed"`` for a kept seed,
``"self_instruct"``, or the evolution operation that made the item).

``method = self_instruct``: request ``i`` shows ``demos`` seed items sampled with the row seed
of ``i`` and asks for one new item. Requests go out in rounds: round one asks for ``n`` items,
each next round for as many as are still missing, until ``n`` are accepted, a round accepts
none (the teacher has run dry), or :data:`REQUEST_BUDGET` × ``n`` requests were made.

``method = evol_instruct``: every seed starts a chain that is evolved ``rounds`` times; in each
round the chain's latest item gets one operation of :data:`OPERATIONS` (chosen with the row
seed): four in-depth ones that make it harder, one in-breadth one that writes a new item of the
same domain. An accepted result becomes a row and the chain's next item; a rejected one leaves
the chain where it was.

Every response is parsed to one item (:func:`parse_item`) and rejected (counted in the stage's
``dropped`` stats, by reason) when it is empty, a refusal, longer than :data:`MAX_WORDS` words,
a copy of the item it evolves, or a duplicate of a seed or of an item accepted before it
(compared by :func:`normalize`). Responses are checked in request order, so the result
depends only on the responses: a resumed run gives the same rows.

Prompts: the built-in :data:`SELF_INSTRUCT_PROMPT` and :data:`EVOL_PROMPT` unless the recipe
gives ``prompt``, which is rendered with ``demos`` (list of items), ``n`` (the number the new
item gets: the demos are numbered 1..n-1), ``item`` (the item to evolve) and ``operation`` (the
operation's instruction); for self_instruct ``item`` and ``operation`` are empty, for
evol_instruct ``demos`` is empty and ``n`` is 1.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from kdlang.plan import PlanNode

from ..context import StageContext
from ..data import write_rows
from ..errors import RunError
from ..teachers import GenerationRequest
from .label import generate_rows

SELF_INSTRUCT_PROMPT = """\
Here are {{ demos | length }} items from a dataset:
{% for demo in demos %}{{ loop.index }}. {{ demo }}
{% endfor %}
Write item {{ n }}: one new item of the same kind and format, on a different subject than the \
items above, clear and complete on its own. Reply with the new item only, without a number, \
quotes or any comment.
"""

EVOL_PROMPT = """\
Rewrite the item below. {{ operation }}
The result must be clear and complete on its own, answerable by a knowledgeable person, and \
must not mention that it was rewritten.

Item:
{{ item }}

Reply with the new item only, without a title, quotes or any comment.
"""

OPERATIONS = {
    "add_constraints": "Make it harder by adding exactly one more constraint or requirement.",
    "deepen": "Make it harder by asking about the subject in more depth and breadth.",
    "concretize": "Make it harder by replacing general concepts with more specific ones.",
    "increase_reasoning": (
        "Make it harder by making it require several explicit steps of reasoning."
    ),
    "breadth": (
        "Do not make it harder: write a brand-new item of the same domain and format, "
        "on a rarer topic."
    ),
}
"""Evol-Instruct operations, name -> instruction; the last one is in-breadth, the others
in-depth. The name is the output row's ``origin``."""

MAX_WORDS = 150
REQUEST_BUDGET = 4

_LABEL = re.compile(
    r"^\s*(?:#+\s*)?(?:new\s+|rewritten\s+|evolved\s+)?"
    r"(?:item|instruction|question|task|prompt)(?:\s*\d+)?\s*#*\s*:\s*",
    re.IGNORECASE,
)
_NUMBERING = re.compile(r"^\s*(?:\(?\d{1,3}[.):]|[-*\u2022])\s+")
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i apologi[sz]e|i cannot|i can'?t|i can not|"
    r"i'?m (?:not able|unable)|i am (?:not able|unable)|i won'?t|as an ai\b)",
    re.IGNORECASE,
)


def parse_item(text: str) -> str:
    """The one item in a response: its first paragraph, without a leading label ("New item:"),
    number ("4.", "(4)"), bullet, or enclosing quotes."""
    item = re.split(r"\n\s*\n", text.strip(), maxsplit=1)[0].strip()
    while True:
        before = item
        item = _NUMBERING.sub("", _LABEL.sub("", item, count=1), count=1).strip()
        if len(item) >= 2 and _QUOTES.get(item[0]) == item[-1]:
            item = item[1:-1].strip()
        if item == before:
            return item


def normalize(item: str) -> str:
    """The form items are compared in: lower case, single spaces, no final punctuation."""
    return " ".join(item.lower().split()).rstrip(" .!?;:")


def rejection(item: str, seen: set[str], source: str | None = None) -> str | None:
    """Why ``item`` is not accepted (``empty``, ``refusal``, ``too_long``, ``copy``,
    ``duplicate``), or None. ``seen``: normalized items already taken; ``source``: the item
    it evolves."""
    key = normalize(item)
    if not key:
        return "empty"
    if _REFUSAL.match(item):
        return "refusal"
    if len(item.split()) > MAX_WORDS:
        return "too_long"
    if source is not None and key == normalize(source):
        return "copy"
    if key in seen:
        return "duplicate"
    return None


def _request(stage, prompt: str, seed: int) -> GenerationRequest:
    return GenerationRequest(
        prompt=prompt,
        n=1,
        temperature=stage.temperature,
        top_p=stage.top_p,
        top_k=stage.top_k,
        max_tokens=stage.max_tokens,
        seed=seed,
        stop=tuple(stage.stop) if stage.stop else None,
    )


def self_instruct(stage, ctx: StageContext, seeds: list[str], dropped: Counter) -> list[dict]:
    """New items from demos of the seeds, in rounds (see the module's docstring)."""
    template = ctx.template(stage.prompt or SELF_INSTRUCT_PROMPT)
    pool = list(dict.fromkeys(seeds))
    seen = {normalize(s) for s in pool}
    made: list[dict] = []
    issued, round_number = 0, 0
    budget = REQUEST_BUDGET * stage.n
    while len(made) < stage.n and issued < budget:
        count = min(stage.n - len(made), budget - issued)
        requests = []
        for index in range(issued, issued + count):
            picker = random.Random(ctx.row_seed(index, "demos"))
            demos = picker.sample(pool, min(stage.demos, len(pool)))
            text = template.render(demos=demos, n=len(demos) + 1, item="", operation="")
            requests.append(_request(stage, text, ctx.row_seed(index, "self_instruct")))
        round_number += 1
        outputs = generate_rows(
            ctx,
            stage,
            None,
            requests,
            f"self_instruct-{round_number}.jsonl",
            description=f"{ctx.node.name} (expand, round {round_number})",
        )
        accepted = 0
        for (text,) in outputs:
            item = parse_item(text)
            reason = rejection(item, seen)
            if reason:
                dropped[reason] += 1
                continue
            seen.add(normalize(item))
            made.append({stage.column: item, "origin": "self_instruct"})
            accepted += 1
        issued += count
        if accepted == 0:
            break
    ctx.stats["rounds"] = round_number
    return made


def evol_instruct(stage, ctx: StageContext, seeds: list[str], dropped: Counter) -> list[dict]:
    """Each seed evolved ``rounds`` times (see the module's docstring)."""
    template = ctx.template(stage.prompt or EVOL_PROMPT)
    names = list(OPERATIONS)
    chains = list(seeds)
    seen = {normalize(s) for s in seeds}
    made: list[dict] = []
    for round_number in range(1, stage.rounds + 1):
        chosen = [
            random.Random(ctx.row_seed(chain, f"operation-{round_number}")).choice(names)
            for chain in range(len(chains))
        ]
        requests = [
            _request(
                stage,
                template.render(demos=[], n=1, item=item, operation=OPERATIONS[operation]),
                ctx.row_seed(chain, f"evol-{round_number}"),
            )
            for chain, (item, operation) in enumerate(zip(chains, chosen, strict=True))
        ]
        outputs = generate_rows(
            ctx,
            stage,
            None,
            requests,
            f"evol-{round_number}.jsonl",
            description=f"{ctx.node.name} (expand, round {round_number})",
        )
        for chain, (text,) in enumerate(outputs):
            item = parse_item(text)
            reason = rejection(item, seen, source=chains[chain])
            if reason:
                dropped[reason] += 1
                continue
            seen.add(normalize(item))
            made.append({stage.column: item, "origin": chosen[chain]})
            chains[chain] = item
    return made


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    stage = node.node
    rows = ctx.rows(stage.input.name)
    ctx.stats["rows_in"] = len(rows)
    seeds = [str(row[stage.column]) for row in rows if row.get(stage.column) not in (None, "")]
    if not seeds:
        raise RunError(f"{ctx.node.name}: no seed items in column `{stage.column}`")
    dropped: Counter = Counter()
    method = self_instruct if stage.method == "self_instruct" else evol_instruct
    made = method(stage, ctx, seeds, dropped)  # every rank: the rounds depend on the responses
    if not ctx.dist.is_main:  # rank 0 writes the artifact
        return {}
    ctx.stats["dropped"] = dict(sorted(dropped.items()))
    ctx.stats["new_items"] = len(made)
    kept = [{stage.column: s, "origin": "seed"} for s in seeds] if stage.keep_seeds else []
    return {"rows": write_rows(kept + made, out, columns=list(node.columns or {}))}
