"""ocigc benchmarks (not part of ``make test``): ``make bench`` or ``python -m bench [NAME ...]``."""
