"""The types of the expression language, and how they relate.

Types are flat strings: ``str``, ``int``, ``float``, ``bool``, ``null``, ``range``, ``any``,
and the structured ones:

- ``list``: a list whose items' type is not known; ``list[T]``: a list of ``T`` (``split``
  gives ``list[str]``);
- ``map``: a map whose fields are not known (a JSON object); its fields are ``any``;
- ``messages``: a conversation, a list of turns; ``turn``: a map with exactly the fields
  ``role`` and ``content``, both ``str``.

A ``messages`` value is a list and a ``turn`` a map wherever one is wanted. Column types are
these strings too, except that a column never has a ``list[T]`` type: the checkers of prompts
and targets know ``list``, so a computed column of ``list[T]`` is a ``list`` column
(:func:`column_kind`).
"""

from __future__ import annotations

NUMERIC = frozenset({"int", "float"})
TURN_FIELDS = {"role": "str", "content": "str"}
"""The fields of a conversation turn and their types."""


def is_list(kind: str) -> bool:
    return kind in ("list", "messages") or kind.startswith("list[")


def is_map(kind: str) -> bool:
    return kind in ("map", "turn")


def element(kind: str) -> str:
    """The type of an item of a list of type ``kind`` (``any`` where it is not known)."""
    if kind == "messages":
        return "turn"
    if kind.startswith("list[") and kind.endswith("]"):
        return kind[5:-1]
    return "any"


def list_of(kind: str) -> str:
    """The type of a list of ``kind`` items."""
    if kind == "turn":
        return "messages"
    return "list" if kind in ("any", "null") else f"list[{kind}]"


def accepts(allowed: frozenset[str], kind: str) -> bool:
    """Whether a value of type ``kind`` may be given where ``allowed`` types are wanted."""
    if kind == "any" or "any" in allowed or kind in allowed:
        return True
    if is_list(kind) and "list" in allowed:
        return True
    return kind == "turn" and "map" in allowed


def unify(first: str, second: str) -> str:
    """The type of a value that is either of the two (the branches of ``if``)."""
    if first == second:
        return first
    if first == "null":
        return second
    if second == "null":
        return first
    if {first, second} <= NUMERIC:
        return "float"
    if is_list(first) and is_list(second):
        return "list"
    if is_map(first) and is_map(second):
        return "map"
    return "any"


def column_kind(kind: str) -> str:
    """The column type of a computed value of type ``kind``."""
    if kind.startswith("list["):
        return "list"
    return "any" if kind == "null" else kind


def describe(kind: str) -> str:
    """The type in words, for messages."""
    named = {
        "str": "a string",
        "int": "an integer",
        "float": "a number",
        "bool": "true/false",
        "list": "a list",
        "map": "a map",
        "messages": "a conversation",
        "turn": "a turn",
        "range": "a range",
        "null": "null",
    }
    if kind in named:
        return named[kind]
    if kind.startswith("list["):
        inner = element(kind)
        return "a list of " + {"str": "strings", "int": "integers", "float": "numbers"}.get(
            inner, describe(inner)
        )
    return kind
