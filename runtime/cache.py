"""The content-addressed artifact cache (layout: :mod:`kdlang.plan.store`).

Outputs are written into a private temporary folder and committed by one atomic rename into
``artifacts/<fingerprint>/`` after their manifest is written and synced: a crash at any moment
leaves either no artifact or a complete one, never a partial artifact that a later run would
trust. Long stages append finished work to a :class:`ProgressLog` as they go, so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from kdlang import __version__
from kdlang.plan.store import MANIFEST, Store

DATA_FILE = "data.arrow"


class ArtifactCache(Store):
    """A :class:`Store` that can also write."""

    @contextmanager
    def writing(self, fingerprint: str) -> Iterator[Path]:
        """A fresh temporary folder for an artifact; removed if the block fails or is not
        committed (an interrupted process leaves it under ``tmp/``, where ``gc`` finds it)."""
        tmp = self.root / "tmp" / f"{fingerprint}.{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        try:
            yield tmp
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def commit(
        self, tmp: Path, fingerprint: str, manifest: dict[str, Any], *, replace: bool = False
    ) -> Path:
        """Write the manifest, sync, and move ``tmp`` into place atomically. An artifact already
        committed under ``fingerprint`` is kept (same inputs, same content) unless ``replace``
        (a forced rerun): then it is moved aside first, so the folder holds one or the other."""
        document = {
            "fingerprint": fingerprint,
            "kdlang_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **manifest,
        }
        if "content_hash" not in document:
            document["content_hash"] = tree_hash(tmp)
        with (tmp / MANIFEST).open("w", encoding="utf-8") as out:
            json.dump(document, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        _fsync_tree(tmp)
        final = self.artifact(fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        if replace and final.exists():
            old = self.root / "tmp" / f"{fingerprint}.replaced.{uuid.uuid4().hex[:12]}"
            os.rename(final, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not self.is_cached(fingerprint):  # an earlier, unreadable leftover: replace it
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            # else: another process committed the same content first; ours is discarded
        _fsync_dir(final.parent)
        return final

    def entries(self) -> list[dict[str, Any]]:
        """Manifests of every committed artifact, with their sizes on disk."""
        out = []
        folder = self.root / "artifacts"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            manifest = self.manifest(path.name)
            if manifest is not None:
                manifest["bytes"] = disk_bytes(path)
                out.append(manifest)
        return out

    def gc(self, keep: set[str] | None, *, dry_run: bool = False) -> list[dict[str, Any]]:
        """Delete the artifacts and progress whose fingerprint is not in ``keep`` (everything,
        the recipe index included, when ``keep`` is None) and every temporary leftover.
        Returns what was (with ``dry_run``: would be) removed, one entry per folder:
        ``{"kind": artifact|progress|tmp|index, "fingerprint", "op", "name", "bytes"}``."""
        removed: list[dict[str, Any]] = []
        kinds = {"artifacts": "artifact", "progress": "progress", "tmp": "tmp", "index": "index"}
        for sub, kind in kinds.items():
            folder = self.root / sub
            if kind == "index" and keep is not None:
                continue
            for path in sorted(folder.iterdir()) if folder.is_dir() else []:
                fingerprint = path.name.split(".")[0]
                if kind in ("artifact", "progress") and keep is not None and fingerprint in keep:
                    continue
                manifest = self.manifest(fingerprint) if kind == "artifact" else None
                removed.append(
                    {
                        "kind": kind,
                        "fingerprint": fingerprint,
                        "op": (manifest or {}).get("op"),
                        "name": (manifest or {}).get("name"),
                        "bytes": disk_bytes(path),
                    }
                )
                if dry_run:
                    continue
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        return removed


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class ProgressLog:
    """Append-only record of finished work items (one JSON line each, synced).

    A process killed mid-write leaves at most one truncated last line, which :meth:`load`
    ignores; an item is done exactly when its line is complete.

    Several processes of one run (ranks) share a log by writing one part each: rank 0 the file
    ``name`` itself, rank r ``<stem>.rank<r><suffix>``. :meth:`load` reads every part, so a log
    written by any number of processes resumes under any other number.
    """

    def __init__(self, folder: Path, name: str = "progress.jsonl", rank: int = 0):
        folder.mkdir(parents=True, exist_ok=True)
        stem, suffix = os.path.splitext(name)
        self._parts = (folder, f"{stem}.rank", suffix, name)
        self.path = folder / (name if rank == 0 else f"{stem}.rank{rank}{suffix}")
        self._handle: BinaryIO | None = None

    def part_paths(self) -> list[Path]:
        """Every rank's part of this log that exists, rank 0's first."""
        folder, prefix, suffix, name = self._parts
        others = [
            p
            for p in folder.glob(f"{prefix}*{suffix}")
            if p.name[len(prefix) : len(p.name) - len(suffix)].isdigit()
        ]
        ranked = sorted(others, key=lambda p: int(p.name[len(prefix) : len(p.name) - len(suffix)]))
        return [p for p in [folder / name, *ranked] if p.is_file()]

    def load(self) -> dict[int, Any]:
        """The finished items of every part, by index."""
        done: dict[int, Any] = {}
        for path in self.part_paths():
            with path.open("rb") as handle:
                for line in handle:
                    if not line.endswith(b"\n"):
                        break  # truncated by a crash
                    record = json.loads(line)
                    if "items" in record:
                        done.update((index, value) for index, value in record["items"])
                    else:
                        done[record["index"]] = record["value"]
        return done

    def append(self, index: int, value: Any) -> None:
        self._write({"index": index, "value": value})

    def append_many(self, items: dict[int, Any]) -> None:
        """Log several items as one line: after a crash, all of them are done or none is (a
        decode batch whose rows must be generated together, or not at all, on resume)."""
        if items:
            self._write({"items": [[index, value] for index, value in sorted(items.items())]})

    def _write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            self._truncate_partial_line()
            self._handle = self.path.open("ab")
        handle = self._handle
        handle.write(json.dumps(record, sort_keys=True).encode() + b"\n")
        handle.flush()
        os.fsync(handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _truncate_partial_line(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.path.open("r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)


UNHASHED = ("timings.jsonl", "tensorboard")
"""Files and folders of an artifact whose content the clock and the machine decide (step times,
TensorBoard events with their wall times and host name): not in its content hash, so that two
identical runs commit the same hash."""


def tree_hash(folder: Path) -> str:
    """SHA-256 over the paths and bytes of every file under ``folder``, less the manifest and
    :data:`UNHASHED`."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and _hashed(folder, p)):
        sha.update(path.relative_to(folder).as_posix().encode() + b"\0")
        for block in _blocks(path):
            sha.update(block)
    return sha.hexdigest()


def _hashed(folder: Path, path: Path) -> bool:
    top = path.relative_to(folder).parts[0]
    return path.name != MANIFEST and top not in UNHASHED


def file_hashes(folder: Path) -> dict[str, str]:
    """The SHA-256 of every file under ``folder`` (hidden ones and manifests included), by its
    ``/``-separated path relative to ``folder``: what an export compares its destination with."""
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha = hashlib.sha256()
        for block in _blocks(path):
            sha.update(block)
        hashes[path.relative_to(folder).as_posix()] = sha.hexdigest()
    return hashes


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
