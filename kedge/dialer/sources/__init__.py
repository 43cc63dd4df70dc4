"""Auth source kinds, one module each: static, token_file, kubeconfig, oidc, client_credentials.

Constructors do no I/O: a source reads files and talks to its issuer on its first
`credential()` call, so one broken source never stops winch from starting (kEdge issue #100).
`oauth` is the OAuth 2.0 client the token-issuing kinds share; `oidc_login` is the interactive
browser login (authorization code + PKCE on a loopback redirect).
"""
