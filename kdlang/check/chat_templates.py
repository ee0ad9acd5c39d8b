"""Chat templates of models: one written inline or in a file parses as Jinja the way
transformers parses one (with its ``{% generation %}`` markers), and a file's text replaces its
path in the IR, so that the runtime renders, and the plan fingerprints, the template itself
(KD0314, KD0315)."""

from __future__ import annotations

from kdlang.check.program import Program
from kdlang.ir.sources import HFModel
from kdlang.syntax.diagnostics import Collector


def check_chat_template(program: Program, name: str, model: HFModel, errors: Collector) -> None:
    """A model's own chat template parses; a file's text replaces its path in the IR, so that
    the runtime renders, and the plan fingerprints, the template itself."""
    span = model.spans.get("chat_template", model.span)
    path = model.template_file()
    if path is not None:
        file = program.resolve(model.span.file, path)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            reason = "not found" if isinstance(error, FileNotFoundError) else "unreadable"
            errors.error(
                "KD0314",
                f"chat template file {reason}: {path}",
                span,
                help=f"looked for {file} (paths are relative to the recipe file)",
            )
            return
        program.recipe.models[name] = model.model_copy(update={"chat_template": text})
    elif model.inline_template():
        text = model.chat_template
    else:
        return
    problem = template_syntax_error(text)
    if problem is not None:
        line, message = problem
        where = f"line {line} of {path}" if path else f"line {line} of the template"
        errors.error(
            "KD0315",
            f"the chat template of `{name}` is no valid Jinja ({where}): {message}",
            span,
        )


def template_syntax_error(text: str) -> tuple[int, str] | None:
    """``(line, message)`` of the first syntax error of a chat template, parsed as
    transformers parses one; None when it parses."""
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """``{% generation %}...{% endgeneration %}``: the assistant-span markers."""

        tags = {"generation"}  # noqa: RUF012 - jinja's own attribute

        def parse(self, parser):
            line = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(line)

    env = ImmutableSandboxedEnvironment(extensions=[Generation, "jinja2.ext.loopcontrols"])
    try:
        env.parse(text)
    except TemplateSyntaxError as error:
        return error.lineno, error.message or "syntax error"
    return None
