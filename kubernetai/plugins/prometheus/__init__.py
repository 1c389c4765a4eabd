"""The `prometheus` plugin: see README.md in this folder."""
