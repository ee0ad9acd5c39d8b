"""Importing kdlang from this checkout when it is not installed (the benchmarks also run from
a plain copy of the repository, e.g. on a GPU machine).

An install maps ``kdlang/`` to ``kdlang``, ``runtime/`` to ``kdlang.runtime``, ``grammar/`` to
``kdlang.grammar`` and ``recipes/`` to ``kdlang.recipes`` (pyproject.toml). :func:`link_package`
builds that package as a folder of links; :func:`use_checkout` imports through it when the
installed kdlang is missing.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"runtime": ROOT / "runtime", "grammar": ROOT / "grammar", "recipes": ROOT / "recipes"}


def link_package(folder: Path) -> Path:
    """``folder/kdlang``: links to ``kdlang/``'s entries and to the mapped folders, as an
    install lays them out. Returns ``folder``, the entry to put on a path."""
    package = folder / "kdlang"
    package.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in (ROOT / "kdlang").iterdir() if p.name != "__pycache__"}
    links.update(MAPPED)
    for name, target in links.items():
        if not (package / name).exists():
            (package / name).symlink_to(target)
    return folder


def use_checkout(module: str) -> None:
    """Import ``module`` (a kdlang module); if kdlang is not installed, import it from this
    checkout instead: the linked package and the checkout itself (``tests``, ``benchmarks``)
    go first on this process's path and on the ``PYTHONPATH`` its children inherit."""
    try:
        importlib.import_module(module)
        return
    except ImportError:
        for name in [m for m in sys.modules if m == "kdlang" or m.startswith("kdlang.")]:
            del sys.modules[name]
    folder = link_package(Path(tempfile.gettempdir()) / "kdlang-checkout")
    sys.path[:0] = [str(folder), str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(folder), str(ROOT), os.environ.get("PYTHONPATH")])
    )
    importlib.invalidate_caches()
    importlib.import_module(module)
