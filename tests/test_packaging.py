"""The built wheel carries every Lua script (the engine cannot run without them)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.scripts import SPECS
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
        assert f"engine/lua/{script}.lua" in names
    for include in (ROOT / "lua" / "includes").glob("*.lua"):
        assert f"engine/lua/includes/{include.name}" in names
