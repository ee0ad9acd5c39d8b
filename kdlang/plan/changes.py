"""Why a plan node will run: what differs from the fingerprint components last recorded under
its name in the cache index.

Components are compared part by part (see :mod:`kdlang.plan.fingerprint`); each difference
becomes one phrase, naming declarations rather than settings where a reference is involved:

- ``never run`` / ``its output is no longer in the cache``;
- ``kdlang's code for `OP` changed``; ``seed changed: A -> B``; ``input file changed: NAME``;
- ``prompt `NAME` changed``, ``model `NAME` changed (its files)``, ``upstream `NAME` changed``;
- ``setting `PATH` changed: OLD -> NEW`` for the node's own settings (a loss term's setting as
  ``loss.NAME.SETTING``, the way ``--set`` names it).

Several differences are joined with ``; ``, the node's own first and its upstreams last.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from kdlang.ir.values import Ref

MOST_REASONS = 4


def explain_change(node, previous: dict | None) -> str:
    """Why ``node`` (a :class:`~kdlang.plan.builder.PlanNode`) is not cached."""
    if previous is None:
        return "never run"
    if previous.get("fingerprint") == node.fingerprint:
        return "its output is no longer in the cache"
    old, new = previous.get("components") or {}, node.components
    if old.get("code") != new.get("code") or old.get("op") != new.get("op"):
        return f"kdlang's code for `{node.op}` changed"
    reasons: list[str] = []
    if old.get("seed") != new.get("seed"):
        reasons.append(f"seed changed: {old.get('seed')} -> {new.get('seed')}")
    old_files, new_files = old.get("files") or {}, new.get("files") or {}
    changed = sorted(
        p for p in set(old_files) | set(new_files) if old_files.get(p) != new_files.get(p)
    )
    if changed:
        reasons.append("input file changed: " + ", ".join(changed))
    upstream: list[str] = []
    for path in differences(old.get("params"), new.get("params"), ()):
        phrase = _describe(node.node, path, old.get("params"), new.get("params"))
        target = upstream if phrase.startswith("upstream") else reasons
        if phrase not in target:
            target.append(phrase)
    reasons += upstream
    if not reasons:
        return "changed"
    if len(reasons) > MOST_REASONS:
        more = len(reasons) - (MOST_REASONS - 1)
        reasons = [*reasons[: MOST_REASONS - 1], f"and {more} more changes"]
    return "; ".join(reasons)


def differences(a: Any, b: Any, path: tuple) -> list[tuple]:
    """Paths of every leaf where ``a`` and ``b`` differ (a list whose length changed is a leaf)."""
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[tuple] = []
        for key in sorted(set(a) | set(b), key=str):
            found += differences(a.get(key), b.get(key), (*path, key))
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        found = []
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found += differences(x, y, (*path, i))
        return found
    return [path]


def _describe(decl: Any, path: tuple, old: Any, new: Any) -> str:
    found = _reference_on(decl, path)
    if found is not None:
        ref, depth = found
        role = path[depth] if depth < len(path) else None
        if role == "template":
            return f"prompt `{ref.name}` changed"
        if role == "upstream":
            return f"upstream `{ref.name}` changed"
        if role == "model":
            part = path[depth + 1] if depth + 1 < len(path) else None
            if part == "content":
                return f"model `{ref.name}` changed (its files)"
            if part is not None:
                return f"model `{ref.name}` changed (`{part}`)"
            return f"model `{ref.name}` changed"
    where = _setting_path(decl, path)
    old_value, new_value = _at(old, path), _at(new, path)
    if isinstance(old_value, dict | list) or isinstance(new_value, dict | list):
        return f"setting `{where}` changed"
    return f"setting `{where}` changed: {old_value!r} -> {new_value!r}"


def _reference_on(decl: Any, path: tuple) -> tuple[Ref, int] | None:
    """The reference that a parameter path runs through in the IR, with the path depth after
    it: ``("input", "upstream")`` on a stage is its ``input`` reference, depth 1."""
    value = decl
    for depth, step in enumerate(path):
        if isinstance(value, Ref):
            return value, depth
        if isinstance(value, BaseModel):
            value = getattr(value, str(step), None)
        elif isinstance(value, dict):
            value = value.get(step)
        elif isinstance(value, list | tuple) and isinstance(step, int) and step < len(value):
            value = value[step]
        else:
            return None
    return (value, len(path)) if isinstance(value, Ref) else None


def _setting_path(decl: Any, path: tuple) -> str:
    losses = getattr(decl, "losses", None)
    is_loss = len(path) >= 2 and path[0] == "losses" and isinstance(path[1], int)
    if is_loss and losses and path[1] < len(losses):
        return ".".join(["loss", losses[path[1]].name, *map(str, path[2:])])
    return ".".join(map(str, path))


def _at(value: Any, path: tuple) -> Any:
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value
