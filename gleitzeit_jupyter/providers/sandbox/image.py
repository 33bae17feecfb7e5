"""Build the sandbox image locally, without a container registry.

No registry is reachable on our build machines (nor in CI), so the default path builds a Debian
root filesystem with ``debootstrap`` from the apt mirror the host already uses and
``docker import``s it. Where a registry answers, ``base="registry"`` builds from the official
``python:3.12-slim`` image instead. Either way the image holds only Python plus, unless
``minimal``, the kernel's own data stack (numpy, pandas, pyarrow, matplotlib at the versions the
building kernel has): their wheels are fetched on the host with the kernel's pip configuration
and installed offline, so a value means the same on both sides. The image records that set (a
label and ``/usr/share/gleitzeit/stack.json``) and is rebuilt only when it changes. The
supervisor is passed on the container's command line, so it always matches the installed
package and the image never needs a rebuild for it.
"""

from __future__ import annotations

import glob
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import docker
import docker.errors

from .stack import kernel_stack, stack_key

__all__ = [
    "DEFAULT_IMAGE",
    "IMAGE_LABEL",
    "MINIMAL_IMAGE",
    "STACK_LABEL",
    "VERSIONS_LABEL",
    "Mirror",
    "apt_mirror",
    "build_image",
    "image_exists",
    "image_stack",
    "image_stack_key",
    "import_rootfs",
]

DEFAULT_IMAGE = "gleitzeit-sandbox:latest"
MINIMAL_IMAGE = "gleitzeit-sandbox:minimal"
IMAGE_LABEL = "gleitzeit.sandbox.image"
#: Content hash of the data stack an image holds (see :func:`stack.stack_key`).
STACK_LABEL = "gleitzeit.sandbox.stack"
#: The data stack an image holds, as JSON ``{"numpy": "2.4.6", ...}``.
VERSIONS_LABEL = "gleitzeit.sandbox.versions"
#: The same inside the image, for code that runs there.
MANIFEST = "usr/share/gleitzeit/stack.json"

# python3 (not python3-minimal): the minimal package lacks json, which the supervisor needs.
BASE_PACKAGES = ["python3"]
REGISTRY_BASE = "python:3.12-slim"
# The image's Python and platform, for ``pip download`` (Debian bookworm's python3).
IMAGE_PYTHON = "3.11"
_PLATFORMS = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "linux")
# debootstrap builds for the host's architecture, so the wheels are for it too.
_MACHINE = platform.machine() or "x86_64"
# What else decides which wheels an image holds: part of its cache key.
_BUILD_BASE = f"python{IMAGE_PYTHON}/{_MACHINE}/bookworm"

Log = Callable[[str], None]


@dataclass(frozen=True)
class Mirror:
    uri: str
    suite: str


def _plain_suite(suite: str) -> bool:
    # "bookworm" is a release; "bookworm-updates" / "bookworm-security" are overlays that
    # debootstrap cannot bootstrap from.
    return bool(re.fullmatch(r"[a-z]+", suite))


def apt_mirror(root: str = "/etc/apt") -> Mirror:
    """The Debian mirror and release apt is configured with (deb822 ``.sources`` or ``.list``)."""
    for path in sorted(glob.glob(os.path.join(root, "sources.list.d", "*.sources"))):
        with open(path, encoding="utf-8") as fh:
            stanzas = re.split(r"\n\s*\n", fh.read())
        for stanza in stanzas:
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            suites = [s for s in fields.get("suites", "").split() if _plain_suite(s)]
            uris = fields.get("uris", "").split()
            if suites and uris:
                return Mirror(uris[0], suites[0])
    lists = [os.path.join(root, "sources.list")]
    lists += sorted(glob.glob(os.path.join(root, "sources.list.d", "*.list")))
    for path in lists:
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                # deb [options] URI suite components...
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m and _plain_suite(m.group(2)):
                    return Mirror(m.group(1), m.group(2))
    raise RuntimeError(
        "no Debian mirror found in /etc/apt; pass --mirror URI (and --suite) to build the image"
    )


def image_exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_stack(client: docker.DockerClient, name: str) -> dict[str, str] | None:
    """The data stack image ``name`` records (None: absent, or built before images did)."""
    try:
        labels = client.images.get(name).labels or {}
    except docker.errors.ImageNotFound:
        return None
    try:
        versions = json.loads(labels.get(VERSIONS_LABEL) or "null")
    except ValueError:
        return None
    return versions if isinstance(versions, dict) else None


def image_stack_key(versions: dict[str, str]) -> str:
    """The cache key of a default image holding ``versions``: with the image's Python,
    architecture and Debian release, which decide the wheels as much as the versions do."""
    return stack_key(versions, python=_BUILD_BASE)


def _cached(client: docker.DockerClient, name: str, key: str | None) -> bool:
    try:
        labels = client.images.get(name).labels or {}
    except docker.errors.ImageNotFound:
        return False
    return key is None or labels.get(STACK_LABEL) == key


def build_image(
    name: str | None = None,
    *,
    minimal: bool = False,
    base: str = "debootstrap",
    mirror: str | None = None,
    suite: str | None = None,
    force: bool = False,
    client: docker.DockerClient | None = None,
    log: Log = print,
) -> str:
    """Build (or find, when cached) the sandbox image and return its name."""
    name = name or (MINIMAL_IMAGE if minimal else DEFAULT_IMAGE)
    if ":" not in name.rsplit("/", 1)[-1]:
        name = f"{name}:latest"
    client = client or docker.from_env()
    versions = {} if minimal else kernel_stack()
    key = None if minimal else image_stack_key(versions)
    if not force and _cached(client, name, key):
        log(f"image {name} exists; nothing to do (use --force to rebuild)")
        return name
    if not minimal and image_exists(client, name):
        log(f"image {name} holds another data stack than this kernel; rebuilding")
    variant = "minimal" if minimal else "default"
    labels = {IMAGE_LABEL: "1", "gleitzeit.sandbox.variant": variant}
    if not minimal:
        labels[STACK_LABEL] = str(key)
        labels[VERSIONS_LABEL] = json.dumps(versions, sort_keys=True)
    if base == "registry":
        _build_from_registry(client, name, versions, labels, log)
    elif base == "debootstrap":
        found = apt_mirror() if mirror is None else Mirror(mirror, suite or "bookworm")
        if suite:
            found = Mirror(found.uri, suite)
        _build_with_debootstrap(client, name, found, versions, labels, log)
    else:
        raise ValueError(f"unknown base {base!r}: use 'debootstrap' or 'registry'")
    log(f"built {name}")
    return name


def download_stack(versions: dict[str, str], dest: str, log: Log) -> None:
    """Fetch wheels of ``versions`` (and their dependencies, and pip itself) for the image's
    Python into ``dest``, on the host with this kernel's pip configuration."""
    pins = [f"{n}=={v}" for n, v in sorted(versions.items())]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--dest",
        dest,
        "--only-binary=:all:",
        "--python-version",
        IMAGE_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        f"cp{IMAGE_PYTHON.replace('.', '')}",
        "--abi",
        "abi3",
        "--abi",
        "none",
        *[a for tag in _PLATFORMS for a in ("--platform", f"{tag}_{_MACHINE}")],
        "pip",
        *pins,
    ]
    log(f"$ pip download {' '.join(pins)} (python {IMAGE_PYTHON})")
    # From the wheels directory: ``-m`` puts the cwd first on pip's import path.
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=dest)
    if done.returncode != 0:
        tail = "; ".join(done.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"pip download of the kernel's data stack failed: {tail}")


def _install_stack(root: str, versions: dict[str, str], log: Log) -> None:
    """Install the kernel's data stack into the root filesystem, offline (chroot, no index)."""
    wheels = os.path.join(root, "tmp", "gleitzeit-wheels")
    os.makedirs(wheels)
    try:
        download_stack(versions, wheels, log)
        pip = next(f for f in os.listdir(wheels) if f.startswith("pip-"))
        pins = [f"{n}=={v}" for n, v in sorted(versions.items())]
        chroot = shutil.which("chroot") or "/usr/sbin/chroot"
        cmd = [
            chroot,
            root,
            "python3",
            f"/tmp/gleitzeit-wheels/{pip}/pip",
            "install",
            "--no-index",
            "--find-links",
            "/tmp/gleitzeit-wheels",
            "--no-cache-dir",
            "--break-system-packages",
            "--no-warn-script-location",
            "--disable-pip-version-check",
            *pins,
        ]
        log(f"installing {len(os.listdir(wheels)) - 1} wheels into the image (no network)")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = "; ".join(done.stderr.strip().splitlines()[-2:])
            raise RuntimeError(f"installing the data stack in the image failed: {tail}")
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    manifest = os.path.join(root, MANIFEST)
    os.makedirs(os.path.dirname(manifest), exist_ok=True)
    with open(manifest, "w", encoding="utf-8") as fh:
        json.dump({"versions": versions, "key": image_stack_key(versions)}, fh, sort_keys=True)


def _build_with_debootstrap(
    client: docker.DockerClient,
    name: str,
    mirror: Mirror,
    versions: dict[str, str],
    labels: dict[str, str],
    log: Log,
) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    root = tempfile.mkdtemp(prefix="gleitzeit-rootfs-")
    try:
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            mirror.suite,
            root,
            mirror.uri,
        ]
        log(f"$ {' '.join(cmd)}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        if versions:
            _install_stack(root, versions, log)
        if "matplotlib" in versions:
            _prebuild_font_cache(root, log)
        # Shrink the image: package caches and docs are never used inside the sandbox.
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
        ):
            path = os.path.join(root, junk)
            if os.path.isdir(path):
                shutil.rmtree(path)
                os.makedirs(path)
        changes = [
            *(f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()),
            "ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg",
            'CMD ["python3"]',
        ]
        log(f"$ tar -C {root} -c . | docker import - {name}")
        import_rootfs(client, root, name, changes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def import_rootfs(client: docker.DockerClient, root: str, name: str, changes: list[str]) -> None:
    """``docker import`` the directory ``root`` as image ``name`` (``repo:tag``), tagged only
    once the whole tree was packed: docker takes an empty or partial stream for an image, and a
    tag on that would be found by the cache and used from then on."""
    tar = subprocess.Popen(
        ["tar", "-C", root, "--numeric-owner", "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None and tar.stderr is not None
    try:
        reply = client.api.import_image_from_stream(_chunks(tar.stdout), changes=changes)
    finally:
        tar.stdout.close()
        failed = tar.wait() != 0
        why = tar.stderr.read().decode(errors="replace").strip().splitlines()[-1:]
        tar.stderr.close()
    lines = [json.loads(line) for line in str(reply).splitlines() if line.strip()]
    image = next((m["status"] for m in reversed(lines) if "status" in m), None)
    if failed or not image:
        if image:
            try:
                client.images.remove(image)  # not forced: never an image tagged elsewhere
            except docker.errors.APIError:
                pass
        raise RuntimeError(f"tar of the root filesystem failed: {'; '.join(why) or 'no image'}")
    repo, _, tag = name.rpartition(":")
    client.api.tag(image, repo, tag)


#: Where the image keeps matplotlib's font list; the supervisor copies it into the writable
#: MPLCONFIGDIR at start, saving every container ~0.6 s on its first plot.
MPL_CACHE = "usr/share/gleitzeit/matplotlib"


def _prebuild_font_cache(root: str, log: Log) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"/{MPL_CACHE}",
    }
    os.makedirs(os.path.join(root, MPL_CACHE), exist_ok=True)
    log("building matplotlib's font cache inside the image")
    # chroot is looked up on the host's PATH (it lives in /usr/sbin); env is the image's.
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    try:
        done = subprocess.run(
            [chroot, root, "python3", "-c", "import matplotlib.pyplot"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        problem = done.stderr.strip().splitlines()[-1:] if done.returncode else None
    except (OSError, subprocess.SubprocessError) as exc:
        problem = [str(exc)]
    if problem:  # only a speed-up: the image works without it
        log(f"warning: no matplotlib font cache in the image ({problem})")


def _chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    # The docker SDK streams an iterable body with chunked transfer encoding.
    while chunk := stream.read(size):
        yield chunk


def _build_from_registry(
    client: docker.DockerClient,
    name: str,
    versions: dict[str, str],
    labels: dict[str, str],
    log: Log,
) -> None:
    pins = " ".join(f"{n}=={v}" for n, v in sorted(versions.items()))
    pip = f"RUN pip install --no-cache-dir {pins}\n" if pins else ""
    dockerfile = (
        f"FROM {REGISTRY_BASE}\n{pip}"
        f"LABEL {' '.join(f'{k}={json.dumps(v)}' for k, v in labels.items())}\n"
        "ENV PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg\n"
        'CMD ["python3"]\n'
    )
    log(f"building {name} from {REGISTRY_BASE}")
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=name, rm=True, pull=True)
