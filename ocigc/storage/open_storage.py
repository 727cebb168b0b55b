"""``open_storage``: a ``Storage`` for a location string (a local path or ``s3://bucket/prefix``),
and the endpoint setting of s3:// locations.
"""

from __future__ import annotations

from ocigc.storage.base import OpCounter, Storage

#: ``--endpoint-url`` of the CLI for s3:// locations (None: boto3's own configuration, e.g.
#: ``AWS_ENDPOINT_URL``).
S3_ENDPOINT_URL: str | None = None


def set_s3_endpoint(url: str | None) -> None:
    global S3_ENDPOINT_URL
    S3_ENDPOINT_URL = url or None


def open_storage(location: str, counter: OpCounter | None = None) -> Storage:
    """A Storage for a location string: ``s3://bucket/prefix`` (native, needs the s3 extra) or a local
    path (a plain directory, or a mounted bucket reached as ``--via`` says: ``ocigc.storage.via``)."""
    if location.startswith("s3://"):
        try:
            from ocigc.storage.s3 import S3Storage  # type: ignore[import-not-found,unused-ignore]
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            from ocigc.errors import UsageError

            raise UsageError(f"{location}: s3:// locations need the s3 backend (pip install 'ocigc[s3]')") from e
        return S3Storage.from_url(location, counter=counter, endpoint_url=S3_ENDPOINT_URL)  # type: ignore[no-any-return,unused-ignore]
    from ocigc.storage.via import open_local_path

    return open_local_path(location, counter)
