"""The request path: wire codec, routing, the plugin pipeline, the answer cache, the server.

Nothing here imports a plugin (an import-linter contract in setup.cfg checks it).
"""
