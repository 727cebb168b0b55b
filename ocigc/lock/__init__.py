"""Lock files for last-write-wins stores, and leases on stores with conditional writes."""
