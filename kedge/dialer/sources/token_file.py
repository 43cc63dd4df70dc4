"""A bearer token read from a file and re-read when the file changes (kubelet rotation)."""

from __future__ import annotations

from kedge.core.net.token_file import TokenFile
from kedge.dialer.config import TokenFileSourceConfig
from kedge.dialer.credentials import AuthSourceError, BearerToken, Credential

__all__ = ["TokenFileSource"]


class TokenFileSource:
    """Stats the file on every call (cheap) and reads it only when its mtime or inode changed,
    so a `..data` symlink swap takes effect on the next request. A JWT's `exp` is not used:
    the file's writer owns rotation, and the edge's 401 triggers a re-read (`invalidate`)."""

    __slots__ = ("_file", "name")

    def __init__(self, config: TokenFileSourceConfig) -> None:
        self.name = config.name
        self._file = TokenFile(config.path)

    async def credential(self) -> Credential:
        try:
            value = self._file.value()
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthSourceError(
                self.name, f"cannot read token file {self._file.path}: {type(exc).__name__}"
            ) from exc
        if not value:
            raise AuthSourceError(self.name, f"token file {self._file.path} is empty")
        return BearerToken(value)

    def invalidate(self) -> None:
        self._file.forget()

    async def aclose(self) -> None:
        return None
