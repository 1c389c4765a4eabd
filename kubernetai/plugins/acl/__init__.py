"""acl: allow, block (REFUSED), filter (empty NOERROR) or drop queries by source address and
type, per zone (CoreDNS's acl)."""
