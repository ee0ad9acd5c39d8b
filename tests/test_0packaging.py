"""The package layout DESIGN.md fixes: runtime/ and grammar/ ship inside kdlang, and the
language side never pulls the GPU stack in."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "datasets", "triton")


def test_every_python_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for top, name in (
        ("kdlang", "kdlang"),
        ("runtime", "kdlang.runtime"),
        ("grammar", "kdlang.grammar"),
        ("recipes", "kdlang.recipes"),
    ):
        assert mapping[name] == top
        for init in (ROOT / top).glob("**/__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed


def test_no_top_level_runtime_module_is_importable_from_the_package():
    import kdlang.runtime

    assert Path(kdlang.runtime.__file__).parent == ROOT / "runtime"


def test_language_side_imports_no_gpu_stack():
    code = (
        "import sys, kdlang.cli, kdlang.syntax, kdlang.ir, kdlang.check, kdlang.plan\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
