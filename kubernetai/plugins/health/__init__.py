"""The `health` directive: see README.md in this folder."""
