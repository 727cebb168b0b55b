"""What the registry client is configured with and what it raises: options, back-off, the
Docker config path, the errors a registry's answers turn into."""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass, field

from ocigc.digest import Digest
from ocigc.errors import TransferError
from ocigc.oci.descriptor import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_ARTIFACT,
    OCI_INDEX,
    OCI_MANIFEST,
)

#: What we accept for manifests (distribution 2.8 answers 404 to a HEAD of an OCI manifest
#: when the Accept header does not name its type).
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST, OCI_ARTIFACT,
                             DOCKER_SCHEMA1_SIGNED, DOCKER_SCHEMA1])


#: Size of the reads that feed an upload body and of the chunks written by a download.
CHUNK = 1024 * 1024


TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


PAGE_SIZE = 1000


class RegistryUnavailable(TransferError):
    """The registry cannot be reached, or keeps failing, after every retry: the run stops."""


class RegistryAuthError(TransferError):
    """Authentication failed or no credentials were found."""


class RegistryRejected(TransferError):
    """The registry answered one request with an error (refused manifest, unknown blob, ...)."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class BlobNotFound(TransferError):
    """A blob or manifest the source should hold is not there."""


class StreamInterrupted(TransferError):
    """A download broke off mid-stream (retried by the caller with a fresh stream)."""


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach a registry. ``plain_http``: http:// (True), https:// (False), or None: http:// for
    ``localhost``, ``127.0.0.1`` and ``[::1]`` (any port), as oras does, https:// elsewhere;
    ``insecure``: https without TLS verification (on a local registry too). ``username``/``password``:
    credentials given on the command line, used for every registry of the run (before the config file)."""

    plain_http: bool | None = None
    insecure: bool = False
    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 10.0
    timeout: float = 120.0
    docker_config: str | None = None
    pool_size: int = 16
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def uses_plain_http(self, host: str) -> bool:
        if self.plain_http is not None:
            return self.plain_http
        return is_local_host(host) and not self.insecure


def is_local_host(host: str) -> bool:
    """``localhost``, ``127.0.0.1`` or ``[::1]``, with or without a port."""
    name = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
    return name in ("localhost", "127.0.0.1", "[::1]")


def backoff_delay(attempt: int, options: RegistryOptions, retry_after: float | None = None) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with jitter, capped."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), options.backoff_max)
    base = min(options.backoff_max, options.backoff * (2 ** attempt))
    return base * random.uniform(0.5, 1.0)


def docker_config_path(explicit: str | None = None) -> str:
    """``--docker-config`` (a file or a directory), else ``$DOCKER_CONFIG/config.json``, else
    ``~/.docker/config.json``."""
    if explicit:
        return os.path.join(explicit, "config.json") if os.path.isdir(explicit) else explicit
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return os.path.join(env, "config.json")
    return os.path.expanduser("~/.docker/config.json")


@dataclass
class ManifestInfo:
    digest: Digest | None
    media_type: str
    size: int


def basic_auth_value(username: str, password: str) -> str:
    """The base64 ``user:password`` of a Docker config ``auths`` entry."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()
