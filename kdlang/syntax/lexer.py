"""The parser's contextual lexer, with one scanner shared by every parser state.

Lark's contextual lexer gives each LALR state its own scanner: an alternation of the terminals
the state accepts, compiled as a regular expression the first time the state is met. A recipe
meets twenty-odd states, and compiling their expressions (with a second one per state for the
keywords a name can spell) was most of the time of the first parse of a ``kdlang`` command.

:class:`SharedScanContextualLexer` keeps lark's contextual lexing and changes only how a state
scans. It first tries the scanner of *all* terminals, compiled once, and keeps its match when
the state accepts that terminal. Only when it does not (a keyword where the state wants a name,
``->`` where only ``-`` may come ...) is the state's own scanner compiled and asked.

Why the shared match is the one the state's scanner would give: both scanners are alternations
of terminals in one order (lark sorts them by priority, then by length), the state's terminals
a subset of all of them; an alternation returns its first alternative that matches at the
position. If the shared scanner's first match ``T`` is one of the state's terminals, no terminal
before ``T`` matched, so none of the state's did either, and the state's first match is ``T``,
with the same text. Keywords that the name terminal also matches are scanned as names in both
and renamed after the match by each state's own table of them, as lark does.
"""

from __future__ import annotations

import re

from lark.lexer import BasicLexer, ContextualLexer, PatternRE, PatternStr, Scanner


class _StateScanner:
    """A state's scanner: the shared one first, its own (compiled on first need) otherwise."""

    def __init__(self, lexer: _StateLexer, terminals: list):
        self.lexer = lexer
        self.terminals = terminals
        self.allowed_types = {t.name for t in terminals}
        self._own: Scanner | None = None

    def match(self, text, pos):
        found = self.lexer.shared.match(text, pos)
        if found is not None and found[1] in self.allowed_types:
            return found
        if self._own is None:
            lexer = self.lexer
            self._own = Scanner(self.terminals, lexer.g_regex_flags, lexer.re, lexer.use_bytes)
        return self._own.match(text, pos)


class _Shared:
    """The scanner of every terminal, compiled when first used and then by every state."""

    def __init__(self, lexer: _StateLexer):
        self.lexer = lexer
        self._scanner: Scanner | None = None

    def match(self, text, pos):
        if self._scanner is None:
            lexer = self.lexer
            terminals, _ = _fold_keywords(lexer.terminals)
            self._scanner = Scanner(terminals, lexer.g_regex_flags, lexer.re, lexer.use_bytes)
        return self._scanner.match(text, pos)


class _Rename:
    """Renames a token whose text is one of the state's keywords to that keyword's terminal."""

    def __init__(self, keywords: dict[str, str]):
        self.keywords = keywords

    def __call__(self, token):
        renamed = self.keywords.get(token.value)
        if renamed is not None:
            token.type = renamed
        return token


class _Then:
    """A user's lexer callback, run after the renaming when the token kept its type."""

    def __init__(self, rename: _Rename, callback, type_: str):
        self.rename, self.callback, self.type = rename, callback, type_

    def __call__(self, token):
        token = self.rename(token)
        return self.callback(token) if token.type == self.type else token


def _fold_keywords(terminals: list) -> tuple[list, dict[str, _Rename]]:
    """The terminals to scan for, and the renaming callbacks of the pattern terminals.

    A string terminal (a keyword) that a pattern terminal of the same priority matches whole
    is not scanned for itself: the pattern's match is renamed when its text is the keyword. A
    string with flags (``"model"i``) stays an alternative of its own."""
    patterns = [t for t in terminals if isinstance(t.pattern, PatternRE)]
    strings = [t for t in terminals if isinstance(t.pattern, PatternStr)]
    folded, renames = set(), {}
    for pattern in patterns:
        keywords = {}
        for string in strings:
            if string.priority != pattern.priority or string.pattern.flags:
                continue
            word = string.pattern.value
            spelled = re.match(pattern.pattern.to_regexp(), word)
            if spelled is not None and spelled.group(0) == word:
                keywords[word] = string.name
                folded.add(string.name)
        if keywords:
            renames[pattern.name] = _Rename(keywords)
    return [t for t in terminals if t.name not in folded], renames


class _StateLexer(BasicLexer):
    """Lark's lexer of one parser state, scanning through the shared scanner."""

    shared: _Shared

    def _build_scanner(self):
        if self.g_regex_flags or any(
            t.pattern.flags for t in self.terminals if isinstance(t.pattern, PatternStr)
        ):
            # A keyword with flags (`"model"i`) is not renamed by its text alone: lark's way.
            return super()._build_scanner()
        terminals, self.callback = _fold_keywords(self.terminals)
        for type_, callback in self.user_callbacks.items():
            rename = self.callback.get(type_)
            self.callback[type_] = callback if rename is None else _Then(rename, callback, type_)
        return _StateScanner(self, terminals)


class SharedScanContextualLexer(ContextualLexer):
    """Lark's contextual lexer whose states share one scanner (see the module's text). Passed to
    ``Lark`` as ``_plugins={"ContextualLexer": SharedScanContextualLexer}``."""

    BasicLexer = _StateLexer

    def __init__(self, conf, states, always_accept=()):
        super().__init__(conf, states, always_accept)
        shared = _Shared(self.root_lexer)
        for lexer in [self.root_lexer, *self.lexers.values()]:
            lexer.shared = shared
