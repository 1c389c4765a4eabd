"""The `errors` directive: see README.md in this folder."""
