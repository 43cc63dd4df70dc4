"""Discovery: resolvers that turn backend config into endpoint-set updates."""
