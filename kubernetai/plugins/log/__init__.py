"""The `log` directive: see README.md in this folder."""
