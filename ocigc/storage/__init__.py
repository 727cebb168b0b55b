"""Storage backends: the ``Storage`` protocol and its capabilities, local and mounted file systems, ``s3://``."""
