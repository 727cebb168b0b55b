"""Registry access for ``migrate``: the only module that imports oras (oras-py).

oras-py supplies the transport session, the Docker-config credential helpers
(``credsStore``/``credHelpers``), challenge parsing and the bearer-token request. It does not
supply a request loop this module can use as is (``docs/migrate.md``):

* ``Registry.do_request`` re-sends the same ``data`` after a 401, so a streamed body would go
  out empty; its ``@retry`` sleeps 3 to 83 s on any error, also on a refused connection;
* ``upload_blob``/``put_upload`` read the whole blob into memory;
* ``upload_manifest`` re-serializes the JSON (a new digest) and refuses indexes;
* the token backend keeps one token for every repository and re-sends it after a 401.

So the request loop is ours: the ``Authorization`` header is computed per request (Basic, or a
bearer token cached per repository), a 401 re-authenticates once, manifests go out as raw bytes
with their own media type, blobs stream in constant memory (POST, then one PUT whose body reads
the source as it goes), and an upload whose PUT meets a 401 or a broken connection is restarted
from the POST with a freshly opened source: a consumed stream is never re-sent. Transient
failures (connection errors, 408, 429, 5xx) are retried with exponential back-off and jitter.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn

import oras.auth.utils as oras_auth_utils
import oras.provider
import requests

from ocigc.digest import Digest
from ocigc.errors import IntegrityError, InvalidDigest, OcigcError, TransferError
from ocigc.layout.layout import MAX_MANIFEST_BYTES
from ocigc.oci.descriptor import (
    OCI_INDEX,
)
from ocigc.oci.referrers import referrers_tag
from ocigc.transfer.credentials import Credentials, find_credentials
from ocigc.transfer.registry_http import (
    _LINK_NEXT,
    ResponseStream,
    _BlockAdapter,
    _connection_problem,
    _error_of,
    _json,
    _media_type,
    _own_media_type,
    _raise_for,
    _Restart,
    _retry_after,
    _short,
    _tls_problem,
    _UploadBody,
)
from ocigc.transfer.registry_model import (
    MANIFEST_ACCEPT,
    PAGE_SIZE,
    TRANSIENT_STATUS,
    BlobNotFound,
    ManifestInfo,
    RegistryAuthError,
    RegistryOptions,
    RegistryRejected,
    RegistryUnavailable,
    StreamInterrupted,
    backoff_delay,
)


@dataclass
class _AuthState:
    scheme: str | None = None  # "basic" | "bearer"
    tokens: dict[str, str] = field(default_factory=dict)
    creds_loaded: bool = False
    creds: str | None = None  # base64 user:password
    creds_source: str = ""


class RegistryClient:
    """One registry host. Thread-safe: transfers of several threads share the session and tokens."""

    def __init__(self, host: str, options: RegistryOptions | None = None) -> None:
        self.host = host
        self.options = options or RegistryOptions()
        self.plain_http = self.options.uses_plain_http(host)
        self._oras = oras.provider.Registry(hostname=host, insecure=self.plain_http,
                                            tls_verify=not self.options.insecure, auth_backend="token")
        self.session: requests.Session = self._oras.session
        #: Passed with every request, as oras-py does: a session-wide ``verify=False`` would lose to
        #: REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in requests' merge of the environment.
        self._verify = not self.options.insecure
        adapter = _BlockAdapter(pool_connections=4, pool_maxsize=max(10, self.options.pool_size))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.base = f"{'http' if self.plain_http else 'https'}://{host}"
        self._auth = _AuthState()
        self._auth_lock = threading.Lock()
        #: True/False once known: does the registry serve the OCI referrers API?
        self.referrers_api: bool | None = None
        self.counts: dict[str, int] = {}
        self._counts_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistryClient({self.host!r})"

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def _load_creds(self) -> str | None:
        """Basic credentials (base64 ``user:password``) for this host from the Docker config, or None."""
        return load_credentials(self.host, self._auth, self.options)

    def _auth_headers(self, scope: str) -> dict[str, str]:
        state = self._auth
        if state.scheme == "basic" and state.creds:
            return {"Authorization": f"Basic {state.creds}"}
        if state.scheme == "bearer":
            token = state.tokens.get(scope)
            if token:
                return {"Authorization": f"Bearer {token}"}
        return {}

    def _authenticate(self, response: requests.Response, scope: str, sent: dict[str, str]) -> None:
        """Answer a 401: load credentials, choose Basic or fetch a bearer token for ``scope``."""
        challenge = response.headers.get("WWW-Authenticate", "")
        kind = challenge.split(" ", 1)[0].strip().lower()
        with self._auth_lock:
            creds = self._load_creds()
            where = self._auth.creds_source
            if kind == "basic":
                if creds is None:
                    raise RegistryAuthError(
                        f"{self.host}: authentication required (401) and no credentials for {self.host} in {where}; "
                        f"run `ocigc login {self.host}` (or docker login), pass --username with --password-stdin, "
                        "or point --registry-config (DOCKER_CONFIG) at a config that has them")
                if sent.get("Authorization", "").startswith("Basic "):
                    raise RegistryAuthError(f"{self.host}: the credentials for {self.host} from {where} were "
                                            "rejected (401)")
                self._auth.scheme = "basic"
                return
            if kind == "bearer":
                parsed = oras_auth_utils.parse_auth_header(challenge)
                if not parsed.realm:
                    raise RegistryAuthError(f"{self.host}: 401 with a bearer challenge without a realm")
                if sent.get("Authorization", "").startswith("Bearer ") and \
                        self._auth.tokens.get(scope) != sent["Authorization"][7:]:
                    return  # another thread already fetched a newer token for this scope
                backend = self._oras.auth
                backend._basic_auth = creds
                try:
                    token = backend.request_token(parsed)
                except requests.RequestException as e:
                    raise RegistryAuthError(f"{self.host}: cannot reach the token service {parsed.realm} "
                                            f"({_short(e)})") from None
                if not token:
                    how = f"with the credentials from {where}" if creds else \
                        f"anonymously (no credentials for {self.host} in {where})"
                    raise RegistryAuthError(f"{self.host}: the token service {parsed.realm} refused a token for "
                                            f"{parsed.scope or 'the registry'} {how}")
                if sent.get("Authorization") == f"Bearer {token}":
                    raise RegistryAuthError(f"{self.host}: access denied for {parsed.scope or 'the registry'} "
                                            f"(401 with a fresh token)")
                self._auth.scheme = "bearer"
                self._auth.tokens[scope] = token
                return
            raise RegistryAuthError(f"{self.host}: 401 without a usable WWW-Authenticate challenge "
                                    f"({challenge[:80] or 'none'})")

    # --- the request loop ----------------------------------------------------------------------
    def _send(self, method: str, url: str, scope: str, *, headers: dict[str, str] | None = None,
              data: bytes | None = None, stream: bool = False, allow_redirects: bool = True) -> requests.Response:
        """One request with at most two re-authentications; network errors are raised (not retried)."""
        for attempt in range(3):
            sent = {**(headers or {}), **self._auth_headers(scope)}
            response = self.session.request(method, url, headers=sent, data=data, stream=stream,
                                            allow_redirects=allow_redirects, timeout=self.options.timeout,
                                            verify=self._verify)
            if response.status_code != 401 or attempt == 2:
                return response
            response.close()
            self._authenticate(response, scope, sent)
        raise AssertionError("unreachable")

    def request(self, method: str, url: str, scope: str, *, headers: dict[str, str] | None = None,
                data: bytes | None = None, stream: bool = False, what: str = "") -> requests.Response:
        """A request with a replayable (or no) body: transient failures are retried with back-off."""
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                response = self._send(method, url, scope, headers=headers, data=data, stream=stream)
            except requests.exceptions.SSLError as e:
                raise RegistryUnavailable(f"{self.host}: TLS error ({_tls_problem(e)}); for a plain-HTTP registry "
                                          "pass --plain-http, to skip verification --insecure") from None
            except (requests.ConnectionError, requests.Timeout) as e:
                problem = _connection_problem(e)
            else:
                if response.status_code not in TRANSIENT_STATUS:
                    return response
                problem = f"{response.status_code} {response.reason}"
                retry_after = _retry_after(response)
                response.close()
            if attempt >= self.options.retries:
                self._give_up(problem, what or f"{method} {urllib.parse.urlsplit(url).path}", attempt + 1)
            time.sleep(backoff_delay(attempt, self.options, retry_after))
            self._count("retries")
            attempt += 1

    def _give_up(self, problem: str, what: str, attempts: int) -> NoReturn:
        hint = ""
        if "refused" in problem and not self.plain_http:
            hint = " (is it running? a plain-HTTP registry needs --plain-http)"
        raise RegistryUnavailable(f"{self.host}: {problem} after {attempts} attempt(s) ({what}){hint}")

    def _url(self, path: str) -> str:
        return f"{self.base}{path}"

    def _location(self, response: requests.Response) -> str:
        loc = response.headers.get("Location", "")
        if not loc:
            raise RegistryRejected(f"{self.host}: upload session without a Location header", response.status_code)
        return urllib.parse.urljoin(self.base + "/", loc)

    # --- general ---------------------------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/: reachable, a registry, and our credentials (if it wants any) work."""
        response = self.request("GET", self._url("/v2/"), "", what="GET /v2/")
        response.close()
        if response.status_code == 404:
            raise RegistryRejected(f"{self.host}: no registry API at {self.base}/v2/ (404)", 404)
        if response.status_code >= 400:
            _raise_for(response, f"{self.host}: GET /v2/")

    def catalog(self) -> list[str]:
        """Every repository name (``/v2/_catalog``, paginated)."""
        out: list[str] = []
        url: str | None = self._url(f"/v2/_catalog?n={PAGE_SIZE}")
        while url:
            response = self.request("GET", url, "catalog", what="GET /v2/_catalog")
            if response.status_code != 200:
                response.close()
                raise RegistryRejected(f"{self.host}: the catalog is not available ({response.status_code}); "
                                       "name the repositories with --repo", response.status_code)
            out.extend(_json(response).get("repositories") or [])
            url = self._next_page(response)
        return out

    def _next_page(self, response: requests.Response) -> str | None:
        m = _LINK_NEXT.search(response.headers.get("Link", ""))
        return urllib.parse.urljoin(self.base + "/", m.group(1)) if m else None

    def tags(self, repo: str) -> list[str]:
        """Tags of ``repo`` (paginated); [] when the repository does not exist."""
        out: list[str] = []
        url: str | None = self._url(f"/v2/{repo}/tags/list?n={PAGE_SIZE}")
        while url:
            response = self.request("GET", url, repo, what=f"GET tags of {repo}")
            if response.status_code == 404:
                response.close()
                return out
            if response.status_code != 200:
                _raise_for(response, f"{self.host}/{repo}: tags list")
            out.extend(_json(response).get("tags") or [])
            url = self._next_page(response)
        return out

    # --- manifests -------------------------------------------------------------------------------
    def head_manifest(self, repo: str, ref: str) -> ManifestInfo | None:
        response = self.request("HEAD", self._url(f"/v2/{repo}/manifests/{ref}"), repo,
                                headers={"Accept": MANIFEST_ACCEPT}, what=f"HEAD {repo}:{ref}")
        response.close()
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            _raise_for(response, f"{self.host}/{repo}: HEAD manifest {ref}")
        raw_digest = response.headers.get("Docker-Content-Digest")
        try:
            digest = Digest(raw_digest) if raw_digest else None
        except InvalidDigest:
            digest = None
        return ManifestInfo(digest, _media_type(response), int(response.headers.get("Content-Length") or -1))

    def get_manifest(self, repo: str, ref: str) -> tuple[bytes, str, Digest]:
        """Raw bytes, media type and digest of a manifest; a digest reference is verified."""
        response = self.request("GET", self._url(f"/v2/{repo}/manifests/{ref}"), repo,
                                headers={"Accept": MANIFEST_ACCEPT}, what=f"GET {repo}:{ref}")
        if response.status_code == 404:
            response.close()
            raise BlobNotFound(f"{self.host}/{repo}: manifest {ref} not found")
        if response.status_code != 200:
            _raise_for(response, f"{self.host}/{repo}: GET manifest {ref}")
        raw = response.content
        if len(raw) > MAX_MANIFEST_BYTES:
            raise RegistryRejected(f"{self.host}/{repo}: manifest {ref} is larger than {MAX_MANIFEST_BYTES} bytes")
        media_type = _media_type(response) or _own_media_type(raw)
        if ref.partition(":")[0] in ("sha256", "sha384", "sha512") and ":" in ref:
            want = Digest(ref)
            got = Digest.from_bytes(raw, want.algorithm)
            if got != want:
                raise IntegrityError(f"{self.host}/{repo}: manifest {ref} has content hashing to {got}")
            return raw, media_type, want
        header = response.headers.get("Docker-Content-Digest", "")
        algorithm = header.partition(":")[0] if header.partition(":")[0] in ("sha384", "sha512") else "sha256"
        return raw, media_type, Digest.from_bytes(raw, algorithm)

    def put_manifest(self, repo: str, ref: str, raw: bytes, media_type: str) -> dict[str, str]:
        """PUT raw manifest bytes with their media type; returns the response's digest and OCI-Subject."""
        response = self.request("PUT", self._url(f"/v2/{repo}/manifests/{ref}"), repo,
                                headers={"Content-Type": media_type}, data=raw, what=f"PUT manifest {repo}:{ref}")
        response.close()
        if response.status_code not in (200, 201):
            code, message = _error_of(response)
            raise RegistryRejected(f"{self.host}/{repo}: manifest {ref} ({media_type}) refused: "
                                   f"{response.status_code} {code}{': ' if message else ''}{message}",
                                   response.status_code, code)
        self._count("manifest_put")
        return {"digest": response.headers.get("Docker-Content-Digest", ""),
                "subject": response.headers.get("OCI-Subject", "")}

    def delete_manifest(self, repo: str, digest: str) -> None:
        """DELETE a manifest by digest (the registry drops its tags too); BlobNotFound when absent."""
        response = self.request("DELETE", self._url(f"/v2/{repo}/manifests/{digest}"), f"{repo}#delete",
                                what=f"DELETE manifest {repo}@{digest}")
        response.close()
        if response.status_code in (200, 202):
            self._count("manifest_delete")
            return
        if response.status_code == 404:
            raise BlobNotFound(f"{self.host}/{repo}: manifest {digest} not found")
        if response.status_code == 405:
            raise RegistryRejected(f"{self.host}/{repo}: the registry does not allow deletes (405)", 405)
        _raise_for(response, f"{self.host}/{repo}: DELETE manifest {digest}")

    # --- referrers -------------------------------------------------------------------------------
    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]] | None:
        """The referrers API's descriptors for ``digest``; None when the registry has no referrers API."""
        if self.referrers_api is False:
            return None
        out: list[dict[str, Any]] = []
        url: str | None = self._url(f"/v2/{repo}/referrers/{digest}")
        while url:
            response = self.request("GET", url, repo, headers={"Accept": OCI_INDEX}, what=f"GET referrers {digest}")
            if response.status_code != 200 or "json" not in response.headers.get("Content-Type", ""):
                response.close()
                if response.status_code in (404, 405, 400) and self.referrers_api is None:
                    self.referrers_api = False
                return out or None
            self.referrers_api = True
            doc = _json(response)
            out.extend(m for m in doc.get("manifests") or [] if isinstance(m, dict))
            url = self._next_page(response)
        return out

    # --- blobs -----------------------------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self.request("HEAD", self._url(f"/v2/{repo}/blobs/{digest}"), repo, what=f"HEAD blob {digest}")
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        _raise_for(response, f"{self.host}/{repo}: HEAD blob {digest}")

    def open_blob(self, repo: str, digest: str) -> ResponseStream:
        where = f"{self.host}/{repo}@{digest}"
        response = self.request("GET", self._url(f"/v2/{repo}/blobs/{digest}"), repo, stream=True,
                                what=f"GET blob {digest}")
        if response.status_code == 404:
            response.close()
            raise BlobNotFound(f"{where}: blob not found")
        if response.status_code != 200:
            _raise_for(response, f"{where}: GET blob")
        return ResponseStream(response, where)

    def read_blob(self, repo: str, digest: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        with self.open_blob(repo, digest) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise RegistryRejected(f"{self.host}/{repo}@{digest}: larger than {limit} bytes")
        return data

    def upload_blob(self, repo: str, digest: str, size: int, open_source: Callable[[], tuple[BinaryIO, int]],
                    on_bytes: Callable[[int], None] | None = None, mount_from: str | None = None) -> str:
        """Store a blob: ``"mounted"`` (cross-repository mount from ``mount_from``) or ``"uploaded"``.

        ``open_source`` opens the source afresh for each attempt and gives its actual size. The
        body is streamed; after a 401 or a broken connection the upload restarts from the POST.
        """
        attempt = 0
        while True:
            try:
                return self._upload_once(repo, digest, size, open_source, on_bytes, mount_from)
            except _Restart as r:
                if not r.transient:
                    self._count("upload_restarts")
                    continue  # re-authenticated: restart at once (does not use up a retry)
                if attempt >= self.options.retries:
                    self._give_up(str(r), f"upload of {digest} to {repo}", attempt + 1)
                time.sleep(backoff_delay(attempt, self.options, r.retry_after))
                self._count("retries")
                attempt += 1

    def _upload_once(self, repo: str, digest: str, size: int, open_source: Callable[[], tuple[BinaryIO, int]],
                     on_bytes: Callable[[int], None] | None, mount_from: str | None) -> str:
        url = self._url(f"/v2/{repo}/blobs/uploads/")
        if mount_from:
            url += "?" + urllib.parse.urlencode({"mount": digest, "from": mount_from})
        scope = repo
        try:
            response = self._send("POST", url, scope, headers={"Content-Length": "0"}, data=b"")
        except requests.exceptions.SSLError as e:
            raise RegistryUnavailable(f"{self.host}: TLS error ({_tls_problem(e)})") from None
        except (requests.ConnectionError, requests.Timeout) as e:
            raise _Restart(_connection_problem(e), transient=True) from None
        response.close()
        if mount_from and response.status_code == 201:
            self._count("mounts")
            return "mounted"
        if mount_from and response.status_code in (401, 403, 404, 405):
            # A token for one repository may not cover the other (or mounts are off): plain upload.
            return self._upload_once(repo, digest, size, open_source, on_bytes, None)
        if response.status_code in TRANSIENT_STATUS:
            raise _Restart(f"{response.status_code} {response.reason}", True, _retry_after(response))
        if response.status_code != 202:
            _raise_for(response, f"{self.host}/{repo}: starting the upload of {digest}")
        put_url = self._location(response)
        put_url += ("&" if urllib.parse.urlsplit(put_url).query else "?") + urllib.parse.urlencode({"digest": digest})
        src, actual = open_source()
        body: _UploadBody | None = None
        try:
            if actual >= 0 and actual != size:
                raise IntegrityError(f"blob {digest}: the source holds {actual} bytes, its descriptor says {size}")
            data: Any = b"" if size == 0 else _UploadBody(src, size, on_bytes)
            body = data if isinstance(data, _UploadBody) else None
            headers = {"Content-Type": "application/octet-stream", **self._auth_headers(scope)}
            try:
                response = self.session.request("PUT", put_url, data=data, headers=headers,
                                                timeout=self.options.timeout, verify=self._verify)
            except Exception as e:
                self._source_or_network(e, body, on_bytes, digest)
        finally:
            src.close()
        response.close()
        if response.status_code == 401:
            self._undo(on_bytes, body)
            self._authenticate(response, scope, headers)
            raise _Restart("re-authenticated", transient=False)
        if response.status_code in TRANSIENT_STATUS:
            self._undo(on_bytes, body)
            raise _Restart(f"{response.status_code} {response.reason}", True, _retry_after(response))
        if response.status_code not in (200, 201, 204):
            code, message = _error_of(response)
            if code in ("DIGEST_INVALID", "SIZE_INVALID"):
                raise IntegrityError(f"{self.host}/{repo}: the registry refused blob {digest}: {code} "
                                     f"({message or 'content does not match its digest'})")
            _raise_for(response, f"{self.host}/{repo}: upload of {digest}")
        self._count("uploads")
        return "uploaded"

    def _source_or_network(self, e: Exception, body: _UploadBody | None, on_bytes: Callable[[int], None] | None,
                           digest: str) -> NoReturn:
        """A failed PUT: the source's fault (reported as is) or the network's (restart the upload)."""
        err = body.error if body is not None else None
        self._undo(on_bytes, body)
        if err is None and not isinstance(e, (requests.RequestException, OSError)):
            raise e  # not the network's: the caller's own (an abort raised from on_bytes, say)
        if err is not None:
            if isinstance(err, StreamInterrupted):
                raise _Restart(str(err), transient=True) from None
            if isinstance(err, OcigcError):
                raise err from None
            raise TransferError(f"blob {digest}: cannot read the source ({_short(err)})") from None
        if isinstance(e, requests.exceptions.SSLError):
            raise RegistryUnavailable(f"{self.host}: TLS error ({_tls_problem(e)})") from None
        if isinstance(e, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)):
            raise _Restart(_connection_problem(e), transient=True) from None
        raise e

    @staticmethod
    def _undo(on_bytes: Callable[[int], None] | None, body: _UploadBody | None) -> None:
        """Take back the progress of an attempt that will be repeated."""
        if on_bytes is not None and body is not None and body.sent:
            on_bytes(-body.sent)
            body.sent = 0


# --- credentials ----------------------------------------------------------------------------------
def add_to_referrers_tag(client: RegistryClient, repo: str, subject: str, descriptors: list[dict[str, Any]]) -> bool:
    """A registry without the referrers API: add ``descriptors`` to the index tagged ``<alg>-<hex>``
    of ``subject`` (distribution spec, "Referrers Tag Schema"), merged with what it lists already.
    False when every descriptor was listed (nothing written)."""
    tag = referrers_tag(subject)
    try:
        raw, _, _ = client.get_manifest(repo, tag)
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise ValueError
    except (BlobNotFound, ValueError):
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    listed = {m.get("digest") for m in doc["manifests"] if isinstance(m, dict)}
    added = [d for d in descriptors if d["digest"] not in listed]
    if not added:
        return False
    doc["manifests"].extend(added)
    client.put_manifest(repo, tag, json.dumps(doc, separators=(",", ":")).encode(), doc.get("mediaType") or OCI_INDEX)
    return True


def remove_from_referrers_tag(client: RegistryClient, repo: str, subject: str, digest: str) -> bool:
    """Drop ``digest`` from the index tagged ``<alg>-<hex>`` of ``subject`` (a referrer deleted on a
    registry without the referrers API, as oras-go does); the index goes when it lists nothing more.
    False when it did not list it."""
    tag = referrers_tag(subject)
    try:
        raw, _, index_digest = client.get_manifest(repo, tag)
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            return False
    except (BlobNotFound, ValueError):
        return False
    kept = [m for m in doc["manifests"] if not (isinstance(m, dict) and m.get("digest") == digest)]
    if len(kept) == len(doc["manifests"]):
        return False
    if kept:
        doc["manifests"] = kept
        client.put_manifest(repo, tag, json.dumps(doc, separators=(",", ":")).encode(),
                            doc.get("mediaType") or OCI_INDEX)
    client.delete_manifest(repo, str(index_digest))
    return True


def load_credentials(host: str, state: _AuthState, options: RegistryOptions) -> str | None:
    """Basic credentials (base64 ``user:password``) for ``host``: ``--username``/``--password``, else
    the registry config (``auths``, ``credHelpers``, ``credsStore``), or None; remembered in ``state``."""
    if state.creds_loaded:
        return state.creds
    given = None
    if options.username is not None and options.password is not None:
        given = Credentials(options.username, options.password)
    found = find_credentials(host, options.docker_config, given)
    state.creds, state.creds_source, state.creds_loaded = found.basic, found.source, True
    return state.creds


__all__ = ["RegistryClient", "ResponseStream", "load_credentials"]
