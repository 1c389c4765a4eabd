"""whoami: answers every query with the client's address, port and transport (CoreDNS's whoami)."""
