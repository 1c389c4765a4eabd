"""`transfer`: zone transfers (AXFR, IXFR) of the `kubernetai` stanzas' zones, and NOTIFY."""
