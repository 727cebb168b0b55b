"""ocigc: registry upkeep for OCI image layouts on object storage."""

__version__ = "0.1.0"
