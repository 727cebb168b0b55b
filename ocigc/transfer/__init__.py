"""Moving artifacts: push, pull, tag, the registry client, and migrate."""
