"""The local stack: Redis, a chain, Celery workers and beat, run as subprocesses.

Used by ``market stack up`` (``python -m market.stack up``), the demo and the end-to-end
tests. Each worker and beat runs in its own session (process group), with its log in
``var/log/``; :meth:`Stack.kill_worker` SIGKILLs a worker's whole group the way a crashed
host would, and :meth:`Stack.restart_worker` starts a replacement.

    with local_stack(workers=2) as stack:
        stack.ping()                      # a round trip through Redis and a worker
        stack.restart_worker(stack.workers[0])
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import FrameType
from typing import Any, Literal
from urllib.parse import urlsplit

from market.config import load_settings
from market.services import ROOT, Anvil, ensure_redis, start_anvil

LOG_DIR = ROOT / "var" / "log"
RUN_DIR = ROOT / "var" / "run"
# Warm shutdown lets a running task finish; a step still running after this is killed and
# redelivered (acks_late), so waiting longer only delays the stop.
STOP_GRACE_S = 10.0
# A worker imports web3 and connects to Redis in 1-3 s on a laptop; 60 s covers a cold
# start on a loaded CI machine without hiding a worker that will never come up.
READY_TIMEOUT_S = 60.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

Pool = Literal["prefork", "solo"]


@dataclass
class Proc:
    """A process of the stack (a worker or beat), the leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    nodename: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """Whether the group leader is still running."""
        return self.process.poll() is None

    def children(self) -> list[int]:
        """Pids of the leader's direct children (a prefork worker's pool processes)."""
        path = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            return [int(pid) for pid in path.read_text().split()]
        return []

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crashed host would: nothing gets to clean up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the leader (Celery's warm shutdown), then SIGKILL the group after ``grace_s``."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace_s)
        self.kill()  # also reaps pool children left behind by an unclean exit

    def log_tail(self, lines: int = 30) -> str:
        """The end of the process's log, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def rpc_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether an Ethereum JSON-RPC node answers ``eth_chainId`` at ``url``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return "result" in json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def ensure_chain(url: str) -> Anvil | None:
    """Use the node at ``url`` if it answers; else start anvil there when it is a local port.

    Returns the anvil it started (the caller stops it), or None when a node already answered.
    An unreachable remote URL is an error: silently using a different chain would be worse.
    """
    if rpc_answers(url):
        return None
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        raise RuntimeError(f"no Ethereum node answers at MARKET_RPC_URL={url}")
    return start_anvil(port=parts.port or 8545)


@dataclass
class Stack:
    """Running stack processes and the environment they share."""

    env: dict[str, str]
    log_dir: Path = LOG_DIR
    run_dir: Path = RUN_DIR
    pool: Pool = "prefork"
    concurrency: int = 1
    workers: list[Proc] = field(default_factory=list)
    beat: Proc | None = None
    api: Proc | None = None
    anvil: Anvil | None = None
    _app: Any = None
    _count: int = 0

    @property
    def app(self) -> Any:
        """A Celery client on the stack's Redis (to send tasks and control commands)."""
        if self._app is None:
            from workers.celeryconf import create_app

            self._app = create_app(load_settings(self.env), self.env)
        return self._app

    def _spawn(self, name: str, args: list[str]) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: kill() reaches the pool children
            )
        return Proc(name=name, process=process, log_path=log_path)

    def start_worker(self, *, wait: bool = True) -> Proc:
        """Start one Celery worker process (``-c concurrency``) and wait until it answers."""
        self._count += 1
        # A fresh node name per start: a restarted worker is a new node, and logs stay apart.
        name = f"worker{self._count}-{secrets.token_hex(2)}"
        worker = self._spawn(
            name,
            [
                "-m", "celery", "-A", "workers.celeryconf", "worker",
                "--loglevel=info",
                "-c", str(self.concurrency),
                f"--pool={self.pool}",
                "-n", f"{name}@%h",
                # No peers to sync with at start (mingle) nor to gossip with: these only
                # slow the start; revocations are not used, state lives on the chain.
                "--without-mingle", "--without-gossip",
            ],
        )  # fmt: skip
        worker.nodename = f"{name}@{socket.gethostname()}"
        self.workers.append(worker)
        if wait:
            self.wait_ready(worker)
        return worker

    def start_beat(self) -> Proc:
        """Start Celery beat (the reconcile schedule), its schedule file under ``run_dir``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.beat = self._spawn(
            "beat",
            [
                "-m", "celery", "-A", "workers.celeryconf", "beat",
                "--loglevel=info",
                "-s", str(self.run_dir / "celerybeat-schedule"),
            ],
        )  # fmt: skip
        return self.beat

    def start_api(self, port: int) -> Proc:
        """Start the HTTP API (``uvicorn market.api:app``) on a loopback port."""
        self.api = self._spawn(
            "api",
            ["-m", "uvicorn", "market.api:app", "--host", "127.0.0.1", "--port", str(port)],
        )
        return self.api

    def wait_ready(self, worker: Proc, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until ``worker`` answers a control ping; a clear error with its log if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            if not worker.alive():
                raise RuntimeError(f"{worker.name} exited:\n{worker.log_tail()}")
            replies = self.app.control.ping(destination=[worker.nodename], timeout=0.5)
            if any(worker.nodename in reply for reply in replies or []):
                return
            if time.monotonic() > deadline:
                log = worker.log_tail()
                raise RuntimeError(f"{worker.name} not ready in {timeout_s} s:\n{log}")

    def ping(self, timeout_s: float = 30.0) -> str:
        """Run the ``market.ping`` task; the node name of the worker that answered."""
        return str(self.app.send_task("market.ping").get(timeout=timeout_s))

    def kill_worker(self, worker: Proc) -> None:
        """SIGKILL a worker and its pool, mid-task if it is running one (crash tests)."""
        worker.kill()
        self.workers.remove(worker)

    def restart_worker(self, worker: Proc, *, wait: bool = True) -> Proc:
        """Kill ``worker`` (SIGKILL) and start a new one in its place."""
        self.kill_worker(worker)
        return self.start_worker(wait=wait)

    def stop(self) -> None:
        """Stop beat first (no new work), then the API and workers, then our anvil."""
        for proc in [self.beat, self.api, *self.workers]:
            if proc is not None:
                proc.stop()
        self.workers.clear()
        if self._app is not None:
            self._app.close()
        if self.anvil is not None:
            self.anvil.stop()


def stack_env(
    redis_url: str, rpc_url: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of the stack's processes: ours, plus its URLs and ``extra``."""
    env = dict(os.environ)
    env["MARKET_REDIS_URL"] = redis_url
    env["MARKET_RPC_URL"] = rpc_url
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # logs appear as they happen
    env.update(extra or {})
    return env


@contextlib.contextmanager
def local_stack(
    *,
    redis_url: str | None = None,
    rpc_url: str | None = None,
    workers: int = 1,
    concurrency: int = 1,
    pool: Pool = "prefork",
    beat: bool = True,
    chain: bool = True,
    api_port: int | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: Path = LOG_DIR,
    run_dir: Path = RUN_DIR,
) -> Iterator[Stack]:
    """Run the stack for a ``with`` block and stop every process it started afterwards.

    URLs default to the settings (``MARKET_REDIS_URL``, ``MARKET_RPC_URL``). Redis is
    started when absent; with ``chain``, anvil too (see :func:`ensure_chain`). The default
    ``prefork`` pool is the one that enforces the hard time limit and requeues the task of
    a pool process that died (``task_reject_on_worker_lost``); ``solo`` runs tasks in the
    worker process itself.
    """
    settings = load_settings({**os.environ, **(env or {})})
    redis_url = redis_url or settings.redis_url
    rpc_url = rpc_url or settings.rpc_url
    ensure_redis(redis_url)
    node = ensure_chain(rpc_url) if chain else None
    if node is not None:
        rpc_url = node.url
    stack = Stack(
        env=stack_env(redis_url, rpc_url, env),
        log_dir=log_dir,
        run_dir=run_dir,
        pool=pool,
        concurrency=concurrency,
        anvil=node,
    )
    try:
        for _ in range(workers):
            stack.start_worker(wait=False)
        for worker in stack.workers:
            stack.wait_ready(worker)
        if workers:
            stack.ping()
        if beat:
            stack.start_beat()
        if api_port is not None:
            stack.start_api(api_port)
        yield stack
    finally:
        stack.stop()


def serve(*, workers: int = 1, concurrency: int = 2, api_port: int | None = 8000) -> None:
    """``market stack up``: run the stack in the foreground until SIGINT or SIGTERM."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with local_stack(workers=workers, concurrency=concurrency, api_port=api_port) as stack:
        print(f"redis   {stack.env['MARKET_REDIS_URL']}")
        print(f"chain   {stack.env['MARKET_RPC_URL']}")
        if api_port is not None:
            print(f"api     http://127.0.0.1:{api_port}")
        print(f"workers {', '.join(w.nodename for w in stack.workers)}; logs in {stack.log_dir}")
        while not stopping:
            for proc in [stack.beat, stack.api, *stack.workers]:
                if proc is not None and not proc.alive():
                    raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
            time.sleep(0.5)
        print("stopping")


def main(argv: list[str]) -> int:
    """``python -m market.stack up [--workers N] [--concurrency C] [--no-api]``."""
    if argv[:1] != ["up"]:
        print("usage: python -m market.stack up [--workers N] [--concurrency C] [--no-api]")
        return 2
    options = argv[1:]

    def number(flag: str, default: int) -> int:
        return int(options[options.index(flag) + 1]) if flag in options else default

    serve(
        workers=number("--workers", 1),
        concurrency=number("--concurrency", 2),
        # The API starts when its module exists and is not turned off.
        api_port=None if "--no-api" in options or not find_spec("market.api") else 8000,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


__all__ = ["Proc", "Stack", "ensure_chain", "local_stack", "rpc_answers", "serve", "stack_env"]
