"""TokenFile: a bearer token kept in a file, re-read whenever the file changes.

Projected service-account tokens are rotated by the kubelet (an atomic `..data` symlink
swap); secrets mounted from Kubernetes change the same way. The file is stat'ed on each
use (cheap) and read only when its mtime or inode changed, so a rotation takes effect on
the next request without a restart.
"""

from __future__ import annotations

import os

__all__ = ["TokenFile"]


class TokenFile:
    __slots__ = ("_stamp", "_token", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._token = ""
        self._stamp: tuple[int, int] | None = None

    def value(self) -> str:
        """The token (stripped); OSError if the file cannot be read."""
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp != self._stamp:
            with open(self.path, encoding="ascii") as f:
                self._token = f.read().strip()
            self._stamp = stamp
        return self._token

    def forget(self) -> None:
        """Read the file again on the next use (after the server refused the token)."""
        self._stamp = None
