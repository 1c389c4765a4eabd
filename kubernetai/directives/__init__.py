"""The directives kubernetai ships, each registered through the `kubernetai.directives` entry points."""
