"""Fingerprints: what a stage's output depends on, hashed.

A node's fingerprint is the SHA-256 of a canonical JSON document of its *components*:

- ``op`` and ``code``: the operator and the version of kdlang's code for it (its descriptor's
  ``code_version``, :mod:`kdlang.ir.descriptor`);
- ``params``: the node's canonical IR (positions, comments and declaration names excluded;
  references replaced by what they refer to: a prompt by its template text, a model by its
  identity — a local folder by the content hash of its files, a hub id by id + revision;
  secrets from ``env()`` by the variable's name, never its value);
- ``inputs``: upstream fingerprints, by role; ``files``: content hashes of local input files;
- ``seed``: the recipe's seed.

So a fingerprint is invariant under ``fmt``, comments and the order of independent declarations,
and identical across processes and checkouts; it changes when anything it depends on does. The
components are kept too, so ``plan`` can say *what* changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kdlang import __version__
from kdlang.ir.values import Ref

_FILE_MEMO: dict[tuple[str, int, int], str] = {}
_SETTLED_NS = 3_000_000_000


def digest(document: Any) -> str:
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def canonical_json(document: Any) -> str:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def file_hash(path: Path) -> str:
    """SHA-256 of a file's bytes (memoised per process by path, size and mtime).

    A file modified in the last few seconds is hashed every time: file systems keep mtimes at a
    coarse granularity, so a same-size rewrite within one tick would otherwise keep its old hash.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _FILE_MEMO:
        return _FILE_MEMO[key]
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    if time.time_ns() - stat.st_mtime_ns > _SETTLED_NS:
        _FILE_MEMO[key] = sha.hexdigest()
    return sha.hexdigest()


def folder_hash(path: Path) -> str:
    """Content hash of every file under a folder (relative names and bytes), order-independent."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            full = Path(root) / name
            entries.append((full.relative_to(path).as_posix(), file_hash(full)))
    return digest(sorted(entries))


def canonical(value: Any, resolve) -> Any:
    """A node's IR as plain JSON data, references replaced through ``resolve(ref)``."""
    if isinstance(value, Ref):
        return resolve(value)
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return {
            name: canonical(getattr(value, name), resolve)
            for name in fields
            if not fields[name].exclude
        }
    if isinstance(value, dict):
        return {str(k): canonical(v, resolve) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v, resolve) for v in value]
    return value


def fingerprint(components: dict[str, Any]) -> str:
    return digest({"kdlang": __version__.split(".")[0], **components})
