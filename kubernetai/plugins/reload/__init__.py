"""The `reload` plugin: see README.md in this folder."""
