"""End-to-end fixtures: the real `sluice` binary in front of the `sluice-mock` provider.

Session-scoped: one mock and one Sluice serve every test. Both binaries come from env vars
(`SLUICE_BIN`, `SLUICE_MOCK_BIN`) with the `cargo build --bins` outputs as defaults, so
`scripts/test.sh` builds once and runs `python -m pytest tests/sdk`.

Every response that comes back through Sluice is noted (its `x-sluice-request-id`) by an
httpx event hook on the SDK clients, so the usage-log test at the end can check that the log
holds exactly one line per request.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The virtual key the SDK clients present; its SHA-256 is in the generated config.
TEST_KEY = "sk-sluice-test"
# A second virtual key that may only use the models listed in the config (for 403s).
LIMITED_KEY = "sk-sluice-limited"
LIMITED_MODELS = ["gpt-4o-mini", "claude-*"]
OPENAI_UPSTREAM_KEY = "sk-upstream-openai"
ANTHROPIC_UPSTREAM_KEY = "sk-upstream-anthropic"

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

LISTENING_RE = re.compile(r"sluice listening.*?data=(\S+)\s+admin=(\S+)")


def _binary(env_var: str, default: str) -> Path:
    path = Path(os.environ.get(env_var, default))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.exists():
        pytest.exit(
            f"{env_var}: {path} does not exist; run `cargo build --bins` first", returncode=2
        )
    return path


class _LineCollector:
    """Reads a child's pipe in a thread (so it never fills) and keeps every line."""

    def __init__(self, stream, name: str) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(stream,), name=name, daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    m = pattern.search(line)
                    if m:
                        return m
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


def _stop(proc: subprocess.Popen, name: str, log: _LineCollector | None) -> None:
    """SIGTERM, then require a clean exit (status 0) within STOP_TIMEOUT."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{name} did not exit within {STOP_TIMEOUT}s of SIGTERM")
    if log is not None:
        log.join()
    if code != 0:
        tail = log.text()[-4000:] if log is not None else ""
        pytest.fail(f"{name} exited with status {code} after SIGTERM\n{tail}")


@dataclass
class Mock:
    addr: str  # host:port


@dataclass
class Sluice:
    data: str  # host:port of the data plane
    admin: str  # host:port of the admin plane
    usage_path: Path
    stderr: _LineCollector
    # x-sluice-request-id of every response the SDK clients got through Sluice.
    request_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_response(self, response) -> None:
        rid = response.headers.get("x-sluice-request-id")
        with self._lock:
            self.request_ids.append(rid if rid is not None else "<missing>")

    def logs(self) -> str:
        return self.stderr.text()


@pytest.fixture(scope="session")
def mock() -> Iterator[Mock]:
    binary = _binary("SLUICE_MOCK_BIN", "target/debug/sluice-mock")
    proc = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out = _LineCollector(proc.stdout, "mock-stdout")
    err = _LineCollector(proc.stderr, "mock-stderr")
    m = out.wait_for(re.compile(r"^listening on http://(\S+)$"), START_TIMEOUT)
    if m is None:
        proc.kill()
        proc.wait()
        pytest.exit(
            f"sluice-mock did not report its address\nstdout:\n{out.text()}\nstderr:\n{err.text()}",
            returncode=3,
        )
    try:
        yield Mock(addr=m.group(1))
    finally:
        _stop(proc, "sluice-mock", err)


def _config(mock_addr: str, usage_path: Path) -> str:
    # What `sluice hash-key KEY` prints.
    key_sha = hashlib.sha256(TEST_KEY.encode()).hexdigest()
    limited_sha = hashlib.sha256(LIMITED_KEY.encode()).hexdigest()
    limited_models = ", ".join(f'"{m}"' for m in LIMITED_MODELS)
    return f"""\
[server]
listen = "127.0.0.1:0"
passthrough_keys = false
drain_timeout = "5s"
# The mock's /v1/echo-headers is an "other" provider path: virtual keys may use it here.
passthrough = ["other"]

[admin]
listen = "127.0.0.1:0"

[log]
level = "info"
format = "text"
usage = "{usage_path}"

[state]
path = "{usage_path}.state"

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
name = "gpt-4o-mini"
provider = "mock-openai"
upstream_model = "mock-model"

[[models]]
name = "*"
provider = "mock-openai"

# A tiny budget on one model only, for the insufficient_quota test.
[[pricing]]
model = "budget-test-model"
input = 1000.0
output = 1000.0

[[budgets]]
name = "sdk-budget"
scope = ["user"]
window = "day"
limit_usd = 0.05
models = ["budget-test-model"]

[[keys]]
name = "sdk-tests"
sha256 = "{key_sha}"
user = "sdk-tester"
team = "qa"

[[keys]]
name = "sdk-limited"
sha256 = "{limited_sha}"
models = [{limited_models}]
"""


def _get(url: str, timeout: float = 2.0) -> int:
    # No proxies from the environment: this is loopback traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.fixture(scope="session")
def sluice(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sluice]:
    binary = _binary("SLUICE_BIN", "target/debug/sluice")
    tmp = tmp_path_factory.mktemp("sluice")
    usage_path = tmp / "usage.jsonl"
    config_path = tmp / "proxy.toml"
    config_path.write_text(_config(mock.addr, usage_path))

    env = dict(os.environ)
    env.pop("RUST_LOG", None)  # the config's level keeps the "sluice listening" line
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
    err = _LineCollector(proc.stderr, "sluice-stderr")
    m = err.wait_for(LISTENING_RE, START_TIMEOUT)
    if m is None:
        proc.kill()
        proc.wait()
        pytest.exit(f"sluice did not report its listeners\nstderr:\n{err.text()}", returncode=3)
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
            pytest.exit(f"sluice never became ready\nstderr:\n{err.text()}", returncode=3)
        time.sleep(0.05)

    try:
        yield Sluice(data=data, admin=admin, usage_path=usage_path, stderr=err)
    finally:
        _stop(proc, "sluice", err)


@pytest.fixture(scope="session")
def openai_client(sluice: Sluice) -> Iterator[openai.OpenAI]:
    http = openai.DefaultHttpxClient(
        trust_env=False, event_hooks={"response": [sluice.note_response]}
    )
    client = openai.OpenAI(
        base_url=f"http://{sluice.data}/v1",
        api_key=TEST_KEY,
        max_retries=0,
        timeout=60.0,
        http_client=http,
    )
    yield client
    client.close()


@pytest.fixture(scope="session")
def anthropic_client(sluice: Sluice) -> Iterator[anthropic.Anthropic]:
    http = anthropic.DefaultHttpxClient(
        trust_env=False, event_hooks={"response": [sluice.note_response]}
    )
    client = anthropic.Anthropic(
        base_url=f"http://{sluice.data}",
        api_key=TEST_KEY,
        max_retries=0,
        timeout=60.0,
        http_client=http,
    )
    yield client
    client.close()


@pytest.fixture(scope="session")
def keys() -> dict[str, str]:
    """Keys known to the test config, by role."""
    return {
        "test": TEST_KEY,
        "limited": LIMITED_KEY,
        "upstream_openai": OPENAI_UPSTREAM_KEY,
        "upstream_anthropic": ANTHROPIC_UPSTREAM_KEY,
    }


@pytest.fixture
def make_openai(sluice: Sluice) -> Iterator:
    """Builds OpenAI clients with another key (auth failures); still counted for the usage log."""
    clients: list[openai.OpenAI] = []

    def make(api_key: str) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"http://{sluice.data}/v1",
            api_key=api_key,
            max_retries=0,
            timeout=30.0,
            http_client=openai.DefaultHttpxClient(
                trust_env=False, event_hooks={"response": [sluice.note_response]}
            ),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def make_anthropic(sluice: Sluice) -> Iterator:
    """Builds Anthropic clients with another key; still counted for the usage log."""
    clients: list[anthropic.Anthropic] = []

    def make(api_key: str) -> anthropic.Anthropic:
        client = anthropic.Anthropic(
            base_url=f"http://{sluice.data}",
            api_key=api_key,
            max_retries=0,
            timeout=30.0,
            http_client=anthropic.DefaultHttpxClient(
                trust_env=False, event_hooks={"response": [sluice.note_response]}
            ),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "run_last: run after every other test (reads what they left behind)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Stable sort: the usage-log check goes after everything that makes requests.
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
