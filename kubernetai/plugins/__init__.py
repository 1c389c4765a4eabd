"""The Corefile directives kubernetai ships, one folder each, registered through entry points."""
