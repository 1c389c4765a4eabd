"""CoreDNS's `rewrite` plugin: the question the plugins after it see, rewritten by rules,
and their answer mapped back for the client (see README.md)."""
