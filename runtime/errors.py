"""The error a run reports to its user: :class:`RunError`.

A run-level module of its own, beneath everything else in the runtime, so that any part of it —
the executor and the stage context, a stage, the training machinery — can raise it without
importing the others.
"""

from __future__ import annotations


class RunError(Exception):
    """A run cannot go on for a reason the user can act on (missing secret, failed requests...).
    The CLI prints it without a traceback; finished stages stay committed."""
