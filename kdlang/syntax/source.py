"""Reading a recipe file safely, and the nesting limit of the parser.

A recipe or an import is read only when it is a regular file (a FIFO would block, ``/dev/zero``
never ends, a folder is no text) of at most :data:`MAX_SOURCE_BYTES`; the check is made with
``os.stat`` before the file is opened. Text that is not UTF-8 is a diagnostic (KD0411) at the line
and column of its first bad byte.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from kdlang.syntax.diagnostics import Diagnostic, DiagnosticError
from kdlang.syntax.span import Span

MAX_SOURCE_BYTES = 4 * 1024 * 1024


class SourceRefused(Exception):
    """A path that must not be read as a recipe; ``code`` and the message say why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def kind_of(path: str | os.PathLike) -> str | None:
    """``"file"``, ``"dir"`` or ``"other"`` for what is at ``path``; ``None`` when nothing can be
    (missing, a component too long for the system, no permission): a look that never raises,
    for paths taken from a recipe."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    return "dir" if stat.S_ISDIR(mode) else "file" if stat.S_ISREG(mode) else "other"


def component_too_long(path: str) -> bool:
    """Whether a component of ``path`` is longer than file systems allow (255 bytes)."""
    return any(
        len(part.encode("utf-8", "surrogatepass")) > 255 for part in re.split(r"[/\\]", path)
    )


def check_readable(path: str, limit: int | None = MAX_SOURCE_BYTES) -> os.stat_result:
    """``os.stat`` of ``path`` if it is a regular file (of at most ``limit`` bytes). Raises
    FileNotFoundError for a missing file, :class:`SourceRefused` for anything else unreadable."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise
    except ValueError:  # an embedded NUL
        raise SourceRefused(
            "KD0407", "the path holds a NUL character, which no file name can"
        ) from None
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:
            raise SourceRefused(
                "KD0409", "the path has a component longer than the system allows"
            ) from None
        if error.errno == errno.ENOTDIR:
            raise FileNotFoundError(path) from None
        raise SourceRefused("KD0407", f"cannot read the file: {error.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise SourceRefused("KD0407", "it is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise SourceRefused("KD0407", "it is not a regular file (a device, a pipe or a socket)")
    if limit is not None and info.st_size > limit:
        raise SourceRefused(
            "KD0408", f"the file has {info.st_size} bytes, more than the limit of {limit}"
        )
    return info


def read_recipe_bytes(path: str) -> bytes:
    """The bytes of a recipe file, after :func:`check_readable`; at most the size cap are read
    even if the file grows meanwhile."""
    check_readable(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_SOURCE_BYTES + 1)
    except OSError as error:
        raise SourceRefused("KD0407", f"cannot read the file: {error.strerror}") from None
    if len(data) > MAX_SOURCE_BYTES:
        raise SourceRefused("KD0408", f"the file has more than {MAX_SOURCE_BYTES} bytes")
    return data


def byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """(line, column) of byte ``offset``, columns counted in characters of the valid text before
    it on its line (1-based)."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    column = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, column


def decode_source(data: bytes, file: str) -> str:
    """The text of a recipe's bytes, or :class:`DiagnosticError` (KD0411) at its first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line, column = byte_position(data, error.start)
        span = Span(file, line, column, line, column + 1)
        bad = data[error.start : error.start + 1].hex()
        raise DiagnosticError(
            [
                Diagnostic(
                    "KD0411",
                    f"the file is not valid UTF-8 text: byte 0x{bad} at {line}:{column}",
                    span,
                    help="save the file as UTF-8",
                )
            ]
        ) from None


def lenient_text(data: bytes) -> str:
    """The text of ``data`` with bad bytes replaced, for showing the lines of a KD0411."""
    return data.decode("utf-8", errors="replace")
