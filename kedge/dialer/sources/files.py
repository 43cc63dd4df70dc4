"""Atomic file replacement for the token caches the sources write (OIDC cache, kubeconfig)."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

__all__ = ["replace_file"]


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` (through a symlink, as kubectl does) with `data`, atomically, with `mode`.

    The temporary file in the same directory is created with O_EXCL and `mode` (umask can only
    remove bits) and fchmod'ed to exactly `mode` before anything is written, so a secret is
    never readable by others, even for a moment; os.replace then swaps it in. A missing
    directory is created 0700.
    """
    target = Path(os.path.realpath(path))
    directory = target.parent
    if not directory.is_dir():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    tmp = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
