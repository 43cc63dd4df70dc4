"""Networking helpers: TLS contexts and socket options."""
