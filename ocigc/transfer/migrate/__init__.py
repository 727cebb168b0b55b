"""migrate: copy repositories between layouts and registries, every digest intact."""
