"""The production shape, end to end: nginx in front of the chat service (2 workers) and the batch
service (1 worker), each started by the project's own scripts and reached only through nginx with
the `openai` SDK; then SIGTERM with work in flight, for each service.

nginx is installed from the distribution's packages when missing (`scripts/install_nginx.sh`) and
runs from a config rendered by `scripts/render_nginx.py --standalone` into a temporary directory,
so nothing under /etc is touched. Every process started here runs in its own process group, which
is killed at the end whatever happens. `Deployment` and `ScriptService` are reused by
`scripts/bench_nginx.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import free_port

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
TOKEN = "e2e-token"
MODEL = "tiny-test"
TERMINAL = {"completed", "failed", "cancelled", "expired"}
#: Debian installs nginx into /usr/sbin, which is not on every PATH.
SBIN = ("/usr/sbin", "/sbin")

pytestmark = pytest.mark.e2e


def find_nginx() -> str | None:
    return shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN]))


def ensure_nginx() -> str:
    """nginx's path, installing it first when missing (skipped only when that is impossible)."""
    nginx = find_nginx()
    if nginx is None:
        run = subprocess.run(
            [str(SCRIPTS / "install_nginx.sh")], capture_output=True, text=True, timeout=600
        )
        nginx = find_nginx()
        if nginx is None:
            reason = f"nginx is missing and could not be installed: {run.stderr.strip()[-500:]}"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)
    return nginx


def service_env(**overrides: str) -> dict[str, str]:
    """The environment of a script-started service: this interpreter's venv first on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "HOST": "127.0.0.1",
        "SECRET_TOKEN": TOKEN,
        "LOG_LEVEL": "INFO",
        **overrides,
    }


def process_group(pgid: int) -> list[int]:
    """Every live (not zombie) process of one process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(entry.name))
    return sorted(pids)


class ScriptService:
    """One of the project's run scripts, started in its own process group.

    The scripts `exec` uvicorn, so the pid is uvicorn's (the supervisor when there are several
    workers) and a signal sent to it is what a process manager would send.
    """

    def __init__(self, script: str, env: dict[str, str], log_path: Path) -> None:
        self.script = script
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ScriptService:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(SCRIPTS / self.script)],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self, workers: int = 1, timeout: float = 240.0) -> None:
        """Until every worker has loaded its model (each logs `ready in ...` once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if "start-up failed" in text:
                raise RuntimeError(f"{self.script}: start-up failed:\n{text[-4000:]}")
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.script} exited early:\n{text[-4000:]}")
            if len(re.findall(r"\bready in [0-9.]+ s\b", text)) >= workers:
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.script}: not ready after {timeout}s:\n{self.log()[-4000:]}")

    def group_pids(self) -> list[int]:
        """Every live process of this service's process group (uvicorn and its workers)."""
        return process_group(self.pid) if self.proc is not None else []

    def workers(self) -> list[int]:
        """uvicorn worker processes: the children running the app (not the resource tracker)."""
        if self.proc is None:
            return []
        found = []
        for pid in self.group_pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"multiprocessing.spawn" in cmdline:
                found.append(pid)
        return found or [self.pid]

    def terminate(self, timeout: float = 60.0) -> float:
        """SIGTERM, then wait for the whole group to exit; the seconds it took."""
        assert self.proc is not None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self.wait_gone(timeout - (time.monotonic() - t0))
        return time.monotonic() - t0

    def wait_gone(self, timeout: float = 10.0) -> bool:
        """Whether the whole group exited in time (multiprocessing's resource tracker lingers a
        moment after uvicorn)."""
        deadline = time.monotonic() + timeout
        while self.group_pids():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def kill(self) -> None:
        """SIGKILL to the whole group: the last resort of every teardown."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class Deployment:
    """nginx + the chat service + the batch service, in one temporary directory."""

    def __init__(self, root: Path, env: dict[str, str], *, chat_workers: int = 2) -> None:
        self.root = root
        self.chat_workers = chat_workers
        self.nginx_port = free_port()
        self.chat_port = free_port()
        self.batch_port = free_port()
        self.env = service_env(
            CHAT_PORT=str(self.chat_port),
            BATCH_PORT=str(self.batch_port),
            BATCH_JOB_DIR=str(root / "jobs"),
            BATCH_JOB_TEMP_DIR=str(root / "uploads"),
            UVICORN_WORKERS=str(chat_workers),
            **env,
        )
        self.chat = ScriptService("run_chat.sh", self.env, root / "chat.log")
        self.batch = ScriptService("run_batch.sh", self.env, root / "batch.log")
        self.nginx: subprocess.Popen[bytes] | None = None
        self.nginx_dir = root / "nginx"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def start(self, nginx: str, *, batch: bool = True) -> Deployment:
        subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "render_nginx.py"),
                "--standalone",
                "--prefix",
                str(self.nginx_dir),
                "--listen",
                f"127.0.0.1:{self.nginx_port}",
            ],
            env=self.env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        argv = [nginx, "-p", str(self.nginx_dir), "-e", str(self.nginx_dir / "error.log")]
        argv += ["-c", str(self.nginx_dir / "nginx.conf")]
        subprocess.run([*argv, "-t", "-q"], check=True, capture_output=True)
        with open(self.root / "nginx.out", "ab") as out:
            self.nginx = subprocess.Popen(
                [*argv, "-g", "daemon off;"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.chat.start()
        if batch:
            self.batch.start()
        self.chat.wait_ready(self.chat_workers)
        if batch:
            self.batch.wait_ready()
        self.wait_nginx()
        return self

    def wait_nginx(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"nginx not answering on {self.url}")

    def client(self, base: str | None = None, **kwargs: Any):
        from openai import OpenAI

        kwargs.setdefault("api_key", TOKEN)
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 120)
        return OpenAI(base_url=f"{base or self.url}/v1", **kwargs)

    def leftovers(self) -> list[int]:
        """Processes of this deployment still alive (none after `stop`)."""
        nginx = process_group(self.nginx.pid) if self.nginx is not None else []
        return self.chat.group_pids() + self.batch.group_pids() + nginx

    def stop(self) -> None:
        """Stop everything, gracefully first; nothing of this deployment survives it."""
        for service in (self.chat, self.batch):
            if service.proc is not None:
                try:
                    service.terminate(timeout=30)
                except subprocess.TimeoutExpired:
                    pass
                finally:
                    service.kill()
        if self.nginx is not None:
            try:
                os.killpg(self.nginx.pid, signal.SIGTERM)
                self.nginx.wait(10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(self.nginx.pid, signal.SIGKILL)
                self.nginx.wait()


def tiny_env(model_dir: Path, **overrides: str) -> dict[str, str]:
    return {
        "MODEL_NAME": str(model_dir),
        "SERVED_MODEL_ID": MODEL,
        "DEFAULT_NUM_BEAMS": "2",
        "DEFAULT_MAX_NEW_TOKENS": "16",
        "ALLOWED_MAX_NEW_TOKENS": "512",
        "MAX_INPUT_TOKENS": "512",
        "TORCH_NUM_THREADS": "1",
        "STREAM_KEEPALIVE_SECONDS": "0.5",
        "SHUTDOWN_GRACE_SECONDS": "20",
        # Every worker prebuilds this constraint at start-up, as in production.
        "PREBUILD_PREFIX": "true",
        "PREBUILD_LANGS": "es",
        "PREBUILD_WORD_COUNTS": "1000",
        "BATCH_JOB_PIPELINE_SIZE": "2",
        "BATCH_DEFAULT_MAX_TOKENS": "16",
        "BATCH_DEFAULT_NUM_BEAMS": "1",
        **overrides,
    }


@pytest.fixture(scope="module")
def nginx_bin() -> str:
    return ensure_nginx()


@pytest.fixture(scope="module")
def deployment(nginx_bin: str, tiny_model_dir: Path, tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("deployment")
    dep = Deployment(root, tiny_env(tiny_model_dir))
    try:
        dep.start(nginx_bin)
        yield dep
    finally:
        dep.stop()
    assert not dep.leftovers(), f"processes left behind: {dep.leftovers()}"


def chat_request(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


def poll(fetch, status=lambda s: s["status"], timeout: float = 120.0):
    """Call `fetch` until the status it returns is terminal (or time is up); the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        current = fetch()
        if status(current) in TERMINAL or time.monotonic() > deadline:
            return current
        time.sleep(0.1)


# ------------------------------------------------------------------------------ through nginx


def test_the_scripts_start_the_documented_shape(deployment: Deployment):
    assert len(deployment.chat.workers()) == 2
    assert deployment.batch.workers() == [deployment.batch.pid]
    assert "with 2 worker(s)" in deployment.chat.log()
    assert "with 1 worker" in deployment.batch.log()


def test_models_and_health_through_nginx(deployment: Deployment):
    client = deployment.client()
    raw = client.models.with_raw_response.list()
    assert [m.id for m in raw.parse().data] == [MODEL]
    # nginx forwards its request id; the service echoes it back.
    assert re.fullmatch(r"[0-9a-f]{32}", raw.headers["x-request-id"])
    for path in ("/health", "/batch/health"):
        assert httpx.get(deployment.url + path).json()["status"] == "ready"


def test_constrained_chat_through_nginx(deployment: Deployment):
    from wordcheck import violations, words

    r = deployment.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Cuéntame un cuento corto."}],
        max_tokens=48,
        temperature=0,
        extra_body={"vocab_lang": "es", "vocab_n_words": 1000, "num_beams": 1},
    )
    text = r.choices[0].message.content
    assert words(text), f"no words generated: {text!r}"
    assert violations(text, "es", 1000) == [], text
    assert r.model_extra["constraint"]["violations"] == []


def test_stream_is_not_buffered_by_nginx(deployment: Deployment):
    """Text reaches the client while the generation runs, not in one burst at its end.

    The finish chunk is produced only once the generation is over, so text arriving well before
    it was passed on as it was produced. A buffering proxy (for example `proxy_buffering on` with
    gzip, which this check fails) delivers everything at once, at the end.
    """
    t0 = time.perf_counter()
    stream = deployment.client().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a long story about the sea."}],
        max_tokens=128,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"num_beams": 1},
    )
    arrivals: list[float] = []
    finished_at = None
    usage = None
    for chunk in stream:
        now = time.perf_counter() - t0
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append(now)
            if choice.finish_reason is not None:
                finished_at = now
    assert usage is not None and usage.completion_tokens == 128, usage
    assert finished_at is not None and len(arrivals) >= 3, (arrivals, finished_at)
    moments = 1 + sum(1 for a, b in zip(arrivals, arrivals[1:], strict=False) if b - a > 0.001)
    assert arrivals[0] < 0.5 * finished_at, (arrivals, finished_at)
    assert moments >= 3, (arrivals, finished_at)


def test_job_upload_and_results_through_nginx(deployment: Deployment):
    client = deployment.client()
    items = [chat_request(f"Háblame del mar, número {i}.") for i in range(3)]
    accepted = client.post(
        "/batch/jobs",
        cast_to=object,
        files={"file": ("items.json", json.dumps(items).encode(), "application/json")},
        options={
            "params": {"vocab_lang": "es", "vocab_n_words": 1000, "max_tokens": 12},
            "headers": {"Content-Type": "multipart/form-data"},  # as files.create sends it
        },
    )
    job_id = accepted["job_id"]
    status = poll(lambda: client.get(f"/batch/jobs/{job_id}", cast_to=object))
    assert status["status"] == "completed" and status["completed"] == 3, status
    results = client.get(f"/batch/jobs/{job_id}/results", cast_to=object)
    from wordcheck import violations

    assert [r["id"] for r in results] == [f"chatcmpl-batch-{job_id}-{i}" for i in range(3)]
    for completion in results:
        text = completion["choices"][0]["message"]["content"]
        assert violations(text, "es", 1000) == [], text


def test_openai_batch_round_trip_through_nginx(deployment: Deployment):
    client = deployment.client()
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": chat_request(f"Say hello {i}.", max_tokens=8, num_beams=1),
        }
        for i in range(3)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = poll(lambda: client.batches.retrieve(batch.id), status=lambda b: b.status)
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == 3 and batch.request_counts.failed == 0
    output = client.files.content(batch.output_file_id).text
    by_id = {json.loads(line)["custom_id"]: json.loads(line) for line in output.splitlines()}
    assert sorted(by_id) == ["req-0", "req-1", "req-2"]
    assert all(entry["response"]["status_code"] == 200 for entry in by_id.values())


def test_wrong_token_is_refused_by_both_services(deployment: Deployment):
    import openai

    wrong = deployment.client(api_key="not-the-token")
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        wrong.batches.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.files.list()
    # ?token= passes through nginx to both services, and is checked there too.
    for path in ("/v1/models", "/v1/batches", "/v1/batch/jobs"):
        assert httpx.get(f"{deployment.url}{path}?token={TOKEN}").status_code == 200, path
        assert httpx.get(f"{deployment.url}{path}?token=nope").status_code == 401, path


def render_site(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "render_nginx.py"), *args],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_site_file_with_a_chat_pool_is_valid_nginx(nginx_bin: str, tmp_path: Path):
    """The production form (an `http`-context include) with extra chat hosts passes `nginx -t`."""
    env = service_env(CHAT_PORT="9010", BATCH_PORT="9011", BATCH_MAX_UPLOAD_BYTES="2048")
    site = render_site(
        env,
        "--chat-server",
        "10.0.0.12:9010",
        "--chat-server",
        "10.0.0.13:9010",
        "--access-log",
        str(tmp_path / "access.log"),
    )
    assert "{{" not in site
    chat_pool = re.search(r"upstream wordlist_chat \{(.*?)\}", site, re.S).group(1)
    servers = re.findall(r"^\s*server ([^\s;]+)", chat_pool, re.M)
    assert servers == ["127.0.0.1:9010", "10.0.0.12:9010", "10.0.0.13:9010"]
    batch_pool = re.search(r"upstream wordlist_batch \{(.*?)\}", site, re.S).group(1)
    assert re.findall(r"^\s*server ([^\s;]+)", batch_pool, re.M) == ["127.0.0.1:9011"]
    assert f"client_max_body_size {2048 + 65536};" in site
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{ include {tmp_path}/site.conf; }}\n"
    )
    check = subprocess.run(
        [nginx_bin, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log")]
        + ["-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_nginx_upload_margin_matches_the_batch_service():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import render_nginx
    finally:
        sys.path.remove(str(SCRIPTS))
    from wordlist_generation.routers.batch import MULTIPART_OVERHEAD

    assert render_nginx.MULTIPART_MARGIN_BYTES == MULTIPART_OVERHEAD


def test_nginx_errors_are_json_in_the_api_shape(deployment: Deployment):
    too_big = httpx.post(
        f"{deployment.url}/v1/chat/completions",
        content=b"x" * (1_048_576 + 1),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413
    assert too_big.json()["error"]["code"] == "request_too_large"


# ------------------------------------------------------------------------------ SIGTERM


@pytest.fixture()
def service_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sigterm")


def test_sigterm_lets_an_inflight_chat_stream_finish(tiny_model_dir: Path, service_root: Path):
    port = free_port()
    env = service_env(
        **tiny_env(tiny_model_dir, SHUTDOWN_GRACE_SECONDS="30", PREBUILD_PREFIX="false"),
        CHAT_PORT=str(port),
        UVICORN_WORKERS="2",
    )
    chat = ScriptService("run_chat.sh", env, service_root / "chat.log").start()
    try:
        chat.wait_ready(workers=2)
        from openai import OpenAI

        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Write a long story about the sea."}],
            max_tokens=512,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"num_beams": 1},
        )
        signalled_at = None
        after_signal = 0
        finish = usage = None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    if signalled_at is None:
                        signalled_at = time.monotonic()
                        os.kill(chat.pid, signal.SIGTERM)
                    else:
                        after_signal += 1
                finish = choice.finish_reason or finish
        assert signalled_at is not None
        assert after_signal > 0, "the generation ended before SIGTERM: nothing was in flight"
        assert finish == "length" and usage is not None and usage.completion_tokens == 512
        assert chat.proc.wait(30) == 0, chat.log()[-3000:]
        assert chat.wait_gone(), chat.group_pids()
    finally:
        chat.kill()


def test_sigterm_grace_period_bounds_a_long_chat_request(tiny_model_dir: Path, service_root: Path):
    """A request that would outlive SHUTDOWN_GRACE_SECONDS is cut, and the service still exits."""
    import threading

    port = free_port()
    env = service_env(
        **tiny_env(
            tiny_model_dir,
            SHUTDOWN_GRACE_SECONDS="1",
            PREBUILD_PREFIX="false",
            ALLOWED_MAX_NEW_TOKENS="1024",
        ),
        CHAT_PORT=str(port),
        UVICORN_WORKERS="2",
    )
    chat = ScriptService("run_chat.sh", env, service_root / "chat-bounded.log").start()
    outcome: dict[str, Any] = {}

    def long_request() -> None:
        body = chat_request("Write a long story about the sea.", max_tokens=1024, num_beams=8)
        try:
            outcome["status"] = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=120,
            ).status_code
        except httpx.HTTPError as exc:
            outcome["status"] = type(exc).__name__

    try:
        chat.wait_ready(workers=2)
        client = threading.Thread(target=long_request)
        client.start()
        time.sleep(0.5)
        assert client.is_alive(), outcome
        stop_seconds = chat.terminate(timeout=60)
        client.join(60)
        # 8 beams x 1024 tokens take about 11 s here; the grace period (1 s) is applied twice at
        # most: uvicorn's, then the app's own wait for generations to end.
        assert stop_seconds < 8, f"took {stop_seconds:.1f}s to stop"
        assert outcome["status"] != 200, outcome
    finally:
        chat.kill()


def results_on_disk(job_dir: Path, job_id: str) -> list[int]:
    """Item indices in the job's append-only results log, in the order they were written."""
    path = job_dir / "jobs" / job_id / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["index"] for line in path.read_text().splitlines() if line.strip()]


def test_sigterm_abandons_the_batch_in_flight_and_the_next_start_redoes_it(
    tiny_model_dir: Path, service_root: Path
):
    port = free_port()
    env = service_env(
        **tiny_env(tiny_model_dir, SHUTDOWN_GRACE_SECONDS="30", PREBUILD_PREFIX="false"),
        BATCH_PORT=str(port),
        BATCH_JOB_DIR=str(service_root / "jobs"),
        BATCH_JOB_TEMP_DIR=str(service_root / "uploads"),
        UVICORN_WORKERS="4",  # ignored, with a message: the batch service has one worker
    )
    total = 12
    items = [chat_request(f"Tell me about the sea, part {i}.") for i in range(total)]
    first = ScriptService("run_batch.sh", env, service_root / "batch-1.log").start()
    second = ScriptService("run_batch.sh", env, service_root / "batch-2.log")
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    try:
        first.wait_ready()
        assert "ignoring UVICORN_WORKERS=4" in first.log()
        assert first.workers() == [first.pid]
        r = http.post(
            "/v1/batch/jobs",
            params={"max_tokens": 256, "num_beams": 1},
            files={"file": ("items.json", json.dumps(items).encode(), "application/json")},
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        deadline = time.monotonic() + 120
        while http.get(f"/v1/batch/jobs/{job_id}").json()["completed"] < 2:
            assert time.monotonic() < deadline, "the job made no progress"
            time.sleep(0.02)
        stop_seconds = first.terminate(timeout=30)
        done_before = results_on_disk(service_root / "jobs", job_id)
        assert 2 <= len(done_before) < total, done_before
        assert stop_seconds < 10, f"the batch service took {stop_seconds:.1f}s to stop"
        assert "batch worker stopped" in first.log()

        second.start().wait_ready()
        status = poll(lambda: http.get(f"/v1/batch/jobs/{job_id}").json())
        assert status["status"] == "completed" and status["completed"] == total, status
        written = results_on_disk(service_root / "jobs", job_id)
        assert written[: len(done_before)] == done_before
        assert sorted(written) == list(range(total)), f"lost or duplicated items: {written}"
        results = http.get(f"/v1/batch/jobs/{job_id}/results").json()
        assert [c["object"] for c in results] == ["chat.completion"] * total
        assert "resuming 1 unfinished batch jobs" in second.log()
    finally:
        http.close()
        first.kill()
        second.kill()
