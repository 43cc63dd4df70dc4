"""Routing: pure matchers and the compiled first-match route table."""
