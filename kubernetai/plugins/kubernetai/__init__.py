"""The `kubernetai` directive: see README.md in this folder."""
