"""CoreDNS's `cache` plugin."""
