"""The request path: the wire codec, routing, the server protocols, the answer cache and the plugin registry.

Nothing here imports a plugin.
"""
