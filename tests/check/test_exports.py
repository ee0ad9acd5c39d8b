"""Export paths (``kdlang.check.exports``, KD0405): no export onto the working directory, the
cache, or a folder above them. The checker judges paths against the current directory, which
each test makes its project folder; nothing is written or deleted by a check."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlang.check.exports import DEFAULT_CACHE
from kdlang.plan.store import DEFAULT_CACHE as PLAN_DEFAULT_CACHE
from tests.check.support import HEADER, diagnose, only

RECIPE = HEADER + (
    'prompt ask = "{{{{ question }}}}"\n'
    "train t {{ student = student  data = problems  prompt = ask  target = answer"
    "  loss sft weight 1.0 }}\n"
    'export t to "{path}"\n'
)
"""The export is on line 7; its path's string starts at column 13."""


@pytest.fixture
def here(project: Path, monkeypatch) -> Path:
    monkeypatch.chdir(project)
    return project


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "is empty, which names the working directory"),
        (".", "is the working directory"),
        ("./", "is the working directory"),
        ("a/..", "is the working directory"),
        ("a/b/../..", "is the working directory"),
        ("{here}", "is the working directory"),
        ("..", "is an ancestor of the working directory"),
        ("./..", "is an ancestor of the working directory"),
        ("../..", "is an ancestor of the working directory"),
        ("{parent}", "is an ancestor of the working directory"),
        ("/", "is an ancestor of the working directory"),
        (".kdcache", "is the cache folder"),
        ("./.kdcache/", "is the cache folder"),
        ("{here}/.kdcache", "is the cache folder"),
        (".kdcache/artifacts", "is inside the cache folder"),
        ("out/../.kdcache/x", "is inside the cache folder"),
    ],
)
def test_unsafe_export_paths_are_errors_at_the_path(here: Path, path: str, reason: str):
    written = path.format(here=here, parent=here.parent)
    before = snapshot(here)
    d = only(diagnose(here, RECIPE.format(path=written)), "KD0405")
    assert d.message == f'unsafe export path "{written}": it {reason}'
    assert (d.span.line, d.span.column, d.span.end_column) == (7, 13, 15 + len(written))
    assert d.help.startswith("an export replaces its destination folder")
    assert '"exports/t"' in d.help
    assert {k: v for k, v in snapshot(here).items() if k != "recipe.kd"} == {
        k: v for k, v in before.items() if k != "recipe.kd"
    }


def test_a_link_to_the_working_directory_is_an_error(here: Path):
    (here / "link").symlink_to(here, target_is_directory=True)
    d = only(diagnose(here, RECIPE.format(path="link/")), "KD0405")
    assert d.message == 'unsafe export path "link/": it is the working directory'


@pytest.mark.parametrize(
    "path", ["exports/t", "out", "../elsewhere/t", "a/../out", ".kdcache-exports", "{tmp}/t"]
)
def test_folders_of_their_own_pass(here: Path, path: str, tmp_path_factory):
    written = path.format(tmp=tmp_path_factory.mktemp("other"))
    assert diagnose(here, RECIPE.format(path=written)) == []


def test_every_export_line_is_checked(here: Path):
    text = RECIPE.format(path=".") + 'export t to "fine"\nexport t to ".."\n'
    diagnostics = diagnose(here, text)
    assert [(d.code, d.span.line, d.span.column) for d in diagnostics] == [
        ("KD0405", 7, 13),
        ("KD0405", 9, 13),
    ]


def test_the_default_cache_is_the_planners():
    assert DEFAULT_CACHE == PLAN_DEFAULT_CACHE
