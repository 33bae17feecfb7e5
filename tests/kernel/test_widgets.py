"""The live status panel, asserted through its widget models in a real IPython kernel.

The kernel runs the real runtime (background loop thread) with an in-memory pool; the test
reads the kernel's IOPub like a front end and rebuilds every widget model from the comm
messages (see ``widget_client.py``), and clicks buttons by sending the front end's comm
messages back.
"""

from __future__ import annotations

import asyncio
import html
import http.server
import json
import re
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from widget_client import Kernel

from gleitzeit_jupyter.hub.balancing import STRATEGIES
from gleitzeit_jupyter.hub.snapshot import ERROR_FRESH_S
from gleitzeit_jupyter.kernel.widgets import (
    BREAKER_COLORS,
    HEALTH_COLORS,
    StatusPanel,
    fmt_ms,
    latency_svg,
    row_class,
)
from gleitzeit_jupyter.kernel.widgets.formatting import fmt_age
from gleitzeit_jupyter.kernel.widgets.loop import call_on_loop
from gleitzeit_jupyter.kernel.widgets.plot import plot_scale
from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider

SETUP = textwrap.dedent(
    """
    import asyncio, time
    from gleitzeit_jupyter.kernel.runtime import get_runtime
    from gleitzeit_jupyter.kernel.widgets import show_status
    from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider
    rt = get_runtime()
    pool = rt.get_or_create("memory", lambda: MemoryProvider(
        [MemoryConfig("a", latency=0.002), MemoryConfig("b", latency=0.004)],
        health_check_interval=0.3, unhealthy_threshold=1, healthy_threshold=1,
        breaker_failure_threshold=2, breaker_recovery_timeout=600, retries=0))
    def calls(n, **params):
        async def go():
            return await asyncio.gather(*(pool.execute("e", dict(params)) for _ in range(n)),
                                        return_exceptions=True)
        return rt.run(go())
    def on(instance, n):
        async def go():
            return await asyncio.gather(
                *(pool.execute("e", {}, instance=instance) for _ in range(n)),
                return_exceptions=True)
        return rt.run(go())
    async def sequential(n, latency):
        for _ in range(n):
            await pool.execute("e", {"latency": latency})
    """
)


@pytest.fixture(scope="module")
def kernel() -> Iterator[Kernel]:
    k = Kernel()
    try:
        k.execute(SETUP)
        yield k
    finally:
        k.close()


def _cell(k: Kernel, row: str, col: str):
    return k.widgets.one(f"gz-cell-{col}", row_class(row))


def _text(model) -> str:
    """What a cell reads (the name and error cells are HTML, for their hover text)."""
    return html.unescape(re.sub(r"<[^>]*>", "", model.state["value"]))


def _wait(k: Kernel, predicate, timeout: float = 8.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            # The rest of that refresh's messages (one refresh sends several) arrive within
            # milliseconds: take them too before the caller looks at related widgets.
            k.settle(0.5)
            return
        k.settle(0.2)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def test_rows_colours_and_aggregate(kernel: Kernel) -> None:
    k = kernel
    k.execute("panel = show_status(pool)")
    w = k.widgets
    # One row per instance plus ALL; the grid holds header + rows in order.
    grid = w.one("gz-grid")
    kids = [w.get(r) for r in grid.state["children"]]
    instances = [_text(m) for m in kids if "gz-cell-instance" in m.classes]
    assert instances == ["a", "b", "ALL"]
    assert w.color(_cell(k, "a", "dot")) == HEALTH_COLORS["healthy"]
    assert _cell(k, "a", "status").state["value"] == "healthy"
    assert _cell(k, "a", "breaker").state["value"] == "closed"
    assert _cell(k, "ALL", "status").state["value"] == "2/2 ok"

    k.execute("calls(40)")
    _wait(k, lambda: _cell(k, "ALL", "requests").state["value"] == "40", what="40 requests")
    a = int(_cell(k, "a", "requests").state["value"])
    b = int(_cell(k, "b", "requests").state["value"])
    assert a + b == 40 and a > 0 and b > 0
    assert _cell(k, "ALL", "success_rate").state["value"] == "100 %"
    p50 = _cell(k, "b", "p50_ms").state["value"]
    assert p50.endswith("ms") and float(p50.split()[0]) >= 4.0  # b sleeps 4 ms per call
    # the latency plot drew one line per instance
    svg = w.one("gz-latency-plot").state["value"]
    assert svg.count("<polyline") + svg.count("<circle") == 2

    # b fails its health checks: the panel turns its dot red without any cell running.
    k.execute("pool.resources['b'].healthy = False")
    _wait(
        k,
        lambda: w.color(_cell(k, "b", "dot")) == HEALTH_COLORS["unhealthy"],
        what="b red",
    )
    assert _cell(k, "b", "status").state["value"] == "unhealthy"
    assert _cell(k, "ALL", "status").state["value"] == "1/2 ok"
    assert _text(_cell(k, "b", "last_error")).startswith("health check:")
    k.execute("pool.resources['b'].healthy = True")
    _wait(k, lambda: w.color(_cell(k, "b", "dot")) == HEALTH_COLORS["healthy"], what="b ok")


def test_controls_drain_reset_strategy(kernel: Kernel) -> None:
    k = kernel
    w = k.widgets
    if not w.find("gz-grid"):
        k.execute("panel = show_status(pool)")
    drain_a = w.one("gz-drain", row_class("a"))
    assert drain_a.state["description"] == "drain"
    k.click(drain_a)
    _wait(k, lambda: _cell(k, "a", "status").state["value"] == "drained", what="a drained")
    assert w.color(_cell(k, "a", "dot")) == HEALTH_COLORS["drained"]
    assert drain_a.state["description"] == "enable"
    assert k.value("pool.get_instance('a').enabled") is False
    assert "a drained" in w.one("gz-message").state["value"]
    k.click(drain_a)
    _wait(k, lambda: _cell(k, "a", "status").state["value"] == "healthy", what="a enabled")
    assert k.value("pool.get_instance('a').enabled") is True

    # Two infrastructure failures open a's breaker; the panel shows it and arms "reset".
    k.execute("pool.resources['a'].fail = True")
    k.execute("on('a', 1); on('a', 1)")
    reset_a = w.one("gz-reset", row_class("a"))
    _wait(k, lambda: _cell(k, "a", "breaker").state["value"] == "open", what="breaker open")
    assert w.color(_cell(k, "a", "breaker")) == BREAKER_COLORS["open"]
    assert reset_a.state["disabled"] is False
    assert "a is down" in _text(_cell(k, "a", "last_error"))
    # the ALL row counts what the rows show: a is not available with its breaker open
    _wait(k, lambda: _cell(k, "ALL", "status").state["value"] == "1/2 ok", what="ALL 1/2")
    assert _cell(k, "ALL", "breaker").state["value"] == "1 open"
    assert k.value("pool.status()['totals']['available']") == 1
    k.execute("pool.resources['a'].fail = False")
    k.click(reset_a)
    _wait(k, lambda: _cell(k, "a", "breaker").state["value"] == "closed", what="reset")
    assert reset_a.state["disabled"] is True
    assert k.value("pool.get_instance('a').breaker_state.value") == "closed"

    # Strategy: the front end picks one (Dropdown syncs its index) ...
    dropdown = w.one("gz-strategy")
    k.set_state(dropdown, {"index": STRATEGIES.index("round_robin")})
    _wait(k, lambda: k.value("pool.strategy") == "round_robin", what="strategy set")
    # ... and a change made in code shows in the panel.
    k.execute(
        "rt.run(asyncio.sleep(0)); rt.loop.call_soon_threadsafe(pool.set_strategy, 'least_latency')"
    )
    _wait(
        k,
        lambda: dropdown.state["index"] == STRATEGIES.index("least_latency"),
        what="dropdown follows",
    )


def test_live_updates_during_a_running_batch(kernel: Kernel) -> None:
    """While one cell blocks the notebook thread on a 4-second batch, the panel keeps
    updating about once a second; counted from the model updates the front end received."""
    k = kernel
    w = k.widgets
    if not w.find("gz-grid"):
        k.execute("panel = show_status(pool)")
    k.settle(1.5)
    total = _cell(k, "ALL", "requests")
    start_requests = int(total.state["value"].replace(",", ""))
    mark = len(total.updates)
    msgs = k.execute("rt.run(sequential(200, 0.02))")  # ~4 s on the loop thread
    idle_at = next(
        t
        for t, m in reversed(k.log)
        if m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
    )
    assert msgs[-1]["header"]["msg_type"] == "status"
    during = [(t, s["value"]) for t, s in total.updates[mark:] if "value" in s and t < idle_at]
    values = [int(v.replace(",", "")) for _, v in during]
    assert values == sorted(values) and len(set(values)) == len(values)
    # intermediate counts, pushed while the notebook thread was blocked in the cell
    mid = [v for v in values if start_requests < v < start_requests + 200]
    assert len(mid) >= 3, during  # ~1/s over ~4 s
    # then the final count arrives (the coalesced metrics event after the batch)
    _wait(
        k,
        lambda: int(total.state["value"].replace(",", "")) == start_requests + 200,
        what="final count",
    )


def test_a_single_long_call_shows_in_flight(kernel: Kernel) -> None:
    """One 3-second call emits no hub event until it ends; the panel still shows it in
    flight while the cell runs (the feed looks shortly after a cell starts, then every
    second while calls are in flight)."""
    k = kernel
    w = k.widgets
    if not w.find("gz-grid"):
        k.execute("panel = show_status(pool)")
    k.settle(1.0)
    cell = _cell(k, "ALL", "in_flight")
    mark = len(cell.updates)
    k.execute("rt.run(pool.execute('e', {'latency': 3}))")
    idle_at = next(
        t
        for t, m in reversed(k.log)
        if m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
    )
    shown = [(t, s["value"]) for t, s in cell.updates[mark:] if "value" in s]
    busy = [t for t, v in shown if v == "1" and t < idle_at]
    assert busy, shown
    assert busy[0] < idle_at - 1.5, (busy, idle_at)  # seen early in the call, not at its end
    _wait(k, lambda: cell.state["value"] == "0", what="back to 0 in flight")


def test_several_panels_agree_and_closing_unsubscribes(kernel: Kernel) -> None:
    k = kernel
    w = k.widgets
    k.execute("if 'panel' in globals(): panel.close()")
    assert k.value("len(pool._events)") == 1  # the runtime's own fan-out
    k.execute("p1 = show_status(pool); p2 = show_status(pool)")
    assert k.value("len(pool._events)") == 2  # one shared subscription for both panels
    k.execute("calls(25)")
    k.settle(2.0)
    totals = w.find("gz-cell-requests", row_class("ALL"))
    assert len(totals) >= 2
    assert len({m.state["value"] for m in totals}) == 1  # every open panel shows the same
    k.execute("p1.close()")
    assert k.value("len(pool._events)") == 2  # p2 still open
    k.execute("p2.close()")
    assert k.value("len(pool._events)") == 1
    assert k.value("(p1.subscribed, p2.subscribed)") == (False, False)
    closed = [m for m in w.models.values() if m.closed and "gz-cell-requests" in m.classes]
    assert len(closed) >= 2
    # No update reaches a closed panel's models any more.
    counts = {m.id: len(m.updates) for m in closed}
    k.execute("calls(10)")
    k.settle(2.0)
    assert {m.id: len(m.updates) for m in closed} == counts


def test_board_follows_the_runtime_pools(kernel: Kernel) -> None:
    """A board on a runtime with no pools says so; a pool started later gets a panel (the
    runtime announces it as an event), a discarded one loses it."""
    k = kernel
    w = k.widgets
    k.execute(
        "from gleitzeit_jupyter.kernel.runtime import Runtime\n"
        "rt2 = Runtime()\n"
        "board = show_status(rt2)"
    )
    board = w.one("gz-board")
    kids = [w.get(r) for r in board.state["children"]]
    assert len(kids) == 1 and kids[0].state["value"].startswith("<i>no pools running yet")
    k.execute(
        "rt2.get_or_create('extra', lambda: MemoryProvider([MemoryConfig('x1'),"
        " MemoryConfig('x2')], name='extra', health_check_interval=60))"
    )
    _wait(
        k,
        lambda: any("gz-provider-extra" in w.get(r).classes for r in board.state["children"]),
        what="a panel for the new pool",
    )
    assert [
        _text(m) for m in w.find("gz-cell-instance", "gz-inst") if _text(m).startswith("x")
    ] == ["x1", "x2"]
    k.execute("rt2.discard_provider('extra')")
    _wait(
        k,
        lambda: not any("gz-provider-extra" in w.get(r).classes for r in board.state["children"]),
        what="the panel of the discarded pool goes",
    )
    k.execute("board.close(); rt2.shutdown()")
    assert not w.find("gz-board")


def test_rerunning_a_cell_replaces_its_panel(kernel: Kernel) -> None:
    k = kernel
    k.execute("first = show_status(pool)", cell_id="cell-1")
    k.execute("second = show_status(pool)", cell_id="cell-1")
    assert k.value("(first.closed, second.closed, first.subscribed)") == (True, False, False)
    k.execute("third = show_status(pool)", cell_id="cell-2")
    assert k.value("(second.closed, third.closed)") == (False, False)
    k.execute("second.close(); third.close()")
    assert k.value("len(pool._events)") == 1


def test_panels_of_one_run_of_a_cell_all_stay_open(kernel: Kernel) -> None:
    """Several panels made by one run of a cell (two pools side by side, a loop) stay open;
    the next run of that cell closes them all."""
    k = kernel
    k.execute("a = show_status(pool); b = show_status(pool)", cell_id="cell-two")
    assert k.value("(a.closed, b.closed)") == (False, False)
    k.execute("many = [show_status(pool) for _ in range(3)]", cell_id="cell-loop")
    assert k.value("[p.closed for p in many]") == [False, False, False]
    k.execute("c = show_status(pool)", cell_id="cell-two")
    assert k.value("(a.closed, b.closed, c.closed)") == (True, True, False)
    k.execute("c.close(); [p.close() for p in many]")
    assert k.value("len(pool._events)") == 1


def test_panels_refresh_off_the_callers_path_during_a_batch(kernel: Kernel) -> None:
    """A batch of hub calls with three live panels open: the panels update while the
    notebook's thread is blocked waiting for the batch (so their refreshes run on the
    runtime loop, not on the caller's path), and the calls do not each cause a refresh (the
    hub's events only schedule one, coalesced). What the panels cost in time is measured by
    bench/panel_overhead.py."""
    k = kernel
    k.execute(
        textwrap.dedent(
            """
            async def burst(n):
                for _ in range(n // 100):
                    await asyncio.gather(*(pool.execute("e", {"latency": 0.001})
                                           for _ in range(100)))
            ps = [show_status(pool, interval=0.2) for _ in range(3)]
            during, n = [0, 0, 0], 0
            while min(during) < 3:
                before = [p.updates for p in ps]
                rt.run(burst(500))  # this thread waits here until the batch is done
                during = [d + p.updates - b for d, p, b in zip(during, ps, before)]
                n += 500
            for p in ps:
                p.close()
            """
        ),
        timeout=600,
    )
    during, n = k.value("(during, n)")
    assert min(during) >= 3, during  # every panel updated while the batch ran
    assert max(during) < n / 10, (during, n)  # coalesced: not a refresh per call


# ------------------------------------------------------------------ in-process
@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def test_panel_follows_membership_and_frees_its_feed(loop_thread) -> None:
    loop = loop_thread
    pool = MemoryProvider([MemoryConfig("a")], health_check_interval=60)
    asyncio.run_coroutine_threadsafe(pool.initialize(), loop).result(10)
    panel = StatusPanel(pool, loop=loop, interval=0.1)
    assert list(panel.rows) == ["a", "ALL"]
    assert repr(panel) == "<StatusPanel memory: 1/1 available, 0 requests>"
    asyncio.run_coroutine_threadsafe(pool.add_resource(MemoryConfig("c")), loop).result(10)
    end = time.monotonic() + 5
    while "c" not in panel.rows and time.monotonic() < end:
        time.sleep(0.05)
    assert list(panel.rows) == ["a", "c", "ALL"]
    asyncio.run_coroutine_threadsafe(pool.remove_resource("a"), loop).result(10)
    end = time.monotonic() + 5
    while "a" in panel.rows and time.monotonic() < end:
        time.sleep(0.05)
    assert list(panel.rows) == ["c", "ALL"]
    assert len(pool._events) == 1
    panel.close()
    assert len(pool._events) == 0 and not panel.subscribed
    asyncio.run_coroutine_threadsafe(pool.shutdown(), loop).result(10)


def test_formatting() -> None:
    assert fmt_ms(None) == "\u2013"
    assert fmt_ms(3.14159) == "3.14 ms"
    assert fmt_ms(42.0) == "42.0 ms"
    assert fmt_ms(420.4) == "420 ms"
    assert fmt_ms(1234.0) == "1.23 s"
    assert fmt_age(12.4) == "12 s ago" and fmt_age(600) == "10 min ago"


def test_plot_spans_a_fixed_window_and_leaves_idle_time_blank() -> None:
    now = 1000.0
    busy = [(now - 60 + 5 * k, 10.0 + k) for k in range(4)]  # four buckets in a row
    later = [(now - 10, 12.0), (now - 5, 14.0)]  # after 25 s without calls
    svg = latency_svg({"a": busy + later, "b": [(now - 400, 5.0)]}, now=now, window=300)
    assert svg.count("<polyline") == 2  # one line per busy stretch, none across the gap
    assert "-5 min" in svg  # the whole window, however little data there is
    only_recent = latency_svg({"a": later}, now=now, window=300)
    assert "-5 min" in only_recent
    assert "no calls" in latency_svg({}, now=now)


def test_plot_scale_is_not_flattened_by_one_outlier() -> None:
    now = 1000.0
    pts = [(now - 100 + 5 * k, 40.0 + k) for k in range(12)] + [(now - 30, 10_000.0)]
    svg = latency_svg({"a": pts}, now=now, window=300)
    assert "100 ms" in svg and "10.00 s" not in svg.split("<title>")[0]  # axis fits the rest
    assert svg.count('class="gz-clipped"') == 1  # the outlier sits on the edge, marked
    assert "a: 10.00 s" in svg  # its tooltip gives the value
    assert plot_scale([40.0, 41.0, 45.0]) == 50.0
    assert plot_scale([]) == 1.0


def test_plot_and_cells_bear_non_finite_latencies() -> None:
    """A latency of inf or NaN (a provider recording one, a hand-edited save) is left out of
    the plot and shown as a dash, instead of failing every refresh of the panel."""
    now = 1000.0
    for bad in (float("inf"), float("nan"), float("-inf")):
        pts = [(now - 30, 40.0), (now - 25, bad), (now - 20, 42.0)]
        svg = latency_svg({"a": pts, "b": [(now - 10, bad)] * 5}, now=now, window=300)
        assert "nan" not in svg and "inf" not in svg, svg
        assert svg.count("<circle") == 2  # the bad point is a gap between two good ones
        assert fmt_ms(bad) == "\u2013"
    assert plot_scale([float("inf"), float("nan"), 5.0]) == 5.0


def test_panels_let_go_when_the_runtime_stops() -> None:
    from gleitzeit_jupyter.kernel import widgets
    from gleitzeit_jupyter.kernel.widgets import cells

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    pools = [
        MemoryProvider([MemoryConfig("a")], name=f"p{k}", health_check_interval=60)
        for k in range(2)
    ]
    for pool in pools:
        asyncio.run_coroutine_threadsafe(pool.initialize(), loop).result(10)
    first, second = (StatusPanel(pool, loop=loop) for pool in pools)
    assert widgets.close_all() == 2
    assert first.closed and second.closed and len(pools[0]._events) == 0
    third = StatusPanel(pools[0], loop=loop)
    for pool in pools:  # no pending health tasks left for the garbage collector to warn about
        asyncio.run_coroutine_threadsafe(pool.shutdown(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()
    cells._after_cell()  # the next cell after the runtime went away
    assert third.closed and not third.subscribed


def test_names_are_told_apart_and_old_errors_fade(loop_thread) -> None:
    loop = loop_thread
    hosts = ["127.0.0.1:11434", "127.0.0.1:11435", "127.0.0.1:11436"]
    pool = MemoryProvider([MemoryConfig(h) for h in hosts], health_check_interval=60, retries=0)
    asyncio.run_coroutine_threadsafe(pool.initialize(), loop).result(10)
    panel = StatusPanel(pool, loop=loop, interval=0.1)
    try:
        rows = panel.rows
        names = [rows[h]["instance"] for h in hosts]
        assert names == ["\u2026:11434", "\u2026:11435", "\u2026:11436"]
        assert all(h in rows[h]["title"] for h in hosts)  # the full name on hover
        pool.resources[hosts[1]].fail = True
        call = pool.execute("e", {}, instance=hosts[1])
        with pytest.raises(Exception, match="down"):
            asyncio.run_coroutine_threadsafe(call, loop).result(10)
        panel.refresh()
        err = panel.rows[hosts[1]]
        assert re.match(r"\d+ s ago: ", err["last_error"]) and not err["error_old"]
        pool.resources[hosts[1]].fail = False
        metrics = pool.get_instance(hosts[1]).metrics
        metrics.last_error_at -= ERROR_FRESH_S + 5  # as if it failed a while ago
        panel.refresh()
        err = panel.rows[hosts[1]]
        assert re.match(r"6\d s ago: ", err["last_error"]) and err["error_old"]  # not coloured
    finally:
        panel.close()
        asyncio.run_coroutine_threadsafe(pool.shutdown(), loop).result(10)


def test_panel_text_counts_what_the_other_views_count(loop_thread) -> None:
    """The panel's one-line text (its repr) says the available count, as the ALL row, the
    sidebar and the status bar do: an instance whose breaker is open is not counted."""
    loop = loop_thread
    pool = MemoryProvider(
        [MemoryConfig("a"), MemoryConfig("b")],
        health_check_interval=60,
        retries=0,
        breaker_failure_threshold=1,
        breaker_recovery_timeout=600,
    )
    asyncio.run_coroutine_threadsafe(pool.initialize(), loop).result(10)
    panel = StatusPanel(pool, loop=loop)
    try:
        pool.resources["a"].fail = True
        call = pool.execute("e", {}, instance="a")
        with pytest.raises(Exception, match="down"):
            asyncio.run_coroutine_threadsafe(call, loop).result(10)
        panel.refresh()
        assert panel.rows["ALL"]["status"] == "1/2 ok"
        assert "1/2 available" in repr(panel), repr(panel)
    finally:
        panel.close()
        asyncio.run_coroutine_threadsafe(pool.shutdown(), loop).result(10)


HOSTILE = '<img src=x onerror="alert(1)">"><script>alert(2)</script>'


class _HostileOllama(http.server.BaseHTTPRequestHandler):
    """Answers like Ollama, except that every inference call fails with a hostile error: HTML
    and script, and a megabyte long."""

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._json(200, {"version": "0.6.0"})
        elif self.path == "/api/tags":
            self._json(200, {"models": [{"name": "m:latest", "model": "m:latest"}]})
        else:
            self._json(200, {"models": []})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/api/show":
            self._json(200, {"capabilities": ["completion"]})
        else:
            self._json(500, {"error": HOSTILE + "A" * 1_000_000})

    def log_message(self, *args: Any) -> None:
        pass


def test_a_hostile_servers_error_is_inert_and_bounded_in_every_view(loop_thread) -> None:
    """A server's error text is its own to choose: it shows as text (never markup) in the
    panel, its static picture and the snapshot the sidebar renders, and a huge one is cut
    short in the snapshot instead of being sent to every view once a second."""
    from gleitzeit_jupyter.providers.ollama import OllamaProvider

    loop = loop_thread
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileOllama)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    pool = OllamaProvider(hosts=[url], auto_discover=False, retries=0, health_check_interval=60)

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    run(pool.initialize())
    panel = StatusPanel(pool, loop=loop)
    try:
        with pytest.raises(Exception, match="alert"):
            run(pool.execute("llm/generate", {"model": "m", "prompt": "hi"}))
        snap = call_on_loop(loop, pool.status)
        err = snap["instances"][0]["last_error"]
        assert "<img" in err and len(err) <= 1000  # the text kept as text, cut short
        panel.refresh()
        cell = panel.rows[snap["instances"][0]["instance"]]["last_error"]
        assert "<img" in cell  # the text as the user reads it
        cells = [c.value for c in panel.grid.children if "gz-cell-last_error" in c._dom_classes]
        for markup in (*cells, panel.static()["text/html"]):
            assert "<img" not in markup and "<script" not in markup, markup[:300]
            assert len(markup) < 20_000
    finally:
        panel.close()
        run(pool.shutdown())
        server.shutdown()


def _display(msgs: list[dict], kind: str) -> list[dict]:
    return [m["content"] for m in msgs if m["header"]["msg_type"] == kind]


def test_display_carries_a_static_picture_that_follows_the_pool(kernel: Kernel) -> None:
    k = kernel
    shown = _display(k.execute("sp = show_status(pool)"), "display_data")
    assert len(shown) == 1
    first = shown[0]
    display_id = first["transient"]["display_id"]
    data = first["data"]
    assert "application/vnd.jupyter.widget-view+json" in data
    assert 'data-gleitzeit-static="panel"' in data["text/html"]
    assert "memory" in data["text/plain"] and "ALL" in data["text/plain"]
    before = k.value("pool.status()['totals']['requests']")

    # the end of a cell brings the static picture up to date
    updates = _display(k.execute("calls(3)"), "update_display_data")
    mine = [u for u in updates if u["transient"]["display_id"] == display_id]
    assert mine, "no static update at the end of the cell"
    data = mine[-1]["data"]
    assert "application/vnd.jupyter.widget-view+json" in data  # still live
    total_line = next(ln for ln in data["text/plain"].splitlines() if ln.startswith("ALL"))
    assert f"{before + 3:,}" in total_line.split()

    # closed: the output keeps its last picture and no widget that would break
    updates = _display(k.execute("sp.close()"), "update_display_data")
    mine = [u for u in updates if u["transient"]["display_id"] == display_id]
    assert mine and "application/vnd.jupyter.widget-view+json" not in mine[-1]["data"]
    assert "closed" in mine[-1]["data"]["text/html"]


def test_progress_bar_leaves_a_static_picture(kernel: Kernel) -> None:
    k = kernel
    msgs = k.execute(
        "from gleitzeit_jupyter.kernel.widgets.progress import NotebookProgress\n"
        "bar = NotebookProgress(total=4, desc='rows')\n"
        "for _ in range(4): bar.update(1)\n"
        "bar.close()"
    )
    shown = _display(msgs, "display_data")
    assert len(shown) == 1 and "application/vnd.jupyter.widget-view+json" in shown[0]["data"]
    display_id = shown[0]["transient"]["display_id"]
    final = [
        u
        for u in _display(msgs, "update_display_data")
        if u["transient"]["display_id"] == display_id
    ][-1]["data"]
    assert "application/vnd.jupyter.widget-view+json" not in final
    assert "4/4" in final["text/plain"] and "rows" in final["text/plain"]
    assert 'data-gleitzeit-static="progress"' in final["text/html"]
    assert "width:100.0%" in final["text/html"]
