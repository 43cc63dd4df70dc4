"""Winch's own refusals: typed errors rendered with `X-Winch-Error` and `X-Winch-Error-Type`.

Failures of the hop to the edge reuse kedge's kinds (`upstream-connect`, ...), and an
unmapped name is the dialer's `NotMapped` (`unmapped-host`), so a client reads the same
vocabulary whichever hop failed; the header prefix says which one.
"""

from __future__ import annotations

from kedge.core.errors import Forbidden, ProxyAuthRequired

__all__ = ["CrossSiteRefused", "HostNotAllowed", "OtherUser", "WinchSecretRequired"]


class HostNotAllowed(Forbidden):
    """A request for winch itself whose Host is not a loopback name of winch: a DNS rebinding
    page (hardening X1) or a name nothing maps."""

    kind = "host-not-allowed"


class CrossSiteRefused(Forbidden):
    """A browser request made by another site's page (Origin or Sec-Fetch-Site says so):
    winch attaches credentials, so a page must not be able to use it (hardening X2)."""

    kind = "cross-site-refused"


class WinchSecretRequired(ProxyAuthRequired):
    """The listener requires the per-user secret in Proxy-Authorization (hardening X3)."""

    kind = "winch-secret-required"

    def __init__(self, reason: str) -> None:
        super().__init__(reason, (b"proxy-authenticate", b'Basic realm="winch"'))


class OtherUser(Forbidden):
    """A loopback connection opened by another local user than winch's (hardening X3):
    winch would act as its own user for them."""

    kind = "other-user"
