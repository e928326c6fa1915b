"""The security boundary: PKI and mutual TLS, call tokens, accounts and roles, the login endpoint, audit, keys."""
