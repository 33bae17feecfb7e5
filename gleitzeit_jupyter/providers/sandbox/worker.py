"""The forked worker that runs user code inside the sandbox (stdlib only).

A fresh worker runs one request and exits; a session worker loops over requests sent on its
command pipe and keeps its namespace. Results go to the supervisor on a private pipe as one
frame; stdout/stderr are separate pipes, so printing can never masquerade as a result.

User code shares this process, so it can break anything here; it must at worst break its own
run. The result is therefore written through references taken before user code ran, any
failure after user code becomes an error frame, and the supervisor and the kernel check the
frame again (sizes, types, names) instead of trusting it.
"""

from __future__ import annotations

import ast
import base64
import builtins
import io
import linecache
import os
import signal
import sys
import traceback
from typing import Any

try:  # on the host this is a normal package module
    from . import display_shim, protocol, workdir
    from .values import collect_values, receive_inputs
except ImportError:  # inside the container the bootstrap has installed these modules
    import gleitzeit_display_shim as display_shim  # type: ignore[import-not-found,no-redef]
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]
    import gleitzeit_workdir as workdir  # type: ignore[import-not-found,no-redef]
    from gleitzeit_values import (  # type: ignore[import-not-found,no-redef]
        collect_values,
        receive_inputs,
    )

_MAX_REPR = 64 * 1024
MiB = 1024 * 1024
# Caps used when a request names none (the kernel always sends its own).
_DEFAULT_LIMITS = {
    "max_mime_bytes": 4 * MiB,
    "max_outputs": 100,
    "max_outputs_bytes": 32 * MiB,
    "max_value_bytes": 32 * MiB,
    "max_values_bytes": 64 * MiB,
    "max_files": 1000,
    "max_files_bytes": 32 * MiB,
    "max_columns": 10_000,
}
_HEAVY = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot", "scipy", "PIL")
_SHOWN: set[int] = set()  # figures already sent as a run's value, not to be sent twice
_LIMITS: dict[str, int] = dict(_DEFAULT_LIMITS)  # the current run's
_USED = [0]  # bytes of the current run's outputs so far


def _keep(outputs: list[dict[str, Any]], out: dict[str, Any]) -> None:
    """Add an output unless the run's outputs would pass ``max_outputs_bytes``; the first
    one past it leaves a note. Outputs are dropped as they come: held until the run ends,
    many large ones would exhaust the sandbox's memory before any cap applied."""
    size = sum(len(v) for v in out["data"].values() if isinstance(v, str))
    cap = _LIMITS["max_outputs_bytes"]
    if _USED[0] + size <= cap:
        _USED[0] += size
        outputs.append(out)
    elif _USED[0] <= cap:
        _USED[0] = cap + 1
        note = (
            f"[gleitzeit: later outputs not shown: over the {cap:,} byte limit (max_outputs_bytes)]"
        )
        outputs.append({"type": "display_data", "data": {"text/plain": note}})


# Sends one frame to the supervisor; display() uses it so outputs keep their place among
# printed text (set by worker_main, from references taken before user code ran).
_SEND: list[Any] = []
# Bytes written so far to stdout and stderr: a display output carries them, so the supervisor
# puts it after exactly that much text (text printed after it may already be in the pipe).
_WRITTEN = [0, 0]


class _CountingFd(io.RawIOBase):
    def __init__(self, fd: int, slot: int) -> None:
        self._fd, self._slot = fd, slot

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, data: Any) -> int:
        n = os.write(self._fd, data)
        _WRITTEN[self._slot] += n
        return n


def _counted(fd: int, slot: int, line_buffering: bool) -> io.TextIOWrapper:
    raw = io.BufferedWriter(_CountingFd(fd, slot))
    return io.TextIOWrapper(
        raw, encoding="utf-8", errors="backslashreplace", line_buffering=line_buffering
    )


def worker_main(res: int, out: int, err: int, cmd: int, once: bool) -> None:
    """Serve requests from ``cmd``: one and exit (``once``, a fresh run) or many (session)."""
    os.setpgid(0, 0)  # own process group: the supervisor kills the run's whole tree at once
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.close(out)
    os.close(err)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the host's interrupt
    try:  # be the OOM killer's first choice, never the supervisor
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass
    sys.stdout = _counted(1, 0, line_buffering=False)
    sys.stderr = _counted(2, 1, line_buffering=True)
    me = os.getpid()
    namespace = _fresh_namespace()
    decoder = protocol.FrameDecoder()
    send = _sender(res)
    _SEND.append(send)
    read, exit_now = os.read, os._exit
    _warm_up(decoder)
    counter = 0
    while True:
        try:
            data = read(cmd, 1 << 20)
        except KeyboardInterrupt:  # an interrupt that arrived between runs
            continue
        except BaseException:  # user code closed or replaced the command pipe
            exit_now(0)
        if not data:
            exit_now(0)
        try:
            requests = decoder.feed(data)
        except BaseException:
            exit_now(0)
        for req in requests:
            counter += 1
            try:
                result = _run(req, namespace, me, "<sandbox>" if once else f"<cell-{counter}>")
            except BaseException as exc:  # user code broke what runs after it
                result = _failure(exc)
            if os.getpid() == me:  # a child forked by user code must never answer
                send(result)
            if os.getpid() != me:
                exit_now(0)
            if once:
                # Stay until the supervisor, having measured this process (CPU, peak
                # memory), kills it or closes the pipe: an exiting process has no figures.
                try:
                    read(cmd, 1)
                finally:
                    exit_now(0)


def _warm_up(decoder: Any) -> None:
    """Walk the run path once on a dummy request, in a throwaway namespace.

    A fresh worker shares its memory copy-on-write with the supervisor; the first touch of
    each page (refcounts!) costs a page fault and a copy. Doing that here, while the worker
    waits as a spare, keeps those faults out of the next run's latency."""
    frame = protocol.encode_frame({"op": "run", "code": "_ = repr(1)", "inputs": {}, "returns": []})
    send = _SEND[:]
    _SEND.clear()  # nothing of the warm-up may reach the supervisor
    for req in decoder.feed(frame):
        result = _run(req, _fresh_namespace(), os.getpid(), "<warm-up>")
        protocol.encode_frame(result)
    _SEND.extend(send)
    sys.stdout.write("")


def _phase(name: str) -> None:
    """Tell the supervisor what the run is doing: if it runs out of memory, the message can
    say whether moving values (not the user's code) took the memory."""
    if _SEND:
        _SEND[0]({"op": "phase", "phase": name})


def _failure(exc: BaseException) -> dict[str, Any]:
    try:
        what = f"{type(exc).__name__}: {exc}"[:1000]
    except BaseException:
        what = "an exception that cannot be shown"
    return {
        "exit_code": 1,
        "outputs": [],
        "values": {},
        "error": {
            "ename": "SandboxError",
            "evalue": f"the run could not report its result ({what})",
            "traceback": "",
        },
    }


def _sender(fd: int) -> Any:
    """A function writing one result frame (and its attachments) to ``fd``, built from
    references taken now."""
    encode, parts_of, write_all = protocol.encode_frame, protocol.encode_message, protocol.write_all
    write = os.write

    def send(message: dict[str, Any]) -> None:
        attachments = message.pop("attachments", None) or ()
        try:
            parts = parts_of(message, attachments)
        except BaseException as exc:  # e.g. a value too large for one frame
            parts = [encode(_failure(exc))]
        try:
            write_all(fd, parts, write)
        except BaseException:
            pass  # the pipe is gone (user code closed it): the supervisor reports the run

    return send


def _fresh_namespace() -> dict[str, Any]:
    outputs: list[dict[str, Any]] = []
    ns: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "__gleitzeit_outputs__": outputs,
    }

    def display(*objs: Any, **_: Any) -> None:
        for obj in objs:
            output = {"type": "display_data", "data": mime_bundle(obj)}
            size = sum(len(v) for v in output["data"].values() if isinstance(v, str))
            if not _SEND or _USED[0] + size > _LIMITS["max_outputs_bytes"]:
                _keep(outputs, output)  # the warm-up, or past the cap: dropped with a note
                continue
            _USED[0] += size
            # Text printed so far goes first: the supervisor reads the pipes up to here
            # before it passes this output on.
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
            _SEND[0]({"op": "display", "output": output, "at": list(_WRITTEN)})

    ns["display"] = display
    display_shim.install(display)
    return ns


def _run(
    req: dict[str, Any], ns: dict[str, Any], me: int, filename: str = "<sandbox>"
) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = ns["__gleitzeit_outputs__"]
    outputs.clear()
    _SHOWN.clear()
    _USED[0] = 0
    limits = dict(_DEFAULT_LIMITS)
    if isinstance(req.get("limits"), dict):
        limits.update({k: v for k, v in req["limits"].items() if type(v) is int})
    _LIMITS.update(limits)
    exit_code, error = 0, None
    code = str(req.get("code") or "")
    try:
        workdir.enter()
        workdir.receive(req.get("files"))
        _phase("inputs")
        receive_inputs(req, ns)
        _phase("code")
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body[-1].value)
            tree.body.pop()
        exec(compile(tree, filename, "exec"), ns)
        if last is not None:
            value = eval(compile(last, filename, "eval"), ns)
            if value is not None:
                _keep(outputs, {"type": "execute_result", "data": mime_bundle(value)})
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # KeyboardInterrupt too: the host's timeout interrupt
        exit_code = 1
        error = _error(exc, filename)
    if os.getpid() != me:  # a child forked by user code must never answer for the run
        os._exit(0)
    _collect_figures(outputs)
    _phase("values")
    values, attachments, value_error = collect_values(req, ns, limits)
    error = error or value_error
    files: dict[str, str] = {}
    try:
        files, files_note = workdir.collect(
            req.get("download"), limits["max_files"], limits["max_files_bytes"]
        )
    except Exception as exc:
        files_note = f"--download failed: {type(exc).__name__}: {exc}"
    if files_note:
        error = error or {"ename": "FileTransferError", "evalue": files_note, "traceback": ""}
    del outputs[limits["max_outputs"] :]
    if len(outputs) == limits["max_outputs"]:
        note = f"[gleitzeit: outputs past the limit of {limits['max_outputs']} not shown]"
        outputs.append({"type": "display_data", "data": {"text/plain": note}})
    if error is not None and exit_code == 0:
        exit_code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Which heavy libraries this run imported: the supervisor may preload them for later runs.
    imported = [m for m in _HEAVY if m in sys.modules]
    return {
        "exit_code": exit_code,
        "error": error,
        "outputs": list(outputs),
        "values": values,
        "files": files,
        "imported": imported,
        "attachments": attachments,
    }


def _error(exc: BaseException, filename: str) -> dict[str, Any]:
    tb = exc.__traceback__
    # Hide our own frames: the user's traceback starts at their code.
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    return {"ename": type(exc).__name__, "evalue": str(exc), "traceback": "".join(lines)}


def mime_bundle(obj: Any) -> dict[str, str]:
    """Jupyter-style MIME bundle: text/plain always, HTML and PNG when the object offers them."""
    try:
        text = repr(obj)
    except Exception as exc:
        text = f"<unprintable {type(obj).__name__}: {exc}>"
    data = {"text/plain": text[:_MAX_REPR]}
    cap = _LIMITS["max_mime_bytes"]
    for mime, method in (
        ("text/html", "_repr_html_"),
        ("text/markdown", "_repr_markdown_"),
        ("image/svg+xml", "_repr_svg_"),
    ):
        fn = getattr(obj, method, None)
        if callable(fn):
            try:
                rendered = fn()
            except Exception:
                continue
            if isinstance(rendered, str) and len(rendered) > cap:
                data["text/plain"] += (
                    f"\n[gleitzeit: {mime} of {len(rendered):,} bytes not shown: over the"
                    f" {cap:,} byte limit (max_mime_bytes)]"
                )
            elif isinstance(rendered, str):
                data[mime] = rendered
    png = _figure_png(obj)
    if png is None and callable(getattr(obj, "_repr_png_", None)):
        try:
            png = obj._repr_png_()
        except Exception:
            png = None
        png = png if isinstance(png, str) else None
    if png is not None and len(png) <= cap:
        data["image/png"] = png
    return data


def _figure_png(obj: Any) -> str | None:
    mpl_figure = sys.modules.get("matplotlib.figure")
    if mpl_figure is None or not isinstance(obj, mpl_figure.Figure):
        axes = sys.modules.get("matplotlib.axes")
        if axes is None or not isinstance(obj, axes.Axes):
            return None
        obj = obj.figure
    _SHOWN.add(id(obj))
    buf = io.BytesIO()
    obj.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _collect_figures(outputs: list[dict[str, Any]]) -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return
    for num in plt.get_fignums():
        fig = plt.figure(num)
        if id(fig) in _SHOWN:
            continue
        try:
            png = _figure_png(fig)
        except Exception:
            continue
        if png is not None:
            _keep(
                outputs,
                {"type": "display_data", "data": {"text/plain": repr(fig), "image/png": png}},
            )
    plt.close("all")
