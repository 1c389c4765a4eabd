"""minimal: positive answers lose their authority and additional sections (CoreDNS's
minimal)."""
