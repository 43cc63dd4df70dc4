"""The dialer's own refusals: typed errors a caller of `kedge.dialer` can catch and match on."""

from __future__ import annotations

from kedge.core.errors import Forbidden

__all__ = ["NotMapped", "RedirectRefused"]


class NotMapped(Forbidden):
    """No mapper route names this host and the config says `unmapped: refuse` (hardening X4:
    the dialer is no way around the mapping to arbitrary names)."""

    kind = "unmapped-host"


class RedirectRefused(Forbidden):
    """A redirect would make the dialer attach a route's credentials to a name the caller did
    not ask for (hardening X5): the caller follows it itself, with `allow_redirects=False`."""

    kind = "redirect-refused"
