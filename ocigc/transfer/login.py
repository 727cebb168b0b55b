"""``login``: check credentials against a registry, then store them (``ocigc.transfer.credentials``)."""

from __future__ import annotations

from ocigc.transfer.credentials import Credentials, store_credentials
from ocigc.transfer.registry import RegistryClient
from ocigc.transfer.registry_model import RegistryOptions


def login(host: str, username: str, password: str, *, config: str | None = None, plain_http: bool | None = None,
          insecure: bool = False) -> str:
    """Ping ``host`` with the credentials (a 401 raises RegistryAuthError), then store them;
    where they went (the config file, or ``docker-credential-NAME``)."""
    options = RegistryOptions(plain_http=plain_http, insecure=insecure, retries=1, docker_config=config,
                              username=username, password=password)
    client = RegistryClient(host, options)
    client.ping()
    return store_credentials(host, Credentials(username, password), config)


__all__ = ["login"]
