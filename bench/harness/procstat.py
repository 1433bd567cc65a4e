"""What a process costs, read from /proc: CPU time, resident memory, CPU pinning.

The server's own CPU (its process and any non-PostgreSQL children) is kept apart
from PostgreSQL's, so "CPU per delivery" means the realtime server's work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRES_COMM = "postgres"


def _stat_fields(pid: int) -> tuple[str, list[str]]:
    """(comm, fields after comm) of /proc/<pid>/stat; comm may hold spaces and ')'."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    lpar, rpar = raw.index("("), raw.rindex(")")
    return raw[lpar + 1 : rpar], raw[rpar + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by one process (all its threads)."""
    _, fields = _stat_fields(pid)
    # fields[0] is state (field 3); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_cpu_seconds(pid: int) -> float:
    """System (kernel) CPU seconds of one process: for a fan-out server this is
    mostly socket writes, so it shows how much of the cost Python cannot touch."""
    _, fields = _stat_fields(pid)
    return int(fields[12]) / CLOCK_TICKS


def comm(pid: int) -> str:
    return _stat_fields(pid)[0]


def parent(pid: int) -> int:
    return int(_stat_fields(pid)[1][1])


def rss_bytes(pid: int) -> int:
    """Resident set size (VmRSS) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def children(pid: int) -> list[int]:
    """Direct children, from /proc/<pid>/task/*/children."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (those alive right now)."""
    seen: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            stack.extend(children(p))
        except OSError:
            continue
        seen.append(p)
    return seen


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


@dataclass
class CpuSample:
    """CPU seconds of the server (excluding PostgreSQL) and of PostgreSQL, at one
    instant, plus the server's resident memory."""

    server: float
    postgres: float
    server_rss: int
    host: float = 0.0  # busy CPU seconds of the whole machine, to spot other load
    server_sys: float = 0.0  # the kernel's share of `server`


def _safe(fn, *args, default=0):
    try:
        return fn(*args)
    except (OSError, ValueError, IndexError):
        return default


def host_busy_seconds() -> float:
    """Non-idle CPU seconds of all cpus since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLOCK_TICKS


def reaped_cpu_seconds(pid: int) -> float:
    """CPU of children this process has waited for (cutime + cstime): a PostgreSQL
    postmaster collects the time of backends that already exited."""
    _, fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / CLOCK_TICKS


class ServerProbe:
    """Samples a server process tree, and PostgreSQL host-wide (the machine is
    dedicated to the benchmark; that includes an external database given by URL,
    which the server's process tree would miss).

    Finding the processes means reading every /proc entry, which takes
    milliseconds on a small VM, so it is done by `refresh()` outside the measured
    windows; `sample()` then reads only the known pids."""

    def __init__(
        self, pid: int | None, postgres: str = "host", data_dir: Path | None = None
    ) -> None:
        """`postgres`: "host" (every postgres process), "embedded" (the cluster whose
        postmaster.pid lies under `data_dir`) or "none"."""
        self.pid = pid
        self.postgres = postgres
        self.data_dir = data_dir
        self._server: list[int] = []
        self._postgres: list[int] = []
        self._postmasters: list[int] = []
        self.refresh()

    def refresh(self) -> None:
        if self.pid is not None:
            tree = process_tree(self.pid)
            self._server = [p for p in tree if _safe(comm, p, default="") != POSTGRES_COMM]
        if self.postgres == "none":
            pg = []
        elif self.postgres == "embedded" and self.data_dir is not None:
            pg = []
            for pidfile in self.data_dir.rglob("postmaster.pid"):
                pg.extend(process_tree(int(_safe(pidfile.read_text, default="0").split()[0])))
        else:
            pg = [p for p in all_pids() if _safe(comm, p, default="") == POSTGRES_COMM]
        self._postgres = pg
        pg_set = set(pg)
        self._postmasters = [p for p in pg if _safe(parent, p) not in pg_set]

    @property
    def postmasters(self) -> list[int]:
        """The PostgreSQL postmasters found by the last `refresh()`."""
        return list(self._postmasters)

    def sample(self) -> CpuSample:
        server = sum(_safe(cpu_seconds, p, default=0.0) for p in self._server)
        postgres = sum(_safe(cpu_seconds, p, default=0.0) for p in self._postgres)
        postgres += sum(_safe(reaped_cpu_seconds, p, default=0.0) for p in self._postmasters)
        rss = sum(_safe(rss_bytes, p) for p in self._server)
        server_sys = sum(_safe(system_cpu_seconds, p, default=0.0) for p in self._server)
        return CpuSample(
            server=server,
            postgres=postgres,
            server_rss=rss,
            host=host_busy_seconds(),
            server_sys=server_sys,
        )

    def rss(self) -> int | None:
        if self.pid is None:
            return None
        return sum(_safe(rss_bytes, p) for p in self._server)


def pin_tree(pid: int, cpus: set[int], postgres_cpus: set[int] | None = None) -> None:
    """Pin every thread of a process tree to `cpus`; PostgreSQL processes in the
    tree (an embedded database) get `postgres_cpus` instead, when given."""
    for p in process_tree(pid):
        is_pg = _safe(comm, p, default="") == POSTGRES_COMM
        target = postgres_cpus if is_pg else cpus
        if not target:
            continue
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                os.sched_setaffinity(int(tid), target)
        except OSError:
            continue


def cpu_layout() -> tuple[set[int], set[int]] | None:
    """(load generator cpus, server cpus) when there are at least two cpus."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


def own_cpu_seconds() -> tuple[float, float]:
    """(user, system) CPU seconds of this process: the kernel's share shows how
    much of the generator's time is socket work rather than Python."""
    t = os.times()
    return t.user, t.system
