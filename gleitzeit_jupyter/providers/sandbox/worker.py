"""The forked worker that runs user code inside the sandbox (stdlib only).

A fresh worker runs one request and exits; a session worker loops over requests sent on its
command pipe and keeps its namespace. Results go to the supervisor on a private pipe as one
frame; stdout/stderr are separate pipes, so printing can never masquerade as a result.
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
    from . import codec, protocol
except ImportError:  # inside the container the bootstrap has installed these modules
    import gleitzeit_codec as codec  # type: ignore[import-not-found,no-redef]
    import gleitzeit_protocol as protocol  # type: ignore[import-not-found,no-redef]

_MAX_REPR = 64 * 1024
_HEAVY = ("numpy", "pandas", "matplotlib", "matplotlib.pyplot", "scipy", "PIL")
_SHOWN: set[int] = set()  # figures already sent as a run's value, not to be sent twice


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
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(
        2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1
    )
    me = os.getpid()
    namespace = _fresh_namespace()
    decoder = protocol.FrameDecoder()
    _warm_up(decoder)
    counter = 0
    while True:
        try:
            data = os.read(cmd, 1 << 16)
        except KeyboardInterrupt:  # an interrupt that arrived between runs
            continue
        if not data:
            os._exit(0)
        for req in decoder.feed(data):
            counter += 1
            _send(res, _run(req, namespace, me, "<sandbox>" if once else f"<cell-{counter}>"))
            if once:
                os._exit(0)


def _warm_up(decoder: Any) -> None:
    """Walk the run path once on a dummy request, in a throwaway namespace.

    A fresh worker shares its memory copy-on-write with the supervisor; the first touch of
    each page (refcounts!) costs a page fault and a copy. Doing that here, while the worker
    waits as a spare, keeps those faults out of the next run's latency."""
    frame = protocol.encode_frame({"op": "run", "code": "_ = repr(1)", "inputs": {}, "returns": []})
    for req in decoder.feed(frame):
        result = _run(req, _fresh_namespace(), os.getpid(), "<warm-up>")
        protocol.encode_frame(result)
    sys.stdout.write("")


def _send(fd: int, message: dict[str, Any]) -> None:
    try:
        data = memoryview(protocol.encode_frame(message))
    except Exception as exc:  # e.g. a value too large for one frame
        data = memoryview(
            protocol.encode_frame(
                {
                    "exit_code": 1,
                    "outputs": [],
                    "values": {},
                    "error": {"ename": type(exc).__name__, "evalue": str(exc), "traceback": ""},
                }
            )
        )
    while data:
        data = data[os.write(fd, data) :]


def _fresh_namespace() -> dict[str, Any]:
    outputs: list[dict[str, Any]] = []
    ns: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "__gleitzeit_outputs__": outputs,
    }

    def display(*objs: Any) -> None:
        for obj in objs:
            outputs.append({"type": "display_data", "data": mime_bundle(obj)})

    ns["display"] = display
    return ns


def _run(
    req: dict[str, Any], ns: dict[str, Any], me: int, filename: str = "<sandbox>"
) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = ns["__gleitzeit_outputs__"]
    outputs.clear()
    _SHOWN.clear()
    exit_code, error = 0, None
    code = str(req.get("code") or "")
    try:
        for name, enc in (req.get("inputs") or {}).items():
            ns[name] = codec.decode_value(enc)
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
                outputs.append({"type": "execute_result", "data": mime_bundle(value)})
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # KeyboardInterrupt too: the host's timeout interrupt
        exit_code = 1
        error = _error(exc, filename)
    if os.getpid() != me:  # a child forked by user code must never answer for the run
        os._exit(0)
    _collect_figures(outputs)
    values: dict[str, Any] = {}
    for name in req.get("returns") or []:
        if name not in ns:
            error = error or {
                "ename": "NameError",
                "evalue": f"name {name!r} is not defined",
                "traceback": "",
            }
            continue
        try:
            values[name] = codec.encode_value(ns[name], arrow=bool(req.get("arrow")), name=name)
        except Exception as exc:
            error = error or {"ename": "CodecError", "evalue": str(exc), "traceback": ""}
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
        "imported": imported,
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
            if isinstance(rendered, str):
                data[mime] = rendered
    png = _figure_png(obj)
    if png is not None:
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
            outputs.append(
                {"type": "display_data", "data": {"text/plain": repr(fig), "image/png": png}}
            )
    plt.close("all")
