"""Observability: metrics, access log and the admin listener."""
