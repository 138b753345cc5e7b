"""What users import and run keeps working whatever the package's inside looks like: every name of
``sdsearch.__all__``, every import path the README documents, and an instant ``import sdsearch``
and ``sdsearch --help``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sdsearch

README = Path(__file__).resolve().parents[1] / "README.md"
HEAVY = ("torch", "ray", "optuna", "onnx", "onnxruntime", "matplotlib")


def _import_every_module() -> None:
    for info in pkgutil.walk_packages(sdsearch.__path__, "sdsearch."):
        if info.name != "sdsearch.__main__":
            importlib.import_module(info.name)


@pytest.mark.parametrize("name", sdsearch.__all__)
def test_every_public_name_resolves(name: str) -> None:
    """Also once every module is imported: a subpackage named like a public function (a ``train/``
    folder beside ``sdsearch.train()``) would replace the function on the package."""
    for _ in range(2):
        value = getattr(sdsearch, name)
        assert value is not None
        if name != "__version__":
            assert callable(value) and not inspect.ismodule(value), f"sdsearch.{name} is {value!r}"
        _import_every_module()


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sdsearch.nope  # noqa: B018


def test_the_import_paths_the_readme_documents_resolve() -> None:
    """Each ``sdsearch.x.y.name`` the README names is importable (found in the README itself, so a
    documented path that moves fails here)."""
    paths = set(re.findall(r"`(sdsearch(?:\.\w+)+)(?:\([^`]*\))?`", README.read_text(encoding="utf-8")))
    assert "sdsearch.nn.backbones.register_backbone" in paths
    for path in sorted(paths - {"sdsearch.backbones"}):  # an entry-point group, not a module
        module, _, attr = path.rpartition(".")
        assert hasattr(__import__(module, fromlist=[attr]), attr), path


def test_the_entry_point_group_is_the_documented_one() -> None:
    from sdsearch.core.registry import BACKBONES

    assert "`sdsearch.backbones`" in README.read_text(encoding="utf-8")
    assert BACKBONES.entry_point_group == "sdsearch.backbones"


@pytest.mark.parametrize("argv", [["-c", "import sdsearch"], ["-m", "sdsearch", "--help"]])
def test_import_and_help_load_no_heavy_library(argv: list[str]) -> None:
    """``import sdsearch`` and ``sdsearch --help`` stay instant: nothing heavy is imported."""
    if argv[0] == "-c":
        probe = "import sys\nimport sdsearch\n"
    else:  # the console script's own path: run the package as a module, --help exits
        probe = f"import runpy, sys\nsys.argv = {['sdsearch', *argv[2:]]!r}\n"
        probe += "try:\n    runpy.run_module('sdsearch', run_name='__main__')\nexcept SystemExit:\n    pass\n"
    probe += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
