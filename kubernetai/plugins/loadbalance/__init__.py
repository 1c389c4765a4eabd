"""CoreDNS's `loadbalance` plugin."""
