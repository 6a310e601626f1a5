"""The built wheel carries every Lua script (the engine cannot run without them) and the
dashboard's files."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from streamjobs.scripts import SPECS
from tests.helpers import ROOT


@pytest.mark.slow
def test_wheel_ships_every_lua_script(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )
    [wheel] = tmp_path.glob("streamjobs-*.whl")
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
def test_installed_wheel_imports_as_streamjobs(tmp_path: Path) -> None:
    """The wheel installs the import package `streamjobs` (not `engine`), Lua included."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=120,
    )
    [wheel] = tmp_path.glob("streamjobs-*.whl")
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
