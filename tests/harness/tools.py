"""Make and inspect layouts with the real tools: umoci, skopeo, oras-py; run the ocigc CLI.

Every helper raises ``ToolError`` (with the tool's stderr) when the tool fails, and reports a
missing tool through ``common.unavailable`` (skip outside CI, fail in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tests.harness.common import ComponentUnavailable, loopback_env, missing_command_message, unavailable
from tests.harness.servers import RegistryServer

REF_NAME = "org.opencontainers.image.ref.name"


class ToolError(RuntimeError):
    """A real tool exited non-zero."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"{' '.join(args)} -> exit {result.returncode}\nstdout: {result.stdout.strip()}\n"
            f"stderr: {result.stderr.strip()}"
        )


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(missing_command_message(name))
    return path


def _run(args: Sequence[str], check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), capture_output=True, text=True, timeout=timeout, env=loopback_env(), stdin=subprocess.DEVNULL
    )
    if check and result.returncode != 0:
        raise ToolError(args, result)
    return result


def read_index(layout: Path | str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(layout, "index.json").read_text())
    return data


def tag_digest(layout: Path | str, tag: str) -> str | None:
    """The digest ``index.json`` lists under ``tag`` (the last such entry), or None."""
    found = None
    for entry in read_index(layout).get("manifests") or []:
        if (entry.get("annotations") or {}).get(REF_NAME) == tag:
            found = entry["digest"]
    return found


# ---------------------------------------------------------------------------------------- umoci


def init_layout(layout_dir: Path | str) -> None:
    """``umoci init`` (which wants a path that does not exist yet; an empty directory is removed first).

    A non-empty directory without ``oci-layout`` gets the same three entries written directly.
    """
    layout = Path(layout_dir)
    if layout.is_dir() and not any(layout.iterdir()):
        layout.rmdir()
    if not layout.exists():
        _run([_tool("umoci"), "init", "--layout", str(layout)])
        return
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def umoci_image(
    layout_dir: Path | str,
    tag: str,
    files: Mapping[str, bytes],
    base: str | None = None,
    config_cmd: Sequence[str] | None = None,
) -> str:
    """Build an image with umoci in ``layout_dir`` (created with ``umoci init`` if needed); its digest.

    ``files`` maps paths inside the root file system (``etc/hello.txt``) to contents; they make
    one new layer. Without ``base`` the image starts empty (``umoci new``); with ``base`` (a tag
    of the same layout) it stacks on that image, sharing its layers. ``tag`` is (re)pointed at
    the result; the old target of ``tag``, like umoci's intermediate manifests and configs, is
    left in ``blobs/`` for gc. The unpacked bundle lives in a local temp dir, never on a mount.
    """
    umoci = _tool("umoci")
    layout = Path(layout_dir)
    if not (layout / "oci-layout").exists():
        init_layout(layout)
    with tempfile.TemporaryDirectory(prefix="ocigc-umoci-") as tmp:
        bundle = Path(tmp) / "bundle"
        source = base
        scratch = None
        if source is None:
            scratch = f"ocigc-build-{uuid.uuid4().hex[:12]}"
            _run([umoci, "new", "--image", f"{layout}:{scratch}"])
            source = scratch
        try:
            _run([umoci, "unpack", "--rootless", "--image", f"{layout}:{source}", str(bundle)])
            rootfs = bundle / "rootfs"
            for rel, data in files.items():
                target = rootfs / rel.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            _run([umoci, "repack", "--image", f"{layout}:{tag}", str(bundle)])
            if config_cmd is not None:
                _run([umoci, "config", "--image", f"{layout}:{tag}", *[f"--config.cmd={c}" for c in config_cmd]])
        finally:
            if scratch is not None:
                _run([umoci, "rm", "--image", f"{layout}:{scratch}"], check=False)
    digest = tag_digest(layout, tag)
    if digest is None:
        raise RuntimeError(f"umoci built {layout}:{tag} but index.json has no such tag")
    return digest


def umoci_gc(layout: Path | str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``umoci gc --layout LAYOUT`` (the reference collector; it dies on non-digest blob names)."""
    return _run([_tool("umoci"), "--log", "info", "gc", "--layout", str(layout)], check=check)


def umoci_tags(layout: Path | str) -> list[str]:
    """``umoci ls``: the tags of a layout."""
    out = _run([_tool("umoci"), "ls", "--layout", str(layout)]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------- skopeo


def _creds_flag(flag: str, creds: tuple[str, str] | None) -> list[str]:
    return [f"--{flag}-creds", f"{creds[0]}:{creds[1]}"] if creds else []


def skopeo_copy(
    src: str,
    dst: str,
    all_images: bool = False,
    src_creds: tuple[str, str] | None = None,
    dest_creds: tuple[str, str] | None = None,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """``skopeo copy SRC DST`` for ``oci:PATH:TAG`` and ``docker://HOST/REPO:TAG`` references.

    TLS verification is off on any ``docker://`` side (the harness registries are plain HTTP).
    ``all_images`` copies every image of an index (``--all``).
    """
    args = [_tool("skopeo"), "copy", "--retry-times", "0"]
    if all_images:
        args.append("--all")
    if src.startswith("docker://"):
        args.append("--src-tls-verify=false")
    if dst.startswith("docker://"):
        args.append("--dest-tls-verify=false")
    args += _creds_flag("src", src_creds) + _creds_flag("dest", dest_creds)
    args += [*extra, src, dst]
    return _run(args)


def skopeo_inspect(ref: str, raw: bool = False, creds: tuple[str, str] | None = None) -> dict[str, Any]:
    """``skopeo inspect [--raw] REF`` parsed as JSON (with ``raw``: the manifest itself)."""
    args = [_tool("skopeo"), "inspect", "--retry-times", "0"]
    if raw:
        args.append("--raw")
    if ref.startswith("docker://"):
        args.append("--tls-verify=false")
    if creds:
        args.append(f"--creds={creds[0]}:{creds[1]}")
    args.append(ref)
    data: dict[str, Any] = json.loads(_run(args).stdout)
    return data


# --------------------------------------------------------------------------------------- oras-py


def oras_registry(registry: RegistryServer) -> Any:
    """An ``oras.provider.Registry`` for a harness registry (plain HTTP, basic auth when it has it).

    ``Registry.login`` is not used: it writes ``~/.docker/config.json``.
    """
    import oras.provider

    if registry.credentials is None:
        return oras.provider.Registry(hostname=registry.host, insecure=True)
    client = oras.provider.Registry(hostname=registry.host, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth(*registry.credentials)
    return client


def oras_push_to_registry(
    registry: RegistryServer,
    repo: str,
    tag: str,
    files: Mapping[str, bytes],
    media_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
    subject: Mapping[str, Any] | None = None,
) -> str:
    """``oras push`` of ``files`` (name -> content) to ``registry/repo:tag`` through oras-py; the digest.

    Each file becomes one layer titled with its name (``media_type`` or oras's default
    ``application/vnd.oci.image.layer.v1.tar``); the config is oras's empty ``{}``.
    ``subject`` is a descriptor dict (mediaType, digest, size): oras-py's ``push(subject=str)``
    is broken, so it is turned into ``oras.oci.Subject``.
    """
    import oras.oci

    client = oras_registry(registry)
    oras_subject = oras.oci.Subject(**dict(subject)) if subject is not None else None
    with tempfile.TemporaryDirectory(prefix="ocigc-oras-") as tmp:
        paths = []
        for name, data in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            paths.append(f"{path}:{media_type}" if media_type else str(path))
        response = client.push(
            target=registry.ref(repo, tag),
            files=paths,
            disable_path_validation=True,
            manifest_annotations=dict(annotations) if annotations else None,
            subject=oras_subject,
            quiet=True,
        )
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        raise RuntimeError(f"oras push to {registry.ref(repo, tag)} returned no digest ({response.status_code})")
    return str(digest)


def registry_put_manifest(registry: RegistryServer, repo: str, reference: str, raw: bytes, media_type: str) -> str:
    """PUT raw manifest bytes (an index, say: oras-py's ``upload_manifest`` only takes image manifests)."""
    import requests

    response = requests.put(
        f"{registry.url}/v2/{repo}/manifests/{reference}",
        data=raw,
        headers={"Content-Type": media_type},
        auth=registry.credentials,
        timeout=30,
        proxies={"http": "", "https": ""},
    )
    if response.status_code != 201:
        raise RuntimeError(f"PUT manifest {repo}:{reference} -> {response.status_code} {response.text[:300]}")
    return str(response.headers["Docker-Content-Digest"])


# ----------------------------------------------------------------------------------------- ocigc


class OcigcResult(NamedTuple):
    """What ``run_ocigc`` returns; unpacks as ``rc, out, err, ops``."""

    returncode: int
    stdout: str
    stderr: str
    op_counts: dict[str, int] | None


def ocigc_command() -> list[str]:
    """The installed ``ocigc`` next to this interpreter, else ``python -m ocigc``."""
    script = Path(sys.executable).with_name("ocigc")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ocigc"]


def run_ocigc(
    *args: str | os.PathLike[str],
    stats: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    timeout: float = 300,
) -> OcigcResult:
    """Run the ocigc CLI in a subprocess: (returncode, stdout, stderr, storage-op counts or None).

    With ``stats`` the CLI gets ``OCIGC_STORAGE_STATS=<temp file>`` and writes its
    ``GLOBAL_COUNTER`` there at exit; the counts come back as a dict (None when it wrote none).
    ``env`` adds to (does not replace) the inherited environment.
    """
    child_env = loopback_env()
    child_env["NO_COLOR"] = "1"
    if env:
        child_env.update(env)
    with tempfile.TemporaryDirectory(prefix="ocigc-stats-") as tmp:
        stats_file = Path(tmp) / "stats.json"
        if stats:
            child_env["OCIGC_STORAGE_STATS"] = str(stats_file)
        else:
            child_env.pop("OCIGC_STORAGE_STATS", None)
        result = subprocess.run(
            [*ocigc_command(), *(os.fspath(a) for a in args)],
            capture_output=True,
            text=True,
            env=child_env,
            cwd=cwd,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            timeout=timeout,
        )
        counts = None
        if stats and stats_file.exists():
            try:
                counts = {str(k): int(v) for k, v in json.loads(stats_file.read_text()).items()}
            except (ValueError, AttributeError):
                counts = None
    return OcigcResult(result.returncode, result.stdout, result.stderr, counts)


__all__ = [
    "ComponentUnavailable",
    "OcigcResult",
    "ToolError",
    "init_layout",
    "ocigc_command",
    "oras_push_to_registry",
    "oras_registry",
    "read_index",
    "registry_put_manifest",
    "run_ocigc",
    "skopeo_copy",
    "skopeo_inspect",
    "tag_digest",
    "umoci_gc",
    "umoci_image",
    "umoci_tags",
]
