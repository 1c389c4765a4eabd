"""CoreDNS's `loop` plugin."""
