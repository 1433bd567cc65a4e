"""A folder only its owner can use, made safely even at a predictable path in /tmp.

The embedded PostgreSQL's socket folder may have to live at a short, predictable path
under /tmp. Anyone can create that path first: as a symlink (so a chown or chmod run
as root lands on a file of the attacker's choice) or as their own folder (so they can
put a fake socket in it, and the server would talk to their "database"). So the
folder is created with mode 0700; an existing one is accepted only when it is a real
folder, not a symlink, owned by us (or by the user PostgreSQL runs as, or root), and
writable by nobody else. Ownership and mode are changed through a descriptor opened
with O_NOFOLLOW, checked to be the very folder inspected.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class UnsafeDirectoryError(RuntimeError):
    """The folder exists but someone else could control it."""


def _refuse(path: Path, why: str) -> UnsafeDirectoryError:
    return UnsafeDirectoryError(
        f"refusing to use {path} for the PostgreSQL socket: {why}. Remove it (it may have "
        "been planted by another user), or choose a shorter --data-dir so the socket "
        "stays inside it"
    )


def unsafe_reason(st: os.stat_result, trusted_uids: set[int]) -> str | None:
    """Why an existing entry (from os.lstat) is not a private folder, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid not in trusted_uids:
        return f"it is owned by uid {st.st_uid}, not by {sorted(trusted_uids)}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"others may write to it (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def ensure_private_dir(path: Path, uid: int, gid: int) -> None:
    """Create `path` (parent must exist) as a 0700 folder owned by uid:gid, or accept
    an existing one that is safe (tightening it to 0700 and that owner); raise
    UnsafeDirectoryError otherwise. Root and the current user count as trusted
    owners of an existing folder: they could have made it, nobody else."""
    trusted = {uid, os.geteuid()}
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    before = os.lstat(path)
    reason = unsafe_reason(before, trusted)
    if reason is not None:
        raise _refuse(path, reason)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _refuse(path, "it was replaced while being checked") from exc
        raise
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise _refuse(path, "it was replaced while being checked")
        if (now.st_uid, now.st_gid) != (uid, gid):
            os.fchown(fd, uid, gid)
        if stat.S_IMODE(now.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
