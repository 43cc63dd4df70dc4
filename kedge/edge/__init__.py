"""The edge server: config, routing, discovery, balancing, forwarding, observability."""
