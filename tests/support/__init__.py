"""Test helpers shared by several test modules (servers on 127.0.0.1, fakes)."""
