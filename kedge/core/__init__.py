"""Shared by the edge, the dialer and winch: errors, HTTP messages, codecs, networking."""
