"""CoreDNS's `forward` plugin."""
