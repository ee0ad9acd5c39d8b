"""The checker: everything that can be known about a recipe before a model is loaded.

Pipeline: parse and lower the file and its imports (:mod:`~kdlang.check.program`), apply
``--set`` overrides (:mod:`~kdlang.check.overrides`), resolve names (:mod:`~kdlang.check.names`),
derive column schemas and check prompts, expressions and column settings
(:mod:`~kdlang.check.schemas`), local model paths (:mod:`~kdlang.check.models`), export
paths (:mod:`~kdlang.check.exports`), then compatibility (:mod:`~kdlang.check.compat`). Every
diagnostic of every step is collected; nothing stops at the first error.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdlang.check.compat import check_compat
from kdlang.check.environment import check_environment
from kdlang.check.evaluation import check_evaluation
from kdlang.check.exports import check_exports
from kdlang.check.models import check_models
from kdlang.check.names import check_names
from kdlang.check.program import Program, load_program
from kdlang.check.schemas import compute_schemas
from kdlang.syntax.diagnostics import Collector, Diagnostic, DiagnosticError

__all__ = ["Program", "check_files", "check_program", "load_checked"]


def check_program(
    path: str, overrides: list[str], errors: Collector, source: str | None = None
) -> Program | None:
    """Load and check one recipe; diagnostics go to ``errors``."""
    parsed = None
    if overrides:  # imported only when given: most checks have none
        from kdlang.check.overrides import Overrides

        parsed = Overrides.parse(overrides, errors)
    program = load_program(path, errors, parsed, source)
    if program is None:
        return None
    if parsed is not None:
        program.sources.update(parsed.sources)
    names_resolved = check_names(program.recipe, errors)
    # Columns, prompts and expressions are checked even when a reference failed (what reads an
    # unresolved name is skipped there), so that one run reports every error of the file;
    # compatibility needs every model and dataset in place.
    program.schemas = compute_schemas(program, errors)
    check_models(program, errors)
    check_exports(program, errors)
    check_environment(program.recipe, errors)
    if names_resolved:
        check_compat(program, errors)
        check_evaluation(program, errors)
    return program


def load_checked(path: str, overrides: Sequence[str] = ()) -> tuple[Program, list[Diagnostic]]:
    """A program that passed every check (warnings returned), or :class:`DiagnosticError`."""
    errors = Collector()
    program = check_program(path, list(overrides), errors)
    errors.raise_if_errors()
    assert program is not None
    return program, errors.diagnostics


def check_files(
    paths: list[str], overrides: Sequence[str] = (), texts: dict[str, str] | None = None
) -> tuple[list[Diagnostic], dict[str, str]]:
    """Diagnostics of every file (in file order) and the sources they point into. ``texts``
    gives the source of a path that is not read from disk (e.g. ``<stdin>``)."""
    diagnostics: list[Diagnostic] = []
    sources: dict[str, str] = {}
    texts = texts or {}
    for path in paths:
        errors = Collector()
        try:
            program = check_program(path, list(overrides), errors, texts.get(path))
        except DiagnosticError as failure:  # pragma: no cover - every step collects instead
            errors.extend(failure.diagnostics)
            program = None
        if program is not None:
            sources.update(program.sources)
        else:
            sources[path] = texts.get(path) or _shown_source(path)
            sources.update(_override_sources(overrides))
        diagnostics.extend(
            sorted(
                errors.diagnostics,
                key=lambda d: (d.span.file != path, d.span.file, d.span.line, d.span.column),
            )
        )
    return diagnostics, sources


def _shown_source(path: str) -> str:
    """The text a diagnostic of an unloadable file shows: read only as a recipe is (a regular
    file under the size cap), bad bytes replaced; empty when it cannot be read at all."""
    from kdlang.syntax.source import SourceRefused, lenient_text, read_recipe_bytes

    try:
        return lenient_text(read_recipe_bytes(path))
    except (OSError, SourceRefused):
        return ""


def _override_sources(overrides: Sequence[str]) -> dict[str, str]:
    from kdlang.check.overrides import source_names

    texts = list(overrides)
    return dict(zip(source_names(texts), texts, strict=True))
