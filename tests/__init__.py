"""The ocigc test suite (a package, so tests import ``tests.harness`` and ``tests.kit.layouts``)."""
