"""Forwarding: upstream connection pools and the terminal forwarding layer."""
