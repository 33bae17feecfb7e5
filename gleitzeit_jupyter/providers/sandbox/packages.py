"""Derived sandbox images with extra Python packages, built without network in the sandbox.

The sandbox has no network and no registry may be assumed, so wheels are fetched on the host
with the host's own pip configuration (``pip download`` for the image's Python and platform),
then installed inside a container of the base image that has no network, only those wheels
mounted read-only, and the result committed as ``gleitzeit-sandbox:pkgs-<hash>``. The hash
covers the base image and the normalised package list, so the same request is a cache hit.

What the base image already holds (the kernel's numpy, pandas, ...) stays: the resolver on the
host sees those distributions as stub wheels pinned to the installed versions, so it picks
packages that work with them instead of replacing them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable

import docker
import docker.errors

from .image import DEFAULT_IMAGE, IMAGE_LABEL, image_exists

__all__ = ["PACKAGES_LABEL", "build_packages", "derived_name", "read_requirements"]

PACKAGES_LABEL = "gleitzeit.sandbox.packages"
_REQ = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([<>=!~]=?[A-Za-z0-9.*+!-]+(,[<>=!~]=?[A-Za-z0-9.*+!-]+)*)?$"
)
_PROBE = (
    "import json, os, sys, sysconfig, platform\n"
    "found = {}\n"
    "for p in sys.path:\n"
    "    try: names = os.listdir(p or '.')\n"
    "    except OSError: continue\n"
    "    for e in names:\n"
    "        stem, _, kind = e.rpartition('.')\n"
    "        if kind in ('dist-info', 'egg-info') and '-' in stem:\n"
    "            n, _, v = stem.partition('-')\n"
    "            found.setdefault(n.lower().replace('_', '-'), v.split('-')[0])\n"
    "print(json.dumps({'python': '%d.%d' % sys.version_info[:2],\n"
    "                  'machine': platform.machine(), 'installed': found}))\n"
)

Log = Callable[[str], None]


def read_requirements(path: str) -> list[str]:
    """Package requirements from a requirements file: one per line, comments dropped."""
    with open(path, encoding="utf-8") as fh:
        lines = [ln.split("#", 1)[0].strip() for ln in fh]
    return [ln for ln in lines if ln]


def _normalise(packages: list[str]) -> list[str]:
    out = []
    for spec in packages:
        spec = re.sub(r"\s*([<>=!~,]+)\s*", r"\1", spec.strip())
        if not _REQ.fullmatch(spec):
            # Only names and version pins: no URLs, paths or pip options reach pip.
            raise ValueError(f"not a package requirement: {spec!r}")
        out.append(spec.lower())
    if not out:
        raise ValueError("no packages given")
    return sorted(set(out))


def derived_name(client: docker.DockerClient, packages: list[str], base: str) -> str:
    """``gleitzeit-sandbox:pkgs-<hash>`` of the base image's id and the package list."""
    base_id = client.images.get(base).id
    key = json.dumps([base_id, _normalise(packages)]).encode()
    return f"gleitzeit-sandbox:pkgs-{hashlib.sha256(key).hexdigest()[:12]}"


def _probe(client: docker.DockerClient, base: str) -> dict[str, object]:
    out = client.containers.run(
        base, ["python3", "-I", "-c", _PROBE], network_mode="none", remove=True
    )
    return json.loads(out.decode())  # type: ignore[no-any-return]


def _stub_wheel(folder: str, name: str, version: str) -> None:
    # A wheel with metadata only: to the resolver, "already installed at this version".
    dist = re.sub(r"[-.]+", "_", name)
    path = os.path.join(folder, f"{dist}-{version}-py3-none-any.whl")
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")


def _download(packages: list[str], probe: dict[str, object], wheels: str, log: Log) -> None:
    installed = probe.get("installed") or {}
    assert isinstance(installed, dict)
    stubs = tempfile.mkdtemp(prefix="gleitzeit-stubs-")
    constraints = os.path.join(stubs, "constraints.txt")
    try:
        pins = []
        for name, version in sorted(installed.items()):
            if re.fullmatch(r"[A-Za-z0-9._-]+", name) and re.fullmatch(
                r"[0-9][0-9A-Za-z.+]*", version
            ):
                _stub_wheel(stubs, name, version)
                pins.append(f"{name}=={version}")
        with open(constraints, "w") as fh:
            fh.write("\n".join(pins) + "\n")
        py = str(probe.get("python") or "3.11")
        machine = str(probe.get("machine") or "x86_64")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--dest",
            wheels,
            "--only-binary=:all:",
            "--python-version",
            py,
            "--implementation",
            "cp",
            "--abi",
            f"cp{py.replace('.', '')}",
            "--abi",
            "abi3",
            "--abi",
            "none",
            *[
                a
                for tag in ("manylinux2014", "manylinux_2_28", "manylinux_2_17", "linux")
                for a in ("--platform", f"{tag}_{machine}")
            ],
            "--find-links",
            stubs,
            "--constraint",
            constraints,
            "pip",
            *packages,
        ]
        log("$ pip download " + " ".join(packages) + f" (python {py}, {machine})")
        # Run from the fresh wheels directory, not the caller's cwd: ``-m`` puts the cwd first
        # on pip's import path, and the kernel's cwd holds files from the sandbox (a pip.py
        # there would run on the host; a file named like a package would be built as one).
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=wheels)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"pip download failed: {tail}")
    finally:
        shutil.rmtree(stubs, ignore_errors=True)
    for entry in os.listdir(wheels):  # the stubs must not be installed over the real ones
        name, version = entry.split("-")[:2]
        if installed.get(name.lower().replace("_", "-")) == version:
            os.remove(os.path.join(wheels, entry))


def build_packages(
    packages: list[str],
    *,
    base: str = DEFAULT_IMAGE,
    force: bool = False,
    client: docker.DockerClient | None = None,
    log: Log = print,
) -> str:
    """Build (or find, when cached) the image ``base`` + ``packages``; returns its name."""
    client = client or docker.from_env()
    packages = _normalise(packages)
    name = derived_name(client, packages, base)
    if not force and image_exists(client, name):
        log(f"image {name} exists ({' '.join(packages)}); nothing to do")
        return name
    probe = _probe(client, base)
    wheels = tempfile.mkdtemp(prefix="gleitzeit-wheels-")
    os.chmod(wheels, 0o755)
    try:
        _download(packages, probe, wheels, log)
        pip = next(f for f in os.listdir(wheels) if f.startswith("pip-"))
        log(f"installing {len(os.listdir(wheels)) - 1} wheels into {base} (no network)")
        install = (
            f"python3 /wheels/{pip}/pip install --no-index --find-links /wheels --no-cache-dir"
            " --break-system-packages --no-warn-script-location --disable-pip-version-check "
            + " ".join(f"'{p}'" for p in packages)
        )
        container = client.containers.create(
            base,
            ["sh", "-c", install],
            network_mode="none",
            volumes={wheels: {"bind": "/wheels", "mode": "ro"}},
        )
        try:
            container.start()
            status = container.wait()
            logs = container.logs().decode(errors="replace")
            if status.get("StatusCode") != 0:
                tail = "\n".join(logs.strip().splitlines()[-3:])
                raise RuntimeError(f"installing in the image failed: {tail}")
            repo, _, tag = name.rpartition(":")
            container.commit(
                repository=repo,
                tag=tag,
                changes=[
                    f"LABEL {IMAGE_LABEL}=1",
                    "LABEL gleitzeit.sandbox.variant=packages",
                    f"LABEL {PACKAGES_LABEL}={json.dumps(' '.join(packages))}",
                    f"LABEL gleitzeit.sandbox.base={base}",
                    'CMD ["python3"]',
                ],
            )
        finally:
            container.remove(force=True)
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    log(f"built {name}")
    return name
