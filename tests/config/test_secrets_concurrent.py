"""Processes started together on one data directory (`--workers`, a cluster's tests)
must all start, and must all end up with the same generated secrets: two anon keys or
webhook secrets would make the processes two different servers to a client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
from pgrealtime.config import Settings
from pgrealtime.config.settings import ensure_secrets
start = float(sys.argv[2])
while time.time() < start:  # every process reaches the file at the same moment
    pass
settings = Settings(data_dir=Path(sys.argv[1]))
ensure_secrets(settings, webhook=True)
print(json.dumps([settings.jwt_secret, settings.api_key, settings.webhook_secret,
                  settings.anon_key]))
"""


def test_processes_started_together_share_one_set_of_secrets(tmp_path: Path) -> None:
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [err for _, err in results]
    seen = {out.strip() for out, _ in results}
    assert len(seen) == 1  # one set of secrets for all
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert json.loads(seen.pop()) == [stored["jwt_secret"], stored["api_key"],
                                      stored["webhook_secret"], stored["anon_key"]]  # fmt: skip
    assert (tmp_path / "secrets.json").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.tmp"))
