"""`autopath`: server-side search path completion (CoreDNS's *autopath*)."""
