"""Build the sandbox image locally, without a container registry.

No registry is reachable on our build machines (nor in CI), so the default path builds a Debian
root filesystem with ``debootstrap`` from the apt mirror the host already uses and
``docker import``s it. Where a registry answers, ``base="registry"`` builds from the official
``python:3.12-slim`` image instead. Either way the image holds only Python (plus numpy, pandas
and matplotlib unless ``minimal``): the supervisor is passed on the container's command line,
so it always matches the installed package and the image never needs a rebuild for it.
"""

from __future__ import annotations

import glob
import io
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

import docker
import docker.errors

__all__ = [
    "DEFAULT_IMAGE",
    "IMAGE_LABEL",
    "MINIMAL_IMAGE",
    "Mirror",
    "apt_mirror",
    "build_image",
    "image_exists",
]

DEFAULT_IMAGE = "gleitzeit-sandbox:latest"
MINIMAL_IMAGE = "gleitzeit-sandbox:minimal"
IMAGE_LABEL = "gleitzeit.sandbox.image"

# python3 (not python3-minimal): the minimal package lacks json, which the supervisor needs.
BASE_PACKAGES = ["python3"]
SCIENCE_PACKAGES = ["python3-numpy", "python3-pandas", "python3-matplotlib"]
REGISTRY_BASE = "python:3.12-slim"

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
    if not force and image_exists(client, name):
        log(f"image {name} exists; nothing to do (use --force to rebuild)")
        return name
    packages = BASE_PACKAGES + ([] if minimal else SCIENCE_PACKAGES)
    variant = "minimal" if minimal else "default"
    if base == "registry":
        _build_from_registry(client, name, minimal, variant, log)
    elif base == "debootstrap":
        found = apt_mirror() if mirror is None else Mirror(mirror, suite or "bookworm")
        if suite:
            found = Mirror(found.uri, suite)
        _build_with_debootstrap(client, name, packages, found, variant, log)
    else:
        raise ValueError(f"unknown base {base!r}: use 'debootstrap' or 'registry'")
    log(f"built {name}")
    return name


def _build_with_debootstrap(
    client: docker.DockerClient,
    name: str,
    packages: list[str],
    mirror: Mirror,
    variant: str,
    log: Log,
) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (apt-get install debootstrap)")
    root = tempfile.mkdtemp(prefix="gleitzeit-rootfs-")
    try:
        cmd = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            mirror.suite,
            root,
            mirror.uri,
        ]
        log(f"$ {' '.join(cmd)}")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        if "python3-matplotlib" in packages:
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
            f"LABEL {IMAGE_LABEL}=1",
            f"LABEL gleitzeit.sandbox.variant={variant}",
            "ENV LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg",
            'CMD ["python3"]',
        ]
        repo, _, tag = name.rpartition(":")
        log(f"$ tar -C {root} -c . | docker import - {name}")
        tar = subprocess.Popen(
            ["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE
        )
        assert tar.stdout is not None
        try:
            client.api.import_image_from_stream(
                _chunks(tar.stdout), repository=repo, tag=tag, changes=changes
            )
        finally:
            tar.stdout.close()
            if tar.wait() != 0:
                raise RuntimeError("tar of the root filesystem failed")
    finally:
        shutil.rmtree(root, ignore_errors=True)


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
    client: docker.DockerClient, name: str, minimal: bool, variant: str, log: Log
) -> None:
    pip = "" if minimal else ("RUN pip install --no-cache-dir numpy pandas matplotlib pyarrow\n")
    dockerfile = (
        f"FROM {REGISTRY_BASE}\n{pip}"
        f"LABEL {IMAGE_LABEL}=1 gleitzeit.sandbox.variant={variant}\n"
        "ENV PYTHONDONTWRITEBYTECODE=1 MPLBACKEND=Agg\n"
        'CMD ["python3"]\n'
    )
    log(f"building {name} from {REGISTRY_BASE}")
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=name, rm=True, pull=True)
