"""any: answers ANY queries with one short HINFO record (RFC 8482), as CoreDNS's any."""
