"""Starting, finding and stopping the servers under test.

Both servers run as their own processes, pinned away from the load generator, so
their CPU time and memory can be read from /proc without counting the client.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from bench.harness.procstat import POSTGRES_COMM, ServerProbe, comm, pin_tree, process_tree
from bench.harness.signing import KEY_OF_ALG, make_keys

REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds bench/

BENCH_CHANNEL_PATTERN = "bench:*"


@dataclass
class Target:
    """A running server the load generator talks to."""

    kind: str  # "server" or "baseline"
    base_url: str  # http://127.0.0.1:port
    pid: int | None
    jwt_secret: str
    api_key: str | None = None
    process: subprocess.Popen | None = None
    workdir: Path | None = None
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    signing_keys: dict[str, Any] = field(default_factory=dict)  # key type -> private key

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/realtime"

    postgres_scope: str = "host"  # whose postgres CPU counts: see ServerProbe

    @property
    def probe(self) -> ServerProbe:
        return ServerProbe(self.pid, self.postgres_scope, self.workdir)

    def token(self, user_id: str | None = None, ttl: float = 3600.0, alg: str = "HS256") -> str:
        """A user's token, signed with `alg` (HS256 with the server's secret; the others
        with the keys this bench gave the server it started)."""
        claims = {
            "sub": user_id or str(uuid.uuid4()),
            "role": "authenticated",
            "exp": int(time.time() + ttl),
        }
        if alg == "HS256":
            return jwt.encode(claims, self.jwt_secret, "HS256")
        key = self.signing_keys.get(KEY_OF_ALG.get(alg, ""))
        if key is None:
            raise ValueError(f"no {alg} key: the bench gives keys only to a server it starts")
        return jwt.encode(claims, key, alg)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_command() -> list[str]:
    """`pgrealtime` from the same environment as this interpreter."""
    script = Path(sys.executable).parent / "pgrealtime"
    if script.exists():
        return [str(script)]
    found = shutil.which("pgrealtime")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from pgrealtime.cli import main; sys.exit(main())"]


def server_available() -> bool:
    """Whether `pgrealtime serve` exists in this installation yet."""
    try:
        result = subprocess.run(
            [*_server_command(), "serve", "--help"], capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _spawn(
    cmd: list[str], log_path: Path, cpus: set[int] | None, pythonpath: Path | None = None
) -> subprocess.Popen:
    def pin() -> None:  # runs in the child before exec: threads inherit it
        if cpus:
            os.sched_setaffinity(0, cpus)

    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if pythonpath is not None:  # `python -m bench...` from any working directory
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    log = log_path.open("wb")
    return subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=pin,
        env=env,
        start_new_session=True,
    )


async def _wait_healthy(target: Target, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    last = "no answer"
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if target.process is not None and target.process.poll() is not None:
                raise RuntimeError(
                    f"{target.kind} exited with {target.process.returncode}:\n{target.log_tail()}"
                )
            try:
                async with http.get(target.base_url + "/health") as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except aiohttp.ClientError as exc:
                last = str(exc)
            await asyncio.sleep(0.1)
    raise RuntimeError(
        f"{target.kind} not healthy after {wait_s:.0f}s ({last})\n{target.log_tail()}"
    )


async def start_baseline(cpus: set[int] | None) -> Target:
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pgrt-bench-baseline-"))
    log_path = workdir / "baseline.log"
    cmd = [
        sys.executable,
        "-m",
        "bench.harness.baseline",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    proc = _spawn(cmd, log_path, cpus, pythonpath=REPO_ROOT)
    target = Target(
        "baseline",
        f"http://127.0.0.1:{port}",
        proc.pid,
        secrets.token_urlsafe(32),
        process=proc,
        workdir=workdir,
        log_path=log_path,
        postgres_scope="none",
    )
    await _wait_healthy(target, 30)
    return target


async def start_server(
    database_url: str | None,
    cpus: set[int] | None,
    all_cpus: set[int] | None,
    extra_args: list[str] | None = None,
    wait_s: float = 180.0,
) -> Target:
    """Start `pgrealtime serve` on a free loopback port with fresh secrets; without
    a database URL it runs its embedded PostgreSQL in a throw-away data directory."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pgrt-bench-server-"))
    os.chmod(workdir, 0o755)  # noqa: S103 - the embedded PostgreSQL user must reach its data dir
    log_path = workdir / "server.log"
    jwt_secret = secrets.token_urlsafe(48)
    api_key = "ik_" + secrets.token_urlsafe(24)
    signing_keys, public_keys = make_keys(workdir)  # for tokens other than HS256
    cmd = [
        *_server_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        f"--jwt-secret={jwt_secret}",  # one argument: a secret may start with "-"
        "--api-key",
        api_key,
        "--log-level",
        "warning",
        "--data-dir",
        str(workdir / "data"),
        # the load generator is one trusted client driving many sessions at rates far
        # above a per-connection publish limit meant for untrusted clients (and the
        # per-user budgets: its sessions share a few users)
        "--publish-rate",
        "0",
        "--user-publish-rate",
        "0",
        "--user-publish-bytes-rate",
        "0",
        "--max-subscriptions",
        "0",
        # and from one address, with frame and subscribe rates no untrusted client has
        "--frame-rate",
        "0",
        "--subscribe-rate",
        "0",
        "--max-connections",
        "0",
        "--max-connections-per-ip",
        "0",
        "--jwt-public-key",
        ",".join(str(path) for path in public_keys),
    ]
    if database_url:
        cmd += ["--database-url", database_url]
    else:
        cmd += ["--embedded-port", str(free_port())]
    cmd += extra_args or []
    proc = _spawn(cmd, log_path, cpus)
    target = Target(
        "server",
        f"http://127.0.0.1:{port}",
        proc.pid,
        jwt_secret,
        api_key,
        process=proc,
        workdir=workdir,
        log_path=log_path,
        postgres_scope="host" if database_url else "embedded",
        signing_keys=signing_keys,
    )
    try:
        await _wait_healthy(target, wait_s)
    except BaseException:
        stop(target)
        raise
    if cpus:
        # an embedded PostgreSQL inherited the server's cpu: give it all cpus back
        pin_tree(proc.pid, cpus, all_cpus)
        if all_cpus and target.postgres_scope == "embedded":
            # pg_ctl daemonizes the postmaster (its parent is pid 1), so the server's
            # process tree does not reach it: find it by its postmaster.pid. Backends
            # forked later inherit its affinity.
            for postmaster in target.probe.postmasters:
                pin_tree(postmaster, all_cpus, all_cpus)
    await ensure_channel(target)
    return target


async def attach(url: str, jwt_secret: str, api_key: str | None, pid: int | None) -> Target:
    """A server somebody else started (--url)."""
    target = Target("server", url.rstrip("/"), pid, jwt_secret, api_key)
    await _wait_healthy(target, 10)
    if api_key:
        await ensure_channel(target)
    return target


async def ensure_channel(target: Target) -> None:
    """Create the enabled `bench:*` channel every scenario uses (409 = already there)."""
    headers = {"Authorization": f"Bearer {target.api_key}"}
    body = {"pattern": BENCH_CHANNEL_PATTERN, "description": "pgrealtime bench", "enabled": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(target.base_url + "/api/realtime/channels", json=body, headers=headers) as resp,
    ):
        if resp.status not in (200, 201, 409):
            raise RuntimeError(
                f"creating channel {BENCH_CHANNEL_PATTERN}: HTTP {resp.status} {await resp.text()}"
            )


def stop(target: Target, timeout: float = 20.0) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left."""
    proc = target.process
    if proc is None:
        return
    pids = process_tree(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    # an embedded PostgreSQL that outlived its parent (it runs in its own session)
    for pid in pids:
        try:
            if comm(pid) == POSTGRES_COMM:
                os.kill(pid, signal.SIGTERM)
        except OSError:
            continue
    if target.workdir is not None:
        shutil.rmtree(target.workdir, ignore_errors=True)
