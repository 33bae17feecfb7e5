"""Per-run users and the sweep that ends a run for good (stdlib only, inside the container).

When the supervisor runs as root (with only SETUID, SETGID and KILL), every worker runs under
a uid of its own from :data:`RUN_UIDS`. That gives each run a boundary the kernel enforces:

* a run cannot signal, stop or trace another run's worker or the pre-forked spares;
* its files (umask 077) are unreadable to later runs;
* when it ends, a helper that takes on its uid calls ``kill(-1, SIGKILL)``, which reaches every
  process of that uid at once (daemons, ``setsid`` and double forks, pid-hoppers that change
  pid faster than ``/proc`` can be listed), then deletes everything that uid owns in the
  writable places (files, FIFOs, configs, a full disk) and its System V IPC objects.

"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from typing import Any

__all__ = [
    "RUN_UIDS",
    "WIPE_ROOTS",
    "become",
    "kill_all",
    "runnable",
    "running",
    "survivors",
    "wipe",
]

RUN_UIDS = range(20000, 20064)
WIPE_ROOTS = ("/tmp", "/dev/shm", "/dev/mqueue")


def become(uid: int) -> None:
    """Drop root for good: no groups, then gid and uid (real, effective and saved)."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def runnable(pid: int) -> bool:
    """The process exists and is neither stopped, traced nor a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"T", b"t", b"Z", b"X")


_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
# How deep the wipe follows directories it does not own (ours are moved up, see _wipe).
_FOREIGN_DEPTH = 64


def _wipe(root: str, uid: int) -> None:
    """Delete every file and directory of ``uid`` under ``root``.

    By directory descriptors, never by path: a chain of directories can be deeper than any
    path can name (PATH_MAX), and what is down there would otherwise stay. Each directory of
    ``uid`` is first moved up into ``root`` under a name of ours, so none is ever more than
    one level down, however deep it was made; it is then emptied and removed. Directories of
    others (``/tmp/.matplotlib``) are searched in place to a bounded depth.
    """
    try:
        root_fd = os.open(root, _DIR)
    except OSError:
        return
    # Each entry: the path of a directory relative to root, as names, and whether it is ours.
    todo: list[tuple[tuple[str, ...], bool]] = [((), False)]
    left: list[tuple[str, ...]] = []  # our directories, emptied, to remove
    try:
        while todo:
            names, mine = todo.pop()
            fd = _open_under(root_fd, names)
            if fd is None:
                continue
            try:
                for entry in list(os.scandir(fd)):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if not stat.S_ISDIR(st.st_mode):
                        if st.st_uid == uid:
                            with contextlib.suppress(OSError):
                                os.unlink(entry.name, dir_fd=fd)
                        continue
                    if st.st_uid != uid:
                        if len(names) < _FOREIGN_DEPTH:
                            todo.append(((*names, entry.name), False))
                        continue
                    with contextlib.suppress(OSError):
                        os.chmod(entry.name, 0o700, dir_fd=fd)  # the owner may open it again
                    # A name the run cannot have taken in advance to make the move fail.
                    flat = f".gleitzeit-wipe-{uid}-{os.urandom(8).hex()}"
                    try:
                        os.rename(entry.name, flat, src_dir_fd=fd, dst_dir_fd=root_fd)
                    except OSError:  # cannot move it: search it where it is
                        todo.append(((*names, entry.name), True))
                    else:
                        todo.append(((flat,), True))
            except OSError:
                pass
            finally:
                os.close(fd)
            if mine and names:
                left.append(names)
        # Children were reached after their parents: remove the deepest first.
        for names in reversed(left):
            parent = _open_under(root_fd, names[:-1])
            if parent is not None:
                with contextlib.suppress(OSError):
                    os.rmdir(names[-1], dir_fd=parent)
                os.close(parent)
    finally:
        os.close(root_fd)


def _open_under(root_fd: int, names: tuple[str, ...]) -> int | None:
    """A descriptor of the directory ``names`` below ``root_fd`` (never following links)."""
    fd = os.dup(root_fd)
    for name in names:
        try:
            nxt = os.open(name, _DIR, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _remove_ipc(uid: int) -> None:
    """System V shared memory, queues and semaphores outlive processes: remove this uid's."""
    libc: Any = None
    for kind, call in (("shm", "shmctl"), ("msg", "msgctl"), ("sem", "semctl")):
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                header, *rows = fh.read().splitlines()
        except OSError:
            continue
        names = header.split()
        try:
            id_col, uid_col = 1, names.index("uid")
        except ValueError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > uid_col and cols[uid_col] == str(uid):
                ipc_id = int(cols[id_col])
                if libc is None:  # loaded only when there is something to remove
                    import ctypes

                    libc = ctypes.CDLL(None, use_errno=True)
                if call == "semctl":
                    libc.semctl(ipc_id, 0, 0)  # IPC_RMID
                else:
                    getattr(libc, call)(ipc_id, 0, None)


def kill_all(uid: int) -> None:
    """Kill every process of ``uid`` at once.

    Called by the root supervisor, which takes on ``uid`` as its real and effective uid for
    the moment (the saved uid stays 0, so it can return): ``kill(-1)`` then reaches exactly
    that uid's processes, never PID 1 or the caller, in one pass under the kernel's task list
    lock, which a concurrent fork cannot escape.
    """
    os.setresuid(uid, uid, 0)
    try:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finally:
        os.setresuid(0, 0, 0)


def running(uid: int) -> bool:
    """Some process of ``uid`` is not yet a zombie (it could still be creating a file)."""
    return uid in survivors((uid,))[0]


_SIGKILL_BIT = 1 << (signal.SIGKILL - 1)
_PF_EXITING = 0x4  # task flag, /proc/PID/stat field 9


def _field(status: bytes, key: bytes) -> bytes:
    at = status.find(b"\n" + key + b":\t")
    if at < 0:
        return b""
    start = at + len(key) + 3
    end = status.find(b"\n", start)
    return status[start : end if end >= 0 else None]


def _task_dying(path: str, status: bytes) -> bool:
    """The task can never run its own code again: a SIGKILL is pending or it is exiting.

    A killed process stays in ``/proc`` (not yet a zombie) until the scheduler gives it the
    CPU to act on the signal, which on a busy host can take a while; until then it can at
    most finish a system call already under way.
    """
    for key in (b"SigPnd", b"ShdPnd"):
        try:
            if int(_field(status, key) or b"0", 16) & _SIGKILL_BIT:
                return True
        except ValueError:
            pass
    try:
        with open(f"{path}/stat", "rb") as fh:
            flags = int(fh.read().rsplit(b")", 1)[1].split()[6])
    except (OSError, IndexError, ValueError):
        return True  # gone meanwhile
    return bool(flags & _PF_EXITING)


def _dying(pid: str, status: bytes) -> bool:
    """Every task of the process is dying (see _task_dying) or dead."""
    if _field(status, b"Threads") == b"1":
        return _task_dying(f"/proc/{pid}", status)
    try:  # several threads, or a leader that exited before them: look at each
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        path = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{path}/status", "rb") as fh:
                task = fh.read(8192)
        except OSError:
            continue
        if _field(task, b"State")[:1] not in (b"Z", b"X") and not _task_dying(path, task):
            return False
    return True


def survivors(uids: Any) -> tuple[set[int], set[int]]:
    """In one pass over ``/proc``: the uids among ``uids`` with a process that is not yet a
    zombie (``live``), and those with one that is not even dying (``undying``: it escaped a
    kill and could still act)."""
    wanted = {b"%d" % uid: uid for uid in uids}
    live: set[int] = set()
    undying: set[int] = set()
    if not wanted:
        return live, undying
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                status = fh.read(8192)
        except OSError:
            continue
        uid = wanted.get(_field(status, b"Uid").split(b"\t", 1)[0])
        if uid is None:
            continue
        state = _field(status, b"State")[:1]
        # A zombie leader whose other threads still run is not done yet.
        if state in (b"Z", b"X") and _field(status, b"Threads") in (b"", b"0", b"1"):
            continue
        live.add(uid)
        if uid not in undying and not _dying(name, status):
            undying.add(uid)
    return live, undying


def wipe(uid: int) -> None:
    """Delete everything ``uid`` owns in the writable places, and its System V IPC objects
    (as ``uid``: only the owner may unlink from the sticky directories)."""
    os.setresuid(uid, uid, 0)
    try:
        for root in WIPE_ROOTS:
            _wipe(root, uid)
        _remove_ipc(uid)
    finally:
        os.setresuid(0, 0, 0)
