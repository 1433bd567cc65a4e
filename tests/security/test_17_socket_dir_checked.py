"""Finding 17: the embedded server's fallback socket folder /tmp/pgrealtime-<uid>-<hash>
is predictable; it was accepted whatever it was (a symlink, someone else's folder) and
chowned as root. Now it is created 0700 and an existing one must be a real folder of
ours (or the service user's) that nobody else can write to."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

import pytest

from pgrealtime.db.embedded import SOCKET_PATH_LIMIT, EmbeddedPostgres
from pgrealtime.db.private_dir import UnsafeDirectoryError, ensure_private_dir

ME = (os.geteuid(), os.getegid())


def _someone_else() -> tuple[int, int]:
    if os.geteuid() != 0:
        pytest.skip("making a folder owned by another user needs root")
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def test_created_private(tmp_path: Path) -> None:
    target = tmp_path / "run"
    ensure_private_dir(target, *ME)
    st = os.lstat(target)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == ME[0]
    ensure_private_dir(target, *ME)  # an existing safe one is fine


def test_symlink_refused_and_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)  # noqa: S103
    link = tmp_path / "run"
    link.symlink_to(victim)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
        ensure_private_dir(link, *ME)
    assert stat.S_IMODE(os.stat(victim).st_mode) == 0o755


def test_foreign_owner_refused(tmp_path: Path) -> None:
    other_uid, other_gid = _someone_else()
    planted = tmp_path / "run"
    planted.mkdir(mode=0o700)
    os.chown(planted, other_uid, other_gid)
    service = pwd.getpwnam("pgrealtime") if os.geteuid() == 0 else None
    uid, gid = (service.pw_uid, service.pw_gid) if service else ME
    if uid == 0:
        pytest.skip("no service user")
    with pytest.raises(UnsafeDirectoryError, match="owned by uid"):
        ensure_private_dir(planted, uid, gid)


def test_writable_by_others_refused(tmp_path: Path) -> None:
    planted = tmp_path / "run"
    planted.mkdir()
    os.chmod(planted, 0o777)  # noqa: S103
    with pytest.raises(UnsafeDirectoryError, match="others may write"):
        ensure_private_dir(planted, *ME)
    # merely readable (older versions made it so): tightened
    os.chmod(planted, 0o755)  # noqa: S103
    ensure_private_dir(planted, *ME)
    assert stat.S_IMODE(os.lstat(planted).st_mode) == 0o700


def test_start_refuses_a_planted_fallback_socket_dir(tmp_path: Path) -> None:
    """The real start path, with a data folder too long for a socket inside it: the
    predictable /tmp folder, planted as a symlink, makes start() fail before anything
    runs, and nothing is chowned through the link."""
    data_dir = tmp_path / ("d" * (SOCKET_PATH_LIMIT - len(str(tmp_path))))
    cluster = EmbeddedPostgres(data_dir, port=54999)
    socket_dir = cluster.socket_dir
    assert socket_dir.parent == Path("/tmp") and not socket_dir.exists()
    victim = tmp_path / "victim"
    victim.mkdir()
    os.chmod(victim, 0o755)  # noqa: S103
    before = os.stat(victim)
    socket_dir.symlink_to(victim)
    try:
        with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
            cluster.start()
        after = os.stat(victim)
        assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)
        assert not (data_dir / "pg" / "PG_VERSION").exists()
    finally:
        socket_dir.unlink()
        shutil.rmtree(data_dir, ignore_errors=True)
