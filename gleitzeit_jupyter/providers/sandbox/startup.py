"""What the supervisor does once, before it serves (stdlib only; runs inside the container):
connect the kernel's direct channel, and seed matplotlib's font cache."""

from __future__ import annotations

import os

__all__ = ["direct_channel", "seed_matplotlib_cache"]

MiB = 1024 * 1024


def direct_channel() -> int | None:
    """The kernel's unix socket (see channel.py), when it is mounted here and answers: a
    descriptor, else None (the attach stream on stdin/stdout is the channel). The token
    leaves the environment before any worker could inherit it."""
    path = os.environ.pop("GLEITZEIT_CHANNEL", None)
    token = os.environ.pop("GLEITZEIT_CHANNEL_TOKEN", "")
    if not path or not token:
        return None
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        sock.sendall(token.encode())
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * MiB)
    except OSError:
        sock.close()
        return None
    fd = sock.detach()
    os.set_inheritable(fd, False)
    return fd


def seed_matplotlib_cache() -> None:
    # The image may carry matplotlib's font list (see image.py): copy it into the writable
    # config dir, or the first plot in this container spends ~0.6 s rebuilding it.
    src = "/usr/share/gleitzeit/matplotlib"
    dst = os.environ["MPLCONFIGDIR"]
    try:
        names = [n for n in os.listdir(src) if n.startswith("fontlist")]
        os.makedirs(dst, exist_ok=True)
        for name in names:
            with open(os.path.join(src, name), "rb") as fin:
                with open(os.path.join(dst, name), "wb") as fout:
                    fout.write(fin.read())
        if os.getuid() == 0:
            # Runs have uids of their own: they may add files here (swept with the run) but
            # not change ours (sticky, and the cache files stay read-only).
            os.chmod(dst, 0o1777)
    except OSError:
        pass
