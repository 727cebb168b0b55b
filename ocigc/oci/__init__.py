"""The OCI model: descriptors and media types, manifest parsing, references, ``index.json``."""
