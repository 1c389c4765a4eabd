"""CoreDNS's `hosts` plugin."""
