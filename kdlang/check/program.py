"""Loading a recipe with its imports into one :class:`Program`.

``import "common.kd"`` makes every declaration of that file (except its ``recipe`` header and
its ``export`` lines) visible in the importing file. Paths in a file — imports, data files,
local models — are relative to that file's folder. Import cycles (KD0203), missing files
(KD0402) and names declared twice across files (KD0202, with both places) are diagnostics. Only
``.kd`` files are imported (KD0410), and only regular files of at most 4 MiB
(:mod:`kdlang.syntax.source`): no diagnostic ever shows the lines of another kind of file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kdlang.ir.recipe import Recipe
from kdlang.lower import lower
from kdlang.syntax import ast
from kdlang.syntax.diagnostics import Collector, DiagnosticError
from kdlang.syntax.parser import parse
from kdlang.syntax.source import SourceRefused, decode_source, lenient_text, read_recipe_bytes
from kdlang.syntax.span import Span

if TYPE_CHECKING:  # imported by the checker only when a command has overrides
    from kdlang.check.overrides import Overrides


@dataclass
class Program:
    """A checked-to-be recipe: its declarations (imports merged in) and where they came from."""

    recipe: Recipe
    root: str
    sources: dict[str, str] = field(default_factory=dict)
    modules: dict[str, ast.Module] = field(default_factory=dict)
    schemas: dict[str, dict[str, str] | None] = field(default_factory=dict)

    def base_dir(self, span_file: str) -> Path:
        return Path(span_file).parent

    def resolve(self, span_file: str, path: str) -> Path:
        """A path written in ``span_file``, relative to that file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir(span_file) / candidate


def load_program(
    path: str, errors: Collector, overrides: Overrides | None = None, source: str | None = None
) -> Program | None:
    """Parse and lower ``path`` and, recursively, its imports. None if the root cannot parse."""
    program = Program(recipe=Recipe.empty(file=path), root=path)
    try:
        loaded = _load(path, program, errors, [], overrides, source)
    except (SourceRefused, _Missing) as refused:
        code = refused.code if isinstance(refused, SourceRefused) else "KD0402"
        errors.error(code, f"cannot read {path}: {refused}", Span(path, 1, 1, 1, 2))
        return None
    if loaded and overrides is not None:
        overrides.report_unmatched(path, errors)
    return program if loaded else None


def _load(
    path: str,
    program: Program,
    errors: Collector,
    stack: list[str],
    overrides: Overrides | None,
    source: str | None = None,
) -> bool:
    if source is None:
        try:
            data = read_recipe_bytes(path)
        except FileNotFoundError as error:
            raise _Missing(str(error)) from None
        try:
            source = decode_source(data, path)
        except DiagnosticError as failure:
            program.sources[path] = lenient_text(data)
            errors.extend(failure.diagnostics)
            return False
    program.sources[path] = source
    try:
        module = parse(source, path)
    except DiagnosticError as failure:
        errors.extend(failure.diagnostics)
        return False
    if overrides is not None:
        overrides.apply(module, program, errors, root=not stack)
    program.modules[path] = module
    for decl in module.decls:
        if not isinstance(decl, ast.ImportDecl):
            continue
        target = (
            str(Path(path).parent / decl.path.value)
            if not Path(decl.path.value).is_absolute()
            else decl.path.value
        )
        target = _normal(target)
        chain = [*stack, _normal(path)]
        if target in chain:
            cycle = " -> ".join([*chain[chain.index(target) :], target])
            errors.error("KD0203", f"import cycle: {cycle}", decl.path.span)
            continue
        if target in program.modules:
            continue
        if not decl.path.value.endswith(".kd"):
            errors.error(
                "KD0410",
                f"`import` reads `.kd` recipe files only, not {decl.path.value!r}",
                decl.path.span,
                help="read data with jsonl(...), csv(...) or parquet(...)",
            )
            continue
        try:
            _load(target, program, errors, chain, overrides)
        except SourceRefused as refused:
            errors.error(
                refused.code, f"cannot import {decl.path.value}: {refused.message}", decl.path.span
            )
        except _Missing:
            errors.error(
                "KD0402",
                f"imported file not found: {decl.path.value}",
                decl.path.span,
                help=f"looked for {target} (imports are relative to the importing file)",
            )
    imported = lower(module, errors)
    _merge(program.recipe, imported, is_root=not stack, errors=errors)
    return True


class _Missing(Exception):
    pass


def _normal(path: str) -> str:
    # Lexical normalisation, so that `sub/../a.kd` and `a.kd` are one file: without it an import
    # cycle written through `..` would never meet itself in the chain.
    return os.path.normpath(path)


def _merge(into: Recipe, part: Recipe, is_root: bool, errors: Collector) -> None:
    if is_root:
        into.header = part.header
        into.exports.extend(part.exports)
        into.file = part.file
    into.imports.extend(part.imports)
    for name, section in part.broken.items():
        into.broken.setdefault(name, section)
        into.name_spans.setdefault(name, part.name_spans[name])
    for section in Recipe.SECTIONS:
        table = getattr(part, section)
        for name, node in table.items():
            if name in into.name_spans:
                errors.error(
                    "KD0202",
                    f"`{name}` is declared twice",
                    part.name_spans[name],
                    notes=[("first declared here", into.name_spans[name])],
                )
                continue
            getattr(into, section)[name] = node
            into.name_spans[name] = part.name_spans[name]
