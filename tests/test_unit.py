"""Pure logic: names, wire format decoding, settings, policy. No server."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamjobs.config import Settings
from streamjobs.contract import entry_problem, fields_of, job_id_of
from streamjobs.errors import ConfigError, DecodeError, InvalidTypeName
from streamjobs.job import Job, check_job_id, encode_fields
from streamjobs.keys import TypeKeys, check_type_name
from streamjobs.registry import Registry
from streamjobs.retry import Policy


@pytest.mark.parametrize("name", ["email", "a.b-c_d", "X" * 64, "0"])
def test_valid_type_names(name: str) -> None:
    assert check_type_name(name) == name


@pytest.mark.parametrize("name", ["", "a b", "a{b}", "x" * 65, "é", "a:b", "a/b"])
def test_invalid_type_names(name: str) -> None:
    with pytest.raises(InvalidTypeName, match="invalid job type"):
        check_type_name(name)


def test_keys_share_one_hash_tag() -> None:
    tk = TypeKeys("sj", "email")
    keys = [tk.stream, tk.delayed, tk.dead, tk.stats, tk.done, tk.job("1")]
    assert all(k.startswith("sj:{email}:") for k in keys)


def test_job_round_trips_through_fields() -> None:
    job = Job(type="t", id="order-7", payload={"a": [1, 2]}, max_attempts=4, timeout=2.5,
              headers={"traceparent": "00-1"})
    flat = job.to_fields()
    fields = {str(k).encode(): v if isinstance(v, bytes) else str(v).encode()
              for k, v in zip(flat[::2], flat[1::2], strict=True)}
    back = Job.from_fields("t", "1-0", fields)
    assert (back.id, back.payload, back.max_attempts, back.timeout, dict(back.headers)) == (
        "order-7", {"a": [1, 2]}, 4, 2.5, {"traceparent": "00-1"})
    assert back.attempt == 1 and back.enqueued_at == 1


def test_job_id_defaults_to_entry_id_and_attempt_counts_from_field() -> None:
    job = Job.from_fields("t", "1700000000000-3", {b"payload": b"1", b"attempts": b"2"})
    assert job.id == "1700000000000-3" and job.attempt == 3 and job.enqueued_at == 1700000000000


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "no payload"),
        ({b"payload": b"{"}, "not valid JSON"),
        ({b"payload": b"1", b"max_attempts": b"0"}, "max_attempts b'0' is not an integer >= 1"),
        ({b"payload": b"1", b"max_attempts": b"x"}, "not an integer"),
        ({b"payload": b"1", b"attempts": b"1.5"}, "attempts b'1.5' is not an integer"),
        ({b"payload": b"1", b"attempts": b"1e99"}, "not an integer"),
        ({b"payload": b"1", b"attempts": b"99999999999999999999"}, "at most 15 digits"),
        ({b"payload": b"1", b"attempts": b" 1"}, "not an integer"),
        ({b"payload": b"1", b"attempts": "\u0661".encode()}, "not an integer"),
        ({b"payload": b"1", b"enqueued_at": b"9" * 400}, "enqueued_at"),
        ({b"payload": b"1", b"timeout": b"nan"}, "positive decimal"),
        ({b"payload": b"1", b"timeout": b"inf"}, "positive decimal"),
        ({b"payload": b"1", b"timeout": b"1e-3"}, "positive decimal"),
        ({b"payload": b"1", b"timeout": b"0.0"}, "positive decimal"),
        ({b"payload": b"1", b"enqueued_at": b"-5"}, "enqueued_at b'-5' is not an integer"),
        ({b"payload": b"1", b"id": b"a b"}, "printable ASCII"),
        ({b"payload": b"1", b"id": b"x" * 129}, "printable ASCII"),
        ({b"payload": b"1", b"id": b"\xff"}, "printable ASCII"),
        ({b"payload": b"1", **{str(i).encode(): b"" for i in range(256)}}, "257 fields"),
        (fields_of([b"payload", b"1", b"id", b"a", b"id", b"b"]), "'id' appears more than"),
        ({b"payload": b'"' + b"x" * 100 + b'"'}, "over the limit of 50"),
    ],
)
def test_malformed_fields_raise_decode_error(fields: dict[bytes, bytes], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        Job.from_fields("t", "1-0", fields, max_payload_bytes=50)


def test_a_valid_entry_has_no_problem_and_its_numbers_decode() -> None:
    fields = {b"payload": b"1", b"attempts": b"0", b"max_attempts": b"999999999999999",
              b"timeout": b"0.5", b"enqueued_at": b"17", b"id": b"~!x"}
    job = Job.from_fields("t", "1-0", fields)
    assert entry_problem(fields) is None
    assert (job.attempt, job.max_attempts, job.timeout, job.enqueued_at, job.id) == (
        1, 999999999999999, 0.5, 17, "~!x")


def test_an_id_that_breaks_the_rule_is_no_id() -> None:
    assert job_id_of("1-0", {b"id": b"a b"}) == "1-0"
    assert job_id_of("1-0", {b"id": b""}) == "1-0"
    assert job_id_of("1-0", fields_of([b"id", b"a", b"id", b"a"])) == "1-0"
    assert job_id_of("1-0", fields_of([b"id", b"a", b"x", b"1", b"x", b"2"])) == "a"


def test_encode_rejects_reserved_headers_and_bad_numbers() -> None:
    with pytest.raises(ValueError, match="reserved"):
        encode_fields(1, headers={"payload": "x"})
    with pytest.raises(ValueError, match="max_attempts"):
        encode_fields(1, max_attempts=0)
    with pytest.raises(ValueError, match="max_attempts"):
        encode_fields(1, max_attempts=10**15)
    for bad in (0, -1, float("inf"), float("nan"), 1e-10, 1e9):
        with pytest.raises(ValueError, match="timeout"):
            encode_fields(1, timeout=bad)
    assert encode_fields(1, timeout=1e-5)[-1] == "0.00001"
    with pytest.raises(ValueError, match="at most 253 fields"):
        encode_fields(1, headers={f"h{i}": "" for i in range(253)})
    assert len(encode_fields(1, job_id="j", headers={f"h{i}": "" for i in range(251)})) == 506
    with pytest.raises(DecodeError, match="JSON"):
        encode_fields({1, 2})


@pytest.mark.parametrize("job_id", ["", "a b", "x" * 129, "é"])
def test_invalid_job_ids(job_id: str) -> None:
    with pytest.raises(ValueError, match="invalid job id"):
        check_job_id(job_id)


def test_settings_from_env_reads_and_converts() -> None:
    s = Settings.from_env({"STREAMJOBS_REDIS_URL": "redis://x:1/0", "STREAMJOBS_API_KEYS": "a, b",
                           "STREAMJOBS_DATA_DIR": "/tmp/d", "STREAMJOBS_RESULT_TTL": "5",
                           "STREAMJOBS_METRICS_PUBLIC": "yes"})
    assert s.redis_url == "redis://x:1/0" and s.api_keys == ("a", "b")
    assert s.data_dir == Path("/tmp/d") and s.result_ttl == 5 and s.metrics_public


def test_settings_rejects_unknown_variables() -> None:
    with pytest.raises(ConfigError, match="STREAMJOBS_REDIS_ULR"):
        Settings.from_env({"STREAMJOBS_REDIS_ULR": "redis://typo"})


def test_settings_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="STREAMJOBS_API_PORT"):
        Settings.from_env({"STREAMJOBS_API_PORT": "eighty"})
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        Settings(max_payload_bytes=0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"max_attempts": 0}, "max_attempts"), ({"jitter": 2}, "jitter"),
     ({"backoff_base": 10, "backoff_cap": 1}, "backoff_cap"), ({"timeout": 0}, "timeout"),
     ({"max_deliveries": 0}, "max_deliveries")],
)
def test_policy_validation(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Policy(**fields)  # type: ignore[arg-type]


def test_registry_refuses_two_handlers_and_unknown_policy_fields() -> None:
    reg = Registry()

    @reg.handler("a")
    async def one(job: Job) -> None: ...

    with pytest.raises(ConfigError, match="already has a handler"):
        @reg.handler("a")
        async def two(job: Job) -> None: ...
    with pytest.raises(ConfigError, match="unexpected keyword"):
        reg.handler("b", retries=3)
    assert reg.get("a").is_async and reg.types() == ["a"]
