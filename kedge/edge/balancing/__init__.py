"""Balancing: policies that pick an endpoint from an immutable endpoint set."""
