"""Chaos faults as the official SDKs see them: injected failures are retried, raised and
classified exactly as the real APIs' are.

A Sluice of its own (faults chosen by an `x-chaos` header) in front of the session's mock, so
the session Sluice's one-usage-line-per-request check is untouched. Requests Sluice saw are
counted with `sluice_faults_injected_total` (incremented before each answer goes out).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import openai
import pytest

from conftest import (
    ANTHROPIC_UPSTREAM_KEY,
    LISTENING_RE,
    OPENAI_UPSTREAM_KEY,
    START_TIMEOUT,
    TEST_KEY,
    Mock,
    _binary,
    _get,
    _LineCollector,
    _stop,
)

FAULTS = {
    # name (also the x-chaos value that selects it): the fault
    "oa-429": 'status = 429\nretry_after = 0',
    "oa-500": "status = 500",
    "an-529": "status = 529",
    "an-429": "status = 429\nretry_after = 0",
    "ctx": "status = 400",
    "cut": "truncate_after = 2",
    "reset": "reset_after = 2",
    "garbled": "malformed_after = 1",
}


@dataclass
class Chaos:
    data: str
    admin: str

    def injected(self, name: str) -> int:
        """How many times fault `name` was injected (0 if never)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{self.admin}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith("sluice_faults_injected_total{") and f'fault="{name}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def openai(self, chaos: str, max_retries: int = 2) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"http://{self.data}/v1",
            api_key=TEST_KEY,
            max_retries=max_retries,
            timeout=30.0,
            default_headers={"x-chaos": chaos},
            http_client=openai.DefaultHttpxClient(trust_env=False),
        )

    def anthropic(self, chaos: str, max_retries: int = 2) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=f"http://{self.data}",
            api_key=TEST_KEY,
            max_retries=max_retries,
            timeout=30.0,
            default_headers={"x-chaos": chaos},
            http_client=anthropic.DefaultHttpxClient(trust_env=False),
        )


def _config(mock_addr: str, tmp: Path) -> str:
    key_sha = hashlib.sha256(TEST_KEY.encode()).hexdigest()
    faults = "\n".join(
        f'[[faults]]\nname = "{name}"\nheader = "x-chaos={name}"\n{fields}\n'
        for name, fields in FAULTS.items()
    )
    return f"""\
[server]
listen = "127.0.0.1:0"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[log]
level = "info"
usage = "{tmp / 'usage.jsonl'}"

[state]
path = "{tmp / 'state'}"

[[providers]]
name = "mock-openai"
kind = "openai-compatible"
base_url = "http://{mock_addr}/v1"
api_key_env = "SLUICE_TEST_OPENAI_KEY"

[[providers]]
name = "mock-anthropic"
kind = "anthropic"
base_url = "http://{mock_addr}"
api_key_env = "SLUICE_TEST_ANTHROPIC_KEY"

[[models]]
name = "claude-*"
provider = "mock-anthropic"

[[models]]
name = "*"
provider = "mock-openai"

[[keys]]
name = "chaos-tests"
sha256 = "{key_sha}"

{faults}
"""


@pytest.fixture(scope="module")
def chaos(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    binary = _binary("SLUICE_BIN", "target/debug/sluice")
    tmp = tmp_path_factory.mktemp("chaos")
    config_path = tmp / "proxy.toml"
    config_path.write_text(_config(mock.addr, tmp))
    env = dict(os.environ)
    env.pop("RUST_LOG", None)
    env["SLUICE_TEST_OPENAI_KEY"] = OPENAI_UPSTREAM_KEY
    env["SLUICE_TEST_ANTHROPIC_KEY"] = ANTHROPIC_UPSTREAM_KEY
    proc = subprocess.Popen(
        [str(binary), "--config", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp,
        env=env,
    )
    err = _LineCollector(proc.stderr, "chaos-stderr")
    m = err.wait_for(LISTENING_RE, START_TIMEOUT)
    if m is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"sluice did not report its listeners\nstderr:\n{err.text()}")
    data, admin = m.group(1), m.group(2)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if _get(f"http://{admin}/readyz") == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"sluice never became ready\nstderr:\n{err.text()}")
        time.sleep(0.05)
    try:
        yield Chaos(data=data, admin=admin)
    finally:
        _stop(proc, "chaos sluice", err)


MESSAGES = [{"role": "user", "content": "hello there"}]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a dropped connection raises: the SDKs' connection error, or their HTTP
    library's own (httpx, or httpx2 in newer SDKs) where a stream read does not wrap it."""
    errors: list[type[BaseException]] = [openai.APIConnectionError, anthropic.APIConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(__import__(name).HTTPError)
        except ImportError:
            pass
    return tuple(errors)


DROPPED = _transport_errors()


def test_openai_sdk_retries_an_injected_429_and_500_like_the_real_api(chaos: Chaos) -> None:
    with chaos.openai("oa-429") as client:
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    assert e.value.status_code == 429
    assert e.value.code == "rate_limit_exceeded"
    assert chaos.injected("oa-429") == 3, "max_retries=2: the SDK sent it three times"

    with chaos.openai("oa-500", max_retries=1) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    assert chaos.injected("oa-500") == 2


def test_anthropic_sdk_retries_an_injected_529_and_429(chaos: Chaos) -> None:
    with chaos.anthropic("an-529") as client:
        with pytest.raises(anthropic.InternalServerError) as e:
            client.messages.create(model="claude-3-5-haiku", messages=MESSAGES, max_tokens=5)
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"
    assert chaos.injected("an-529") == 3

    with chaos.anthropic("an-429", max_retries=3) as client:
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="claude-3-5-haiku", messages=MESSAGES, max_tokens=5)
    assert chaos.injected("an-429") == 4


def test_a_context_length_400_is_a_bad_request_and_not_retried(chaos: Chaos) -> None:
    with chaos.openai("ctx") as client:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    assert e.value.code == "context_length_exceeded"
    assert chaos.injected("ctx") == 1
    with chaos.anthropic("ctx") as client:
        with pytest.raises(anthropic.BadRequestError) as e:
            client.messages.create(model="claude-3-5-haiku", messages=MESSAGES, max_tokens=5)
    assert "prompt is too long" in str(e.value)
    assert chaos.injected("ctx") == 2


def test_a_stream_dropped_mid_way_raises_in_the_sdk(chaos: Chaos) -> None:
    with chaos.openai("reset", max_retries=0) as client:
        with pytest.raises(DROPPED):
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True
            )
            for _ in stream:
                pass
    with chaos.anthropic("reset", max_retries=0) as client:
        with pytest.raises(DROPPED):
            with client.messages.stream(
                model="claude-3-5-haiku", messages=MESSAGES, max_tokens=50
            ) as stream:
                stream.get_final_message()


def test_a_malformed_event_raises_in_the_sdk(chaos: Chaos) -> None:
    with chaos.openai("garbled", max_retries=0) as client:
        with pytest.raises(ValueError):  # json.JSONDecodeError
            stream = client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True
            )
            for _ in stream:
                pass


def test_a_cleanly_truncated_stream_is_silent_unless_the_agent_checks_the_finish(
    chaos: Chaos,
) -> None:
    # Neither SDK raises when a stream ends early but cleanly: the agent must check
    # finish_reason / stop_reason, which a truncated stream never sets.
    with chaos.openai("cut", max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=50, stream=True
            )
        )
    assert len(chunks) == 2
    assert all(c.choices[0].finish_reason is None for c in chunks if c.choices)
    with chaos.anthropic("cut", max_retries=0) as client:
        with client.messages.stream(
            model="claude-3-5-haiku", messages=MESSAGES, max_tokens=50
        ) as stream:
            final = stream.get_final_message()
    assert final.stop_reason is None
    assert chaos.injected("cut") == 2
