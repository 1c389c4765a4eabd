"""The `ready` plugin: see README.md in this folder."""
