"""The built-in presets ship in the wheel, and no package is left out of it."""

from __future__ import annotations

import sys
from pathlib import Path

from daw_bridge.presets import library

ROOT = Path(__file__).resolve().parents[2]

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_every_package_is_listed_for_the_wheel():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "daw_bridge").rglob("__init__.py")
    }
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert setuptools["package-dir"]["daw_bridge.presets.builtin"] == "presets"
    assert setuptools["package-data"]["daw_bridge.presets.builtin"] == ["*.toml"]


def test_the_built_in_folder_is_the_repository_presets_folder():
    assert library.builtin_dir() == ROOT / "presets"
    assert len(list((ROOT / "presets").glob("*.toml"))) >= 8
