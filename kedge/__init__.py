"""kedge: the Python edge for cross-cluster traffic."""

__version__ = "0.1.0"
