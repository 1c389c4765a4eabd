"""A simulated Kubernetes API server speaking the REST list/watch protocol."""
