"""Kubernetes discovery: EndpointSlice resolvers over shared list/watch streams."""
