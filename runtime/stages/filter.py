"""``filter(input) { keep EXPR  dedup COL by exact|minhash(..)  decontaminate COL against DATA }``.

Rules apply in order; each one's dropped-row count goes to the run report. ``keep`` evaluates
the typed expression language (never Python ``eval``). ``dedup by minhash`` keeps the first row
of each group of near-duplicates (Jaccard similarity of word n-gram shingles, estimated with
``datasketch``'s MinHash LSH at ``threshold``). ``decontaminate`` drops rows sharing any word
``ngram`` with the same column of another dataset.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kdlang.expr import evaluate
from kdlang.ir import selection as sel
from kdlang.plan import PlanNode

from ..chat import conversation_text
from ..context import StageContext

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text) -> list[str]:
    text = conversation_text(text)  # a conversation: the text of its turns
    return _WORD.findall(str(text).lower()) if text is not None else []


def ngrams(text, n: int) -> set[tuple[str, ...]]:
    tokens = words(text)
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def keep(rows, rule: sel.KeepRule):
    return [row for row in rows if evaluate(rule.condition, row) is True]


def dedup_exact(rows, column: str):
    seen, kept = set(), []
    for row in rows:
        key = " ".join(str(conversation_text(row.get(column))).split())
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def dedup_minhash(rows, rule: sel.DedupRule, seed: int):
    """Near-duplicates by MinHash LSH. A threshold too high for LSH bands at ``num_perm``
    (e.g. 0.99 with 128) looks up candidates at the highest workable threshold and keeps a
    candidate as a duplicate only if its estimated Jaccard similarity reaches ``threshold``."""
    from datasketch import MinHash

    lsh, verify = _lsh(rule.threshold, rule.num_perm)
    kept, signatures = [], {}
    for index, row in enumerate(rows):
        signature = MinHash(num_perm=rule.num_perm, seed=seed)
        for gram in ngrams(row.get(rule.column), rule.ngram) or {("",)}:
            signature.update(" ".join(gram).encode("utf-8"))
        found = lsh.query(signature)
        if verify:
            found = [k for k in found if signature.jaccard(signatures[k]) >= rule.threshold]
        if found:
            continue
        lsh.insert(str(index), signature)
        signatures[str(index)] = signature
        kept.append(row)
    return kept


def _lsh(threshold: float, num_perm: int):
    """``(index, verify)``: datasketch's LSH at ``threshold``, or at the highest threshold it
    can band for ``num_perm`` (then ``verify`` is true)."""
    from datasketch import MinHashLSH

    level = threshold
    while True:
        try:
            return MinHashLSH(threshold=level, num_perm=num_perm), level != threshold
        except ValueError:  # too few bands for this threshold
            level = round(level - 0.01, 2)


def decontaminate(rows, rule: sel.DecontaminateRule, reference_rows):
    banned: set[tuple[str, ...]] = set()
    for row in reference_rows:
        banned |= ngrams(row.get(rule.column), rule.ngram)
    return [row for row in rows if not (ngrams(row.get(rule.column), rule.ngram) & banned)]


MAX_RULE_TEXT = 80


def describe(rule, sources: dict[str, str] | None = None) -> str:
    """The name of a rule in the stage's ``dropped`` stats: a ``keep`` rule's own text as the
    recipe writes it (white space collapsed, cut at :data:`MAX_RULE_TEXT` characters)."""
    if isinstance(rule, sel.KeepRule):
        return _source_text(rule.span, sources or {}) or f"keep (line {rule.span.line})"
    if isinstance(rule, sel.DedupRule):
        return f"dedup {rule.column} by {rule.method}"
    return f"decontaminate {rule.column} against {rule.against.name}"


def _source_text(span, sources: dict[str, str]) -> str:
    from kdlang.syntax.span import source_lines

    source = sources.get(span.file)
    if source is None:
        return ""
    lines = source_lines(source)[span.line - 1 : span.end_line]
    if not lines:
        return ""
    lines[-1] = lines[-1][: span.end_column - 1]
    lines[0] = lines[0][span.column - 1 :]
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= MAX_RULE_TEXT else text[: MAX_RULE_TEXT - 1] + "…"


def run(node: PlanNode, ctx: StageContext, out: Path) -> dict[str, Any]:
    """The rules, in order, on each batch of the input in turn: a rule keeps a row by what it
    and the rows before it hold, so batch by batch keeps exactly the rows a pass of each rule
    over all of them would."""
    from ..arrow.io import ArrowWriter, read_batches
    from ._filter_batches import batch_rule

    stage = node.node
    labels = [describe(rule, ctx.program.sources) for rule in stage.rules]
    dropped = dict.fromkeys(labels, 0)
    rules = [batch_rule(rule, ctx) for rule in stage.rules]
    writer = ArrowWriter(out, list(node.columns) if node.columns else None)
    rows_in = 0
    for batch in read_batches(ctx.artifact(stage.input.name)):
        rows_in += batch.num_rows
        for label, apply in zip(labels, rules, strict=True):
            if not batch.num_rows:
                break
            before = batch.num_rows
            batch = apply(batch)
            dropped[label] += before - batch.num_rows
        writer.write(batch)
    ctx.stats["rows_in"] = rows_in
    ctx.stats["dropped"] = dropped
    return {"rows": writer.close()}
