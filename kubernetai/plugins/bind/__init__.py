"""The `bind` directive: see README.md in this folder."""
