"""Every Lua script's header is held against the Python wrapper that calls it, and every
state, stats name and dead reason the scripts write against streamjobs.contract."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import pytest

from streamjobs.codes import Code
from streamjobs.contract import (
    EVENTS_MAXLEN,
    EVENTS_OFF,
    FETCH,
    GONE,
    HISTORY_LENGTH,
    MAX_FIELDS,
    MAX_JOB_FIELDS,
    NEW,
    RUNNING_RECORDED_AS,
    TRANSITIONS,
    Event,
    Failure,
    JobState,
    Move,
    Stat,
)
from streamjobs.keys import TypeKeys
from streamjobs.scripts import (
    CONVERT,
    FLAT_FIELDS,
    SPECS,
    AckItem,
    Claimed,
    EnqueueItem,
    EnqueueResult,
    FailArgs,
    FailItem,
    FailResult,
    ReleaseItem,
    Reply,
    ReplyShapeError,
    StartedItem,
    StopAction,
    StopItem,
    StopResult,
    build_argv,
    lua_dir,
    parse_reply,
    source,
)

HEADER_LINE = re.compile(r"^-- (KEYS|ARGV)\[(\d+)(\.\.\.)?\] (.+)$")
INCLUDE = re.compile(r"^--@include (\w+)\s*$", re.MULTILINE)
LOCAL_CONST = re.compile(r"^local ([A-Z_]+) = (.+)$", re.MULTILINE)
FUNCTION = re.compile(r"^local function (\w+)", re.MULTILINE)
STRING = re.compile(r"'([^']*)'")


@dataclass
class Header:
    keys: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    returns: Reply | None = None


def _moves(text: str) -> list[Move]:
    if text.strip() == "none":
        return []
    sources, _, targets = text.partition("->")
    return [Move(tuple(s.strip() for s in sources.split(",")),
                 tuple(t.strip() for t in targets.split(",")))]


def _returns(text: str) -> Reply:
    """``{a, b}`` is the head; ``{c, d} per x`` the repeated group."""
    head: tuple[str, ...] = ()
    each: tuple[str, ...] = ()
    for names, per in re.findall(r"\{([^}]*)\}( per \w+)?", text):
        group = tuple(n.strip() for n in names.split(","))
        if per:
            each = group
        else:
            head = group
    return Reply(head, each)


def _arg_line(h: Header, name: str, m: re.Match[str]) -> None:
    kind, index, repeated, names = m.groups()
    if repeated:
        h.tail = [n.strip() for n in names.split("(")[0].split(",")
                  if n.strip() not in ("", "...")]
        return
    target = h.keys if kind == "KEYS" else h.argv
    assert int(index) == len(target) + 1, f"{name}: {kind}[{index}] out of order"
    target.append(names.split()[0])


def parse_header(name: str) -> Header:
    h = Header()
    for line in (lua_dir() / f"{name}.lua").read_text().splitlines():
        if not line.startswith("--"):
            break
        m = HEADER_LINE.match(line)
        if m:
            _arg_line(h, name, m)
        elif line.startswith("-- codes:"):
            h.codes = line.split(":", 1)[1].split()
        elif line.startswith("-- moves:"):
            h.moves += _moves(line.split(":", 1)[1])
        elif line.startswith("-- returns:"):
            h.returns = _returns(line.split(":", 1)[1])
    return h


def body(name: str, folder: str = "") -> str:
    """A Lua file without its comment lines."""
    text = (lua_dir() / folder / f"{name}.lua").read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def include_names() -> list[str]:
    return sorted(p.stem for p in (lua_dir() / "includes").glob("*.lua"))


@cache
def defined_by(include: str) -> frozenset[str]:
    """Names (functions and constants) an include defines."""
    text = body(include, "includes")
    return frozenset(FUNCTION.findall(text)) | {n for n, _ in LOCAL_CONST.findall(text)}


def constants(include: str) -> dict[str, str]:
    """``local NAME = 'text'`` (or ``= OTHER``) of an include, resolved to text."""
    found = dict(LOCAL_CONST.findall(body(include, "includes")))
    out = {}
    for k, v in found.items():
        out[k] = v.strip("'") if v.startswith("'") else v
    return {k: out.get(v, v) for k, v in out.items()}


def test_every_lua_file_has_a_spec() -> None:
    files = {p.stem for p in lua_dir().glob("*.lua")}
    assert files == set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_header_matches_wrapper(name: str) -> None:
    h = parse_header(name)
    spec = SPECS[name]
    assert tuple(h.keys) == spec.keys
    assert tuple(h.argv) == spec.argv, f"{name}: ARGV order differs from SPECS"
    assert tuple(h.tail) == spec.tail, f"{name}: repeated ARGV differ from SPECS"
    assert h.codes, f"{name}: header lists no codes"
    assert {Code[c] for c in h.codes} == set(spec.codes)
    for key in spec.keys:  # every KEYS name is a TypeKeys attribute
        assert isinstance(getattr(TypeKeys("sj", "x"), key), str)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_reply_shape_matches_header(name: str) -> None:
    h = parse_header(name)
    assert h.returns is not None, f"{name}: header has no returns: line"
    assert h.returns == SPECS[name].reply, f"{name}: reply shape differs from SPECS"
    assert set(h.returns.head + h.returns.each) <= set(CONVERT)


@pytest.mark.parametrize(("name", "type_"), [
    ("enqueue", EnqueueResult), ("fail", FailResult), ("reclaim", Claimed),
    ("stop", StopResult),
])
def test_result_types_follow_the_reply_shape(name: str, type_: type) -> None:
    assert type_._fields == SPECS[name].reply.each  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "item"), [
    ("ack", AckItem("1-1", "j", b"")), ("release", ReleaseItem("1-1", "j")),
    ("fail", FailItem("1-1", "j", FailArgs("e"))), ("started", StartedItem("j", 1)),
    ("enqueue", EnqueueItem(("payload", "1"))),
    ("stop", StopItem("1-1", "j", StopAction.START)),
])
def test_argv_items_carry_every_tail_name(name: str, item: object) -> None:
    names = [n for n in SPECS[name].tail if n not in FLAT_FIELDS]
    for n in names:
        assert hasattr(item, n), f"{type(item).__name__} has no {n} for {name}'s ARGV"
    if name in ("ack", "release", "started", "stop"):  # their NamedTuple items follow the header's order
        assert item._fields == SPECS[name].tail  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_moves_match_transitions(name: str) -> None:
    assert parse_header(name).moves == list(TRANSITIONS[name]), (
        f"{name}: moves: lines differ from contract.TRANSITIONS"
    )


def test_transitions_name_every_script_and_only_states() -> None:
    assert set(TRANSITIONS) == set(SPECS) | {FETCH}
    states = {s.value for s in JobState}
    for name, moves in TRANSITIONS.items():
        for m in moves:
            assert set(m.sources) <= states | {NEW}, name
            assert set(m.targets) <= states | {GONE}, name


@pytest.mark.parametrize("name", sorted(SPECS))
def test_codes_used_in_body_are_declared(name: str) -> None:
    codes = parse_header(name).codes
    used = {c.name for c in Code if re.search(rf"\b{c.name}\b", body(name))}
    assert used <= set(codes), f"{name} returns undeclared codes {used - set(codes)}"


def test_lua_codes_match_enum() -> None:
    found = {k: int(v) for k, v in constants("codes").items()}
    assert found == {c.name: c.value for c in Code}


def test_lua_states_match_enum() -> None:
    found = constants("states")
    assert found.pop("RUNNING_RECORDED_AS") == RUNNING_RECORDED_AS.value
    assert found == {s.name: s.value for s in JobState}


def test_lua_field_limits_match_contract() -> None:
    assert constants("max_fields") == {"MAX_FIELDS": str(MAX_FIELDS),
                                       "MAX_JOB_FIELDS": str(MAX_JOB_FIELDS)}


def test_lua_failures_match_enum() -> None:
    assert constants("failures") == {f.name: f.value for f in Failure}


def _lua_files() -> list[tuple[str, str]]:
    return [(n, "") for n in sorted(SPECS)] + [(n, "includes") for n in include_names()]


#: Where a script writes or tests a job's state: HSET ... 'state', X / state ~= X.
STATE_USE = re.compile(r"'HSET'[^\n]*?'state', ([^,)\s]+)|(?:state|rec\[1\]) [~=]= ([^\s)]+)")


@pytest.mark.parametrize(("name", "folder"), _lua_files())
def test_state_uses_are_state_constants(name: str, folder: str) -> None:
    states = constants("states")
    for written, compared in STATE_USE.findall(body(name, folder)):
        value = written or compared
        assert value in states, f"{name}: state {value} is not a constant of states.lua"


@pytest.mark.parametrize(("name", "folder"), _lua_files())
def test_stats_names_are_contract_stats(name: str, folder: str) -> None:
    for stat in re.findall(r"'HINCRBY', stats, '([^']*)'", body(name, folder)):
        assert stat in {s.value for s in Stat}, f"{name}: unknown stats name {stat!r}"


@pytest.mark.parametrize(("name", "folder"), _lua_files())
def test_no_state_or_reason_literals(name: str, folder: str) -> None:
    """States and reasons are written through the constants, never as literals (stats
    and event names aside: 'dead' is a counter and an event too)."""
    if folder and name in ("states", "failures"):
        return
    text = re.sub(r"'HINCRBY', stats, '[^']*'", "", body(name, folder))
    text = EMIT.sub("", text)  # event names are contract.Event (checked below)
    words = {s.value for s in JobState} | {f.value for f in Failure}
    literals = set(STRING.findall(text)) & words
    assert not literals, f"{name}: use the states/failures constants for {literals}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_dead_reasons_are_failures(name: str) -> None:
    reasons = constants("failures")
    text = body(name)
    for call in re.findall(r"dead_letter\(([^)]*)\)", text):
        reason = [a.strip() for a in call.split(",")][5]
        if reason in reasons:
            continue
        (assigned,) = re.findall(rf"local {reason} = (.+)", text)
        used = set(re.findall(r"\b[A-Z_]{2,}\b", assigned))
        assert used and used <= set(reasons), f"{name}: reason {assigned} is not a Failure"


def _uses(text: str, include: str) -> bool:
    return any(re.search(rf"\b{n}\b", text) for n in defined_by(include))


@pytest.mark.parametrize(("name", "folder"), _lua_files())
def test_includes_named_are_the_includes_used(name: str, folder: str) -> None:
    text = (lua_dir() / folder / f"{name}.lua").read_text()
    named = set(INCLUDE.findall(text))
    own = body(name, folder)
    used = {i for i in include_names() if i != name and _uses(own, i)}
    assert named == used, f"{name}: names {sorted(named)}, uses {sorted(used)}"


def _raw(name: str, folder: str = "") -> str:
    return (lua_dir() / folder / f"{name}.lua").read_text()


def closure(name: str, folder: str = "") -> set[str]:
    out: set[str] = set()
    for inc in INCLUDE.findall(_raw(name, folder)):
        out |= {inc} | closure(inc, "includes")
    return out


def test_every_include_is_used() -> None:
    assert set(include_names()) == set().union(*(closure(n) for n in SPECS))


@pytest.mark.parametrize("include", include_names())
def test_a_helper_is_inlined_only_into_its_users(include: str) -> None:
    """So changing a helper changes only the SHAs of the scripts that use it."""
    text = INCLUDE.sub("", _raw(include, "includes")).strip()
    for n in SPECS:
        assert (text in source(n)) == (include in closure(n)), f"{n} and {include}"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_includes_are_inlined_once(name: str) -> None:
    src = source(name)
    assert "--@include" not in src
    for fn in FUNCTION.findall(src):
        assert src.count(f"local function {fn}(") == 1, f"{name}: {fn} inlined twice"


def test_architecture_doc_shows_the_transitions_table() -> None:
    doc = (lua_dir().parent / "docs" / "architecture.md").read_text()
    doc = doc.split("<!-- transitions:")[1].split("<!-- /transitions -->")[0]
    rows = set(re.findall(r"^\| `(\w+)` \| (.+?) \|$", doc, re.MULTILINE))
    want = {(name, "; ".join(str(m) for m in moves) or "none")
            for name, moves in TRANSITIONS.items()}
    assert rows == want
    arrows = set(re.findall(r"^\s+(\w+) --> (\w+): (\w+)$", doc, re.MULTILINE))
    assert arrows == {(s, t, name) for name, moves in TRANSITIONS.items() for m in moves
                      for s in m.sources for t in m.targets}


def test_a_reply_of_another_shape_is_refused() -> None:
    with pytest.raises(ReplyShapeError):
        parse_reply("fail", [0, b"waiting", 1])  # 3 values: the shape has 4 per job
    with pytest.raises(ReplyShapeError):
        parse_reply("promote", [0, 1, 2])
    assert parse_reply("promote", [0, 1, -1, 0, 2]) == (
        {"code": Code.OK, "moved": 1, "next_due_in_ms": -1, "orphans": 0, "expired_count": 2},
        [])


def test_argv_is_built_by_name_in_the_header_order() -> None:
    assert build_argv("prune_consumers", min_idle_ms=5, group="g") == ["g", 5]
    with pytest.raises(TypeError):
        build_argv("prune_consumers", group="g")
    items = [AckItem("1-1", "a", b"r", 2, 5), AckItem("1-2", "b")]
    assert build_argv("ack", items, result_ttl_ms=9, consumer="c", group="g") == [
        "g", "c", 9, "1-1", "a", b"r", 2, 5, -1, 0, "1-2", "b", b"", 1, 0, -1, 0]
    assert build_argv("enqueue", [EnqueueItem(("payload", "1"), "j", 5)]) == [
        "j", "", 5, 0, 1, "payload", "1"]


EMIT = re.compile(r"emit\([^,]+, '([^']*)'")


def test_events_emitted_are_the_contracts() -> None:
    """Every ``emit(events, 'name', ...)`` names a contract.Event, every Event is emitted
    by some script, and the cap is the contract's."""
    emitted = {n for name in SPECS for n in EMIT.findall(body(name))}
    assert emitted == {e.value for e in Event}
    assert constants("events_maxlen") == {"EVENTS_MAXLEN": str(EVENTS_MAXLEN)}
    assert constants("history_length") == {"HISTORY_LENGTH": str(HISTORY_LENGTH)}
    assert EVENTS_OFF  # the switch is a string in the key: emit.lua tests its TYPE
    for name in SPECS:
        if EMIT.search(body(name)):
            assert "events" in SPECS[name].keys, f"{name} emits without the events key"
