"""The `explain` plugin: see README.md in this folder."""
