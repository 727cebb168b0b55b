"""Real-component test harness: moto S3, s3fs and rclone mounts, docker-registry, umoci/skopeo/oras.

``fixtures`` is the pytest plugin (registered in ``tests/conftest.py``); ``servers``, ``mounts``
and ``tools`` can also be used from scripts and benchmarks. See ``docs/testing.md``.
"""
