"""What a command line is expected to do on the first day: ``--version``, a success line from
``check``, folders for ``check`` and ``fmt``, ``fmt --diff``, colour that follows ``--color``
and ``NO_COLOR``, ``-q``/``-v``, help without Python type names, and docs/cli.md naming exactly
the flags that exist."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from kdlang import __version__
from kdlang.cli import app
from tests.syntax.support import BAD, GOOD

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.kd"
CLEAN = str(GOOD / "arith_cot.kd")
FAULTY = str(BAD / "52_duplicate_loss.kd")
ESC = "\x1b["
runner = CliRunner()

# A recipe that checks with one warning: an environment variable it reads is not set.
WARNED = """recipe "w" { seed = 1 }
model api = openai("m", base_url = env("KD_HABITS_UNSET"))
dataset qs = inline([{q: "a"}])
prompt ask = "Q: {{ q }}"
stage answers = label(qs) { teacher = api  prompt = ask }
"""
MESSY = 'recipe "x" {\n  seed=1\n}\n'
TIDY = 'recipe "x" {\n  seed = 1\n}\n'


def invoke(*args: str, **kwargs):
    return runner.invoke(app, list(args), **kwargs)


def kdlang(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlang", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        **kwargs,
    )


# -- version ---------------------------------------------------------------------------------


def test_version_is_the_package_version():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == f"kdlang {declared}\n" == f"kdlang {__version__}\n"
    assert kdlang("--version").stdout == f"kdlang {declared}\n"


# -- check: the success line, no file, folders ------------------------------------------------


def test_check_prints_one_ok_line_for_a_clean_recipe():
    result = invoke("check", CLEAN)
    assert result.exit_code == 0
    # 2 models, 1 dataset, 1 prompt, 2 stages, 1 train, 1 eval, 1 export
    assert result.stdout == f"ok: {CLEAN} (9 declarations)\n"
    assert result.stderr == ""


def test_check_ok_line_counts_warnings(tmp_path, monkeypatch):
    monkeypatch.delenv("KD_HABITS_UNSET", raising=False)
    recipe = tmp_path / "w.kd"
    recipe.write_text(WARNED, encoding="utf-8")
    result = invoke("check", str(recipe))
    assert result.exit_code == 0
    assert result.stdout == f"ok: {recipe} (4 declarations, 1 warning)\n"
    assert "warning[KD0406]" in result.stderr
    assert result.stderr.rstrip().endswith("0 errors, 1 warning")


def test_check_of_stdin_names_it():
    source = Path(CLEAN).read_text(encoding="utf-8")
    result = invoke("check", "-", input=source)
    assert result.exit_code == 0
    assert result.stdout == "ok: <stdin> (9 declarations)\n"


def test_check_and_plan_without_a_file_use_the_quickstart(tmp_path):
    result = invoke("check")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    # 2 models, 2 datasets, 1 prompt, 3 stages, 2 trains, 4 evals, 1 export
    assert re.fullmatch(r"ok: (.+) \(15 declarations\)", line)
    shown = Path(line.split(" ", 1)[1].rsplit(" (", 1)[0])
    assert shown.read_text(encoding="utf-8") == QUICKSTART.read_text(encoding="utf-8")
    plan = invoke("plan", "--format", "json", "--cache", str(tmp_path / "cache"))
    assert plan.exit_code == 0, plan.output
    names = [n["name"] for n in json.loads(plan.stdout)["nodes"]]
    assert names[:5] == ["questions", "heldout", "answers", "correct", "soft"]
    assert {"kd", "sft", "kd_accuracy"} <= set(names)


def _tree(root: Path) -> dict[str, str]:
    """A folder of recipes: two clean at different depths, one faulty, and recipes in hidden
    folders and a hidden file (all faulty: they must not be read)."""
    clean = Path(CLEAN).read_text(encoding="utf-8")
    faulty = Path(FAULTY).read_text(encoding="utf-8")
    files = {
        "b.kd": clean,
        "a/z.kd": faulty,
        "a/c/d.kd": clean,
        ".hidden/x.kd": faulty,
        ".kdcache/y.kd": faulty,
        "a/.draft.kd": faulty,
        "notes.txt": "not a recipe",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return files


def test_check_of_a_folder_reports_each_recipe_in_sorted_order(tmp_path):
    _tree(tmp_path)
    result = invoke("check", str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"ok: {tmp_path / 'a/c/d.kd'} (9 declarations)",
        f"ok: {tmp_path / 'b.kd'} (9 declarations)",
        "checked 3 files: 2 ok, 1 with errors",
    ]
    assert f"--> {tmp_path / 'a/z.kd'}:9:8" in result.stderr
    assert ".hidden" not in result.output and ".kdcache" not in result.output
    assert ".draft" not in result.output
    found = json.loads(invoke("check", str(tmp_path), "--format", "json").stdout)
    assert [(d["file"], d["code"]) for d in found] == [(str(tmp_path / "a/z.kd"), "KD0106")]


def test_check_of_a_folder_without_recipes_is_a_usage_error(tmp_path):
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.kd").write_text(TIDY, encoding="utf-8")
    result = invoke("check", str(tmp_path))
    assert result.exit_code == 2
    assert f"no .kd files in {tmp_path}" in result.stderr


# -- fmt: folders, --diff --------------------------------------------------------------------


def test_fmt_check_diff_prints_the_unified_diff_and_changes_nothing(tmp_path):
    path = tmp_path / "m.kd"
    path.write_text(MESSY, encoding="utf-8")
    result = invoke("fmt", "--check", "--diff", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        f'--- {path}\n+++ {path}\n@@ -1,3 +1,3 @@\n recipe "x" {{\n-  seed=1\n+  seed = 1\n }}\n'
    )
    assert result.stderr == f"would reformat {path}\n"
    assert path.read_text(encoding="utf-8") == MESSY
    path.write_text(TIDY, encoding="utf-8")
    clean = invoke("fmt", "--diff", str(path))
    assert (clean.exit_code, clean.stdout, clean.stderr) == (0, "", "")


def test_fmt_diff_marks_a_missing_last_newline(tmp_path):
    path = tmp_path / "n.kd"
    path.write_text('recipe "x" {seed=1}', encoding="utf-8")
    result = invoke("fmt", "--diff", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        f"--- {path}\n+++ {path}\n@@ -1 +1,3 @@\n"
        '-recipe "x" {seed=1}\n\\ No newline at end of file\n'
        '+recipe "x" {\n+  seed = 1\n+}\n'
    )


def test_fmt_of_a_folder_formats_each_recipe_and_skips_hidden_ones(tmp_path):
    for name in ("one.kd", "sub/two.kd", ".hidden/three.kd", ".kdcache/four.kd"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(MESSY, encoding="utf-8")
    (tmp_path / "sub" / "tidy.kd").write_text(TIDY, encoding="utf-8")
    result = invoke("fmt", "-v", str(tmp_path))
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        f"reformatted {tmp_path / 'one.kd'}",
        f"unchanged {tmp_path / 'sub/tidy.kd'}",
        f"reformatted {tmp_path / 'sub/two.kd'}",
        "3 files: 2 reformatted, 1 unchanged",
    ]
    assert (tmp_path / "one.kd").read_text(encoding="utf-8") == TIDY
    assert (tmp_path / "sub/two.kd").read_text(encoding="utf-8") == TIDY
    assert (tmp_path / ".hidden/three.kd").read_text(encoding="utf-8") == MESSY
    assert (tmp_path / ".kdcache/four.kd").read_text(encoding="utf-8") == MESSY
    again = invoke("fmt", "--check", str(tmp_path))
    assert again.exit_code == 0
    assert again.stderr == "3 files: 0 would be reformatted, 3 unchanged\n"


def test_fmt_quiet_says_nothing_but_keeps_the_exit_code(tmp_path):
    path = tmp_path / "m.kd"
    path.write_text(MESSY, encoding="utf-8")
    result = invoke("fmt", "-q", "--check", str(path))
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", "")


# -- colour ----------------------------------------------------------------------------------


def test_color_always_and_never_for_diagnostics(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert ESC in invoke("check", FAULTY, "--color", "always").stderr
    assert ESC not in invoke("check", FAULTY, "--color", "never").stderr
    assert ESC not in invoke("check", FAULTY).stderr  # auto, and not a terminal
    monkeypatch.setenv("NO_COLOR", "1")
    assert ESC in invoke("check", FAULTY, "--color", "always").stderr  # the flag wins


def test_a_bad_color_is_a_usage_error():
    result = invoke("check", CLEAN, "--color", "sometimes")
    assert result.exit_code == 2
    assert "--color must be one of auto, always, never" in result.stderr


def test_color_of_tables_and_diffs(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    cache = str(tmp_path / "cache")
    assert ESC in invoke("plan", CLEAN, "--cache", cache, "--color", "always").stdout
    plain = invoke("plan", CLEAN, "--cache", cache, "--color", "never")
    assert plain.exit_code == 0 and "will run" in plain.stdout and ESC not in plain.stdout
    assert ESC not in invoke("plan", CLEAN, "--cache", cache).stdout
    assert ESC in invoke("cache", "ls", "--cache", cache, "--color", "always").stdout
    assert ESC not in invoke("cache", "ls", "--cache", cache, "--color", "never").stdout
    path = tmp_path / "m.kd"
    path.write_text(MESSY, encoding="utf-8")
    coloured = invoke("fmt", "--diff", str(path), "--color", "always").stdout
    assert "\x1b[31m-  seed=1\x1b[0m\n" in coloured and "\x1b[32m+  seed = 1\x1b[0m\n" in coloured


def _on_a_terminal(args: list[str], no_color: str | None) -> str:
    """``kdlang ARGS`` with stdout and stderr on a pseudo-terminal: what it wrote there."""
    env = {key: value for key, value in os.environ.items() if key != "NO_COLOR"}
    env["TERM"] = "xterm-256color"
    if no_color is not None:
        env["NO_COLOR"] = no_color
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "kdlang", *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            cwd=ROOT,
            env=env,
        )
    finally:
        os.close(follower)
    chunks = []
    while True:  # read while it writes, so that a full terminal buffer cannot block it
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the other side closed: everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=120) == 1
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize(
    ("no_color", "coloured"), [(None, True), ("1", False), ("yes", False), ("", True)]
)
def test_no_color_on_a_terminal(no_color, coloured):
    """On a terminal ``auto`` colours, unless NO_COLOR is set to anything but the empty
    string."""
    output = _on_a_terminal(["check", FAULTY], no_color)
    assert "error[KD0106]" in output
    assert (ESC in output) is coloured


# -- quiet and verbose -----------------------------------------------------------------------


def test_check_quiet_prints_errors_only(tmp_path, monkeypatch):
    monkeypatch.delenv("KD_HABITS_UNSET", raising=False)
    warned = tmp_path / "w.kd"
    warned.write_text(WARNED, encoding="utf-8")
    quiet = invoke("check", "-q", str(warned), CLEAN)
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    failing = invoke("check", "--quiet", FAULTY)
    assert failing.exit_code == 1 and failing.stdout == ""
    assert "error[KD0106]" in failing.stderr
    assert not failing.stderr.rstrip().endswith("1 error")


def test_check_verbose_lists_declarations_by_section():
    result = invoke("check", "-v", CLEAN)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"ok: {CLEAN} (9 declarations)",
        "  models: teacher, student",
        "  datasets: problems",
        "  prompts: solve",
        "  stages: rationales, clean",
        "  trains: distill",
        "  evals: accuracy",
        "  exports: distill",
    ]


def test_verbose_imports_are_listed():
    recipe = ROOT / "recipes" / "cot_distill.kd"
    lines = invoke("check", "--verbose", str(recipe)).stdout.splitlines()
    assert lines[-1] == f"  imports: {ROOT / 'recipes' / 'common' / 'math_prompts.kd'}"


@pytest.mark.parametrize("command", [["check", CLEAN], ["fmt", CLEAN], ["run", CLEAN]])
def test_quiet_and_verbose_together_are_a_usage_error(command):
    result = invoke(*command, "-q", "-v")
    assert result.exit_code == 2
    assert "--quiet and --verbose cannot be combined" in result.stderr


# -- help and docs ---------------------------------------------------------------------------


def _commands() -> dict[str, object]:
    """Every command of the app by its words (``"cache gc"``), the app itself as ``""``."""
    root = typer.main.get_command(app)
    found: dict[str, object] = {"": root}
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        found[name] = command
        for sub, inner in getattr(command, "commands", {}).items():
            found[f"{name} {sub}"] = inner
    return found


@pytest.mark.parametrize("words", list(_commands()))
def test_help_names_no_python_types(words):
    result = invoke(*words.split(), "--help", env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for python in ("[str]", "list[", "<str>", "<bool>", "<int>", "<float>"):
        assert python not in result.output, (words, python)


def _documented_flags() -> dict[str, set[str]]:
    """The flags docs/cli.md names in the table of each command's section."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = re.split(r"^## `kdlang ?([a-z ]*)`\n", text, flags=re.MULTILINE)
    flags: dict[str, set[str]] = {}
    for words, body in zip(sections[1::2], sections[2::2], strict=True):
        rows = [line.split("|")[1] for line in body.splitlines() if line.startswith("| `-")]
        flags[words] = {flag for row in rows for flag in re.findall(r"`(--?[a-z][a-z-]*)", row)}
    return flags


def test_every_command_has_a_section_in_the_docs():
    assert set(_documented_flags()) == set(_commands())


@pytest.mark.parametrize("words", list(_commands()))
def test_every_flag_in_the_docs_exists_and_every_flag_is_documented(words):
    command = _commands()[words]
    flags = {opt for param in command.params for opt in param.opts if opt.startswith("-")}  # type: ignore[attr-defined]
    documented = _documented_flags()[words]
    assert documented - {"--help"} == flags, words
    help_text = invoke(*words.split(), "--help", env={"COLUMNS": "200"}).output
    for flag in documented:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), (words, flag)


def test_every_flag_of_the_examples_in_the_docs_exists():
    """Each ``kdlang ...`` command line of docs/cli.md's examples uses only flags its command
    has, and every long flag the page names anywhere is a flag of some command."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    commands = _commands()
    opts = {
        words: {opt for param in c.params for opt in param.opts} | {"--help"}  # type: ignore[attr-defined]
        for words, c in commands.items()
    }
    checked = 0
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.splitlines():
            for part in line.split("|"):
                tokens = part.split("#")[0].split()
                if not tokens or tokens[0] != "kdlang":
                    continue
                words = tokens[1] if len(tokens) > 1 and not tokens[1].startswith("-") else ""
                if words == "cache":
                    words = f"cache {tokens[2]}"
                used = {t.split("=")[0] for t in tokens[1:] if t.startswith("-") and t != "-"}
                assert used <= opts[words], (line, used - opts[words])
                checked += 1
    assert checked >= 15
    every = set().union(*opts.values())
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))
    assert named <= every, named - every
