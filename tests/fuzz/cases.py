"""Fuzz cases: seeded mutations of every recipe kdlang ships or tests (the gallery, the good and
bad syntax corpora), and recipes spliced together from their declarations.

A case is ``(name, bytes)``; :func:`cases` yields the same cases for the same ``seed`` and
``count``, so a finding is reproduced by its name alone (``seed:index:mutation``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS_FOLDERS = [ROOT / "recipes", ROOT / "recipes" / "common", ROOT / "tests" / "syntax" / "good"]
BAD_FOLDER = ROOT / "tests" / "syntax" / "bad"

TOKEN = re.compile(
    rb'"""(?:.|\n)*?"""|r"[^"\n]*"|"(?:\\.|[^"\\\n])*"|\d+(?:\.\d+)?(?:e-?\d+)?%?|\w+|->|\.\.|[=!<>]=|\S',
)
VOCABULARY = [
    b"recipe",
    b"import",
    b"model",
    b"dataset",
    b"prompt",
    b"stage",
    b"train",
    b"eval",
    b"export",
    b"to",
    b"loss",
    b"weight",
    b"temperature",
    b"keep",
    b"dedup",
    b"by",
    b"decontaminate",
    b"against",
    b"metric",
    b"and",
    b"or",
    b"not",
    b"in",
    b"true",
    b"false",
    b"null",
    b"{",
    b"}",
    b"(",
    b")",
    b"[",
    b"]",
    b"=",
    b",",
    b":",
    b"->",
    b"..",
    b"%",
    b"-",
    b"+",
    b"*",
    b"/",
    b"<=",
    b"==",
    b'"',
    b'"""',
    b'r"',
    b"#",
    b"\\",
    b"\n",
    b"\t",
    b"env",
    b"hf",
    b"openai",
    b"jsonl",
    b"inline",
    b"label",
    b"filter",
    b"linear",
    b"cosine",
    b"sft",
    b"forward_kl",
    b"jsd",
    b"{{ x }}",
    b"{% for %}",
    b"0",
    b"-1",
    b"1e309",
    b"NaN",
    b"inf",
]
BAD_UTF8 = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\x00",
    b"\xef\xbb\xbf",
]


def corpus() -> list[tuple[str, bytes]]:
    """Every recipe file the mutations start from, by name."""
    files = [p for folder in CORPUS_FOLDERS for p in sorted(folder.glob("*.kd"))]
    files += sorted(BAD_FOLDER.glob("*.kd"))
    return [(path.relative_to(ROOT).as_posix(), path.read_bytes()) for path in files]


def _tokens(text: bytes) -> list[tuple[int, int]]:
    return [m.span() for m in TOKEN.finditer(text)]


def _pick_token(rng: random.Random, text: bytes) -> tuple[int, int] | None:
    spans = _tokens(text)
    return rng.choice(spans) if spans else None


def truncate(rng, text, files):
    cut = rng.randrange(len(text) + 1)
    return text[:cut], f"truncate@{cut}"


def delete_token(rng, text, files):
    span = _pick_token(rng, text)
    if span is None:
        return text, "delete-none"
    return text[: span[0]] + text[span[1] :], f"delete@{span[0]}"


def duplicate_token(rng, text, files):
    span = _pick_token(rng, text)
    if span is None:
        return text, "duplicate-none"
    token = text[span[0] : span[1]]
    return text[: span[1]] + b" " + token + text[span[1] :], f"duplicate@{span[0]}"


def swap_tokens(rng, text, files):
    spans = _tokens(text)
    if len(spans) < 2:
        return text, "swap-none"
    i = rng.randrange(len(spans) - 1)
    (a0, a1), (b0, b1) = spans[i], spans[i + 1]
    swapped = text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
    return swapped, f"swap@{a0}"


def random_bytes(rng, text, files):
    at = rng.randrange(len(text) + 1)
    noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return text[:at] + noise + text[at:], f"bytes@{at}"


def invalid_utf8(rng, text, files):
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(BAD_UTF8) + text[at:], f"utf8@{at}"


def keyword(rng, text, files):
    at = rng.randrange(len(text) + 1)
    word = rng.choice(VOCABULARY)
    return text[:at] + b" " + word + b" " + text[at:], f"word@{at}"


def splice(rng, text, files):
    """A token of this file replaced by a token of another."""
    span = _pick_token(rng, text)
    _, other = rng.choice(files)
    donor = _pick_token(rng, other)
    if span is None or donor is None:
        return text, "splice-none"
    return text[: span[0]] + other[donor[0] : donor[1]] + text[span[1] :], f"splice@{span[0]}"


def huge_number(rng, text, files):
    numbers = [m.span() for m in re.finditer(rb"\b\d+(?:\.\d+)?\b", text)]
    if not numbers:
        return text, "number-none"
    a, b = rng.choice(numbers)
    digits = rng.choice([20, 400, 5000, 100_000])
    huge = rng.choice([b"9" * digits, b"1" + b"0" * digits + b".5", b"1e" + b"9" * min(digits, 40)])
    return text[:a] + huge + text[b:], f"number@{a}x{digits}"


def long_string(rng, text, files):
    strings = [m.span() for m in re.finditer(rb'"(?:\\.|[^"\\\n])*"', text)]
    if not strings:
        return text, "string-none"
    a, b = rng.choice(strings)
    size = rng.choice([1_000, 100_000, 1_000_000])
    return text[:a] + b'"' + b"a" * size + b'"' + text[b:], f"string@{a}x{size}"


def deep_nesting(rng, text, files):
    """An expression position wrapped N deep in parentheses, `not`s, lists or maps."""
    places = [m.end() for m in re.finditer(rb"(?:keep|weight|=)\s", text)]
    if not places:
        return text, "nest-none"
    at = rng.choice(places)
    depth = rng.choice([50, 99, 101, 400, 1_000, 5_000])
    opener, closer = rng.choice([(b"(", b")"), (b"not ", b""), (b"[", b"]"), (b"{a: ", b"}")])
    return text[:at] + opener * depth + b"1" + closer * depth + b" " + text[
        at:
    ], f"nest@{at}x{depth}"


MUTATIONS = {
    "truncate": (truncate, 6),
    "delete": (delete_token, 6),
    "duplicate": (duplicate_token, 4),
    "swap": (swap_tokens, 4),
    "bytes": (random_bytes, 3),
    "utf8": (invalid_utf8, 2),
    "word": (keyword, 4),
    "splice": (splice, 4),
    "number": (huge_number, 1),
    "string": (long_string, 0.2),
    "nest": (deep_nesting, 0.5),
}
"""Each mutation with its weight among the cases."""


def _declarations(text: bytes) -> list[bytes]:
    """Top-level pieces of a recipe: lines from one at column 1 to the next."""
    pieces, current = [], []
    for line in text.splitlines(keepends=True):
        if line[:1].isalpha() and current:
            pieces.append(b"".join(current))
            current = []
        current.append(line)
    if current:
        pieces.append(b"".join(current))
    return pieces


def spliced_recipe(rng: random.Random, files: list[tuple[str, bytes]]) -> bytes:
    """A recipe made of declarations of several files: names that may or may not resolve,
    stages of one recipe reading data of another."""
    pieces = []
    for _ in range(rng.randint(1, 8)):
        _, text = rng.choice(files)
        found = _declarations(text)
        if found:
            pieces.append(rng.choice(found))
    return b"".join(pieces)


def cases(seed: int, count: int, start: int = 0) -> Iterator[tuple[str, bytes]]:
    """Cases ``start .. start+count-1`` of the stream of ``seed``: each derived from its own
    ``Random(seed, index)``, so any one can be rebuilt alone."""
    files = corpus()
    names = list(MUTATIONS)
    weights = [MUTATIONS[n][1] for n in names]
    for index in range(start, start + count):
        rng = random.Random(f"{seed}:{index}")
        if rng.random() < 0.1:
            yield f"{seed}:{index}:spliced", spliced_recipe(rng, files)
            continue
        origin, text = rng.choice(files)
        for _ in range(rng.choice([1, 1, 1, 2, 3])):  # sometimes several mutations on top
            mutation = rng.choices(names, weights)[0]
            text, where = MUTATIONS[mutation][0](rng, text, files)
        yield f"{seed}:{index}:{origin}:{where}", text


def case(name: str) -> bytes:
    """The bytes of the case called ``name`` (``seed:index:...``)."""
    seed, index = name.split(":")[:2]
    ((_, text),) = cases(int(seed), 1, int(index))
    return text
