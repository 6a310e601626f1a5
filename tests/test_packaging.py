"""The built wheel carries every Lua script (the engine cannot run without them) and the
dashboard's files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streamjobs.scripts import SPECS
from tests.helpers import ROOT

# setuptools builds in the source tree (build/, *.egg-info): two builds at once there race
# (one removes what the other writes). The wheel is built once, from a copy of the sources.
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", ".streamjobs",
                                      "__pycache__", "node_modules", ".pytest_cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES, symlinks=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(work), str(source)],
        capture_output=True, text=True, timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [path] = work.glob("streamjobs-*.whl")
    return path


@pytest.mark.slow
@pytest.mark.xdist_group("wheel")
def test_wheel_ships_every_lua_script(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in SPECS:
        assert f"streamjobs/lua/{script}.lua" in names
    for include in (ROOT / "lua" / "includes").glob("*.lua"):
        assert f"streamjobs/lua/includes/{include.name}" in names
    # The dashboard's page, modules and styles: served from the package (offline).
    ui = [p for p in (ROOT / "engine" / "ui").iterdir() if p.is_file() and p.suffix != ".py"]
    assert len(ui) >= 5
    for asset in ui:
        assert f"streamjobs/ui/{asset.name}" in names


@pytest.mark.slow
@pytest.mark.xdist_group("wheel")
def test_installed_wheel_imports_as_streamjobs(wheel: Path, tmp_path: Path) -> None:
    """The wheel installs the import package `streamjobs` (not `engine`), Lua included."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert not (site / "engine").exists()
    probe = ("import streamjobs, streamjobs.scripts as s; "
             "print(streamjobs.__file__); print(s.source('ack')[:6])")
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(site)},
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.splitlines()
    assert out[0].startswith(str(site / "streamjobs"))
    assert out[1] == "-- ack"


def test_nothing_outside_the_package_imports_engine() -> None:
    import re

    pattern = re.compile(r"^\s*(from|import) engine\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for folder in ("engine", "tests", "handlers", "bench")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    offenders += [str(p.relative_to(ROOT)) for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
                  if pattern.search(p.read_text())]
    assert offenders == []
