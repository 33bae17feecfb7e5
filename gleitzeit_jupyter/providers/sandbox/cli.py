"""``gleitzeit-sandbox``: command-line tools for the sandbox (today: building its image)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gleitzeit-sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    image = sub.add_parser("image", help="manage the sandbox image")
    image_sub = image.add_subparsers(dest="action", required=True)
    build = image_sub.add_parser("build", help="build the sandbox image (cached)")
    build.add_argument(
        "--minimal",
        action="store_true",
        help="python3 only, without the kernel's numpy/pandas/pyarrow/matplotlib",
    )
    build.add_argument(
        "--name", default=None, help="image name (default gleitzeit-sandbox:latest or :minimal)"
    )
    build.add_argument(
        "--base",
        choices=["debootstrap", "registry"],
        default="debootstrap",
        help="debootstrap from the apt mirror (default) or python:3.12-slim",
    )
    build.add_argument("--mirror", default=None, help="Debian mirror (default: apt's)")
    build.add_argument("--suite", default=None, help="Debian release (default: apt's)")
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.add_argument(
        "--packages",
        default=None,
        metavar="'PKG ...'",
        help="build a derived image with these packages (wheels fetched on the host)",
    )
    build.add_argument(
        "--requirements", default=None, metavar="FILE", help="like --packages, from a file"
    )
    build.add_argument(
        "--from", dest="base_image", default=None, help="base of a derived image (default: latest)"
    )
    args = parser.parse_args(argv)

    # Imported late so `--help` works without the docker SDK talking to anything.
    from .image import DEFAULT_IMAGE, build_image
    from .packages import build_packages, read_requirements

    try:
        if args.packages or args.requirements:
            packages = (args.packages or "").split()
            if args.requirements:
                packages += read_requirements(args.requirements)
            build_packages(packages, base=args.base_image or DEFAULT_IMAGE, force=args.force)
            return 0
        build_image(
            args.name,
            minimal=args.minimal,
            base=args.base,
            mirror=args.mirror,
            suite=args.suite,
            force=args.force,
        )
    except Exception as exc:  # one clear line for the shell, not a traceback
        print(f"gleitzeit-sandbox: image build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
