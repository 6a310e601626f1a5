"""Every Lua script's header is held against the Python wrapper that calls it."""

from __future__ import annotations

import re

import pytest

from streamjobs.codes import Code
from streamjobs.keys import TypeKeys
from streamjobs.scripts import SPECS, lua_dir, source

HEADER_LINE = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.\.)?\] (.+)$")


def parse_header(name: str) -> tuple[list[str], list[str], list[str], list[str]]:
    keys: list[str] = []
    argv: list[str] = []
    tail: list[str] = []
    codes: list[str] = []
    for line in (lua_dir() / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        m = HEADER_LINE.match(line)
        if m:
            kind, index, repeated, names = m.groups()
            if repeated:
                tail = [n.strip() for n in names.split("(")[0].split(",") if n.strip() not in ("", "...")]
                continue
            target = keys if kind == "KEYS" else argv
            assert int(index) == len(target) + 1, f"{name}: {kind}[{index}] out of order"
            target.append(names.split()[0])
        elif line.startswith("-- codes:"):
            codes = line.split(":", 1)[1].split()
    return keys, argv, tail, codes


def test_every_lua_file_has_a_spec() -> None:
    files = {p.stem for p in lua_dir().glob("*.lua")}
    assert files == set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_header_matches_wrapper(name: str) -> None:
    keys, argv, tail, codes = parse_header(name)
    spec = SPECS[name]
    assert tuple(keys) == spec.keys
    assert tuple(argv) == spec.argv
    assert tuple(tail) == spec.tail
    assert codes, f"{name}: header lists no codes"
    assert {Code[c] for c in codes} == set(spec.codes)
    for key in spec.keys:  # every KEYS name is a TypeKeys attribute
        assert isinstance(getattr(TypeKeys("sj", "x"), key), str)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_codes_used_in_body_are_declared(name: str) -> None:
    _, _, _, codes = parse_header(name)
    body = (lua_dir() / f"{name}.lua").read_text()
    body = "\n".join(line for line in body.splitlines() if not line.startswith("--"))
    used = {c.name for c in Code if re.search(rf"\b{c.name}\b", body)}
    assert used <= set(codes), f"{name} returns undeclared codes {used - set(codes)}"


def test_lua_codes_match_enum() -> None:
    text = (lua_dir() / "includes" / "codes.lua").read_text()
    found = dict(re.findall(r"local (\w+) = (-?\d+)", text))
    assert {k: int(v) for k, v in found.items()} == {c.name: c.value for c in Code}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_includes_are_inlined(name: str) -> None:
    assert "--@include" not in source(name)
