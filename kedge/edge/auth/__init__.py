"""The auth layer: who is calling (client certificate, OIDC JWT) and what a route allows."""
