"""The on-disk layout of kdlang's content-addressed cache, shared by ``plan`` (which reads it)
and the runtime (which writes it).

::

    <cache>/artifacts/<fingerprint>/manifest.json   committed outputs: a folder appears only by
    <cache>/artifacts/<fingerprint>/...             an atomic rename of a finished temporary one
    <cache>/tmp/<fingerprint>.<random>/             outputs being written (never read)
    <cache>/progress/<fingerprint>/                 resumable progress shards of long stages
    <cache>/index/<recipe>.json                     per recipe: each stage's last fingerprint and
                                                    its components (to explain what changed)

A manifest holds ``fingerprint, op, name, schema, rows, content_hash, kdlang_version,
created``. An artifact without a manifest is not an artifact.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_CACHE = ".kdcache"
MANIFEST = "manifest.json"


class Store:
    def __init__(self, root: str | os.PathLike = DEFAULT_CACHE):
        self.root = Path(root)

    def artifact(self, fingerprint: str) -> Path:
        return self.root / "artifacts" / fingerprint

    def manifest(self, fingerprint: str) -> dict | None:
        path = self.artifact(fingerprint) / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_cached(self, fingerprint: str) -> bool:
        return self.manifest(fingerprint) is not None

    def progress_dir(self, fingerprint: str) -> Path:
        return self.root / "progress" / fingerprint

    def index_path(self, recipe: str) -> Path:
        return self.root / "index" / f"{safe_name(recipe)}.json"

    def read_index(self, recipe: str) -> dict[str, Any]:
        try:
            return json.loads(self.index_path(recipe).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def record(self, recipe: str, name: str, entry: dict[str, Any]) -> None:
        """Remember a node's fingerprint and components under its name (atomic replace)."""
        index = self.read_index(recipe)
        index[name] = entry
        write_json_atomic(self.index_path(recipe), index)


def write_json_atomic(path: Path, document: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def safe_name(title: str) -> str:
    """A recipe's title as a file or folder name (the cache's index, ``runs/<name>/``): ASCII
    letters, digits and ``_.-`` kept, every run of anything else one ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", title).strip("-") or "recipe"
