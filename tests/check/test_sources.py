"""What a recipe may name as a file: imports are regular `.kd` files under the size cap, read
only after a look at what they are (a FIFO never blocks, /dev/zero is never read), recipes are
UTF-8 (or a diagnostic at the first bad byte), and a path no system could hold is diagnosed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.check.support import found

HEADER = 'recipe "r" {\n  seed = 1\n}\n'


def check(root: Path, text: str | bytes) -> list:
    from kdlang.check import check_files

    path = root / "main.kd"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    diagnostics, _ = check_files([str(path)])
    return diagnostics


def codes(diagnostics) -> list[tuple[str, int, int]]:
    return found(diagnostics)


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_an_import_of_a_fifo_a_device_or_a_folder_is_refused_without_reading(tmp_path):
    os.mkfifo(tmp_path / "pipe.kd")  # opening it would block until a writer came
    (tmp_path / "folder.kd").mkdir()
    for target, why in [
        ("pipe.kd", "it is not a regular file (a device, a pipe or a socket)"),
        ("/dev/zero", None),
        ("folder.kd", "it is a folder, not a file"),
    ]:
        text = f'import "{target}"\n' + HEADER
        diagnostics = check(tmp_path, text)
        if target == "/dev/zero":  # not a `.kd` file: refused by name before any look
            assert codes(diagnostics) == [("KD0410", 1, 8)]
            continue
        (d,) = diagnostics
        assert (d.code, d.span.line, d.span.column) == ("KD0407", 1, 8)
        assert d.message == f"cannot import {target}: {why}"


def test_an_import_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    with (tmp_path / "huge.kd").open("wb") as out:
        out.truncate(5 * 2**20)  # sparse: 5 MiB of zeros that are never read
    (d,) = check(tmp_path, 'import "huge.kd"\n' + HEADER)
    assert (d.code, d.span.line, d.span.column) == ("KD0408", 1, 8)
    assert (
        d.message
        == "cannot import huge.kd: the file has 5242880 bytes, more than the limit of 4194304"
    )


def test_an_import_must_be_a_kd_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x\n")
    (d,) = check(tmp_path, 'import "notes.txt"\n' + HEADER)
    assert (d.code, d.span.line, d.span.column) == ("KD0410", 1, 8)


def test_paths_with_a_component_too_long_for_the_system(tmp_path):
    long = "a" * 300
    assert codes(check(tmp_path, f'import "{long}.kd"\n' + HEADER)) == [("KD0409", 1, 8)]
    data = HEADER + f'dataset rows = jsonl("{long}.jsonl")\n'
    assert codes(check(tmp_path, data)) == [("KD0409", 4, 22)]
    model = HEADER + f'model m = hf("org/{long}")\n'
    assert codes(check(tmp_path, model)) == [("KD0409", 4, 14)]


def test_a_recipe_that_is_not_utf8_is_a_diagnostic_at_the_first_bad_byte(tmp_path):
    text = HEADER.encode() + b'# caf\xe9 au lait\nmodel m = hf("x")\n'
    (d,) = check(tmp_path, text)
    assert (d.code, d.span.line, d.span.column) == ("KD0411", 4, 6)
    assert d.message == "the file is not valid UTF-8 text: byte 0xe9 at 4:6"
    # the command line shows it with the line, the bad byte replaced, and exits 1, no traceback
    result = subprocess.run(
        [sys.executable, "-m", "kdlang", "check", str(tmp_path / "main.kd")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "error[KD0411]" in result.stderr and "4 | # caf\ufffd au lait" in result.stderr
    assert "Traceback" not in result.stderr
