"""What live status panels cost a batch of hub calls running beside them.

    .venv/bin/python bench/panel_overhead.py [--rounds 5] [--panels 3] [--interval 0.2]

A real IPython kernel (over jupyter_client, its IOPub read as a front end would) runs a
CPU-bound batch of in-memory hub calls on the runtime loop, alternately without and with
``--panels`` live panels refreshing every ``--interval`` s (5x a second by default, to make
their cost visible; the default panel refreshes once a second). Printed per round and
overall:

- the CPU *share*: CPU time the runtime loop spent on the panels (snapshots, widget updates
  and their sends, measured per thread, so other processes on the machine do not inflate it)
  over the CPU time of the batch with panels. Target: below 5 %.
- the *wall ratio*: batch wall time with panels over the same batch without, best of the
  rounds each (noisy on a shared machine; it shows gross blocking only).
"""

from __future__ import annotations

import argparse
import ast
import textwrap

from jupyter_client.manager import start_new_kernel

SETUP = textwrap.dedent(
    """
    import asyncio, time
    from gleitzeit_jupyter.kernel.runtime import get_runtime
    from gleitzeit_jupyter.kernel.widgets import show_status
    from gleitzeit_jupyter.testing.memory import MemoryConfig, MemoryProvider
    rt = get_runtime()
    pool = rt.get_or_create("memory", lambda: MemoryProvider(
        [MemoryConfig("a", latency=0), MemoryConfig("b", latency=0)],
        health_check_interval=0.3, retries=0))
    async def burst(n):
        for _ in range(n // 100):
            await asyncio.gather(*(pool.execute("e", {"latency": 0}) for _ in range(100)))
    def timed(n):
        w, c = time.perf_counter(), time.process_time()
        rt.run(burst(n))
        return time.perf_counter() - w, time.process_time() - c
    n = 1000
    while timed(n)[0] < 2.0:
        n *= 2
    """
)

ROUND = textwrap.dedent(
    """
    plain = timed(n)
    ps = [show_status(pool, interval={interval}) for _ in range({panels})]
    spent = ps[0].cpu_seconds
    with_panels = timed(n)
    share = (ps[0].cpu_seconds - spent) / with_panels[1]
    for p in ps:
        p.close()
    """
)


def _run(client, code: str) -> None:
    reply = client.execute_interactive(code, timeout=600, output_hook=lambda _msg: None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}")


def _value(client, expr: str):
    out: list[str] = []

    def hook(msg) -> None:
        if msg["header"]["msg_type"] == "execute_result":
            out.append(msg["content"]["data"]["text/plain"])

    client.execute_interactive(expr, timeout=60, output_hook=hook)
    return ast.literal_eval(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--panels", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.2)
    args = parser.parse_args()

    manager, client = start_new_kernel()
    try:
        _run(client, SETUP)
        print(f"batch: {_value(client, 'n')} calls; {args.panels} panels every {args.interval} s")
        plain, panels, shares = [], [], []
        for k in range(args.rounds):
            _run(client, ROUND.format(interval=args.interval, panels=args.panels))
            p, wp, share = _value(client, "(plain, with_panels, share)")
            plain.append(p[0])
            panels.append(wp[0])
            shares.append(share)
            print(
                f"  round {k + 1}: without {p[0]:.2f} s, with panels {wp[0]:.2f} s,"
                f" panel CPU share {share * 100:.1f} %"
            )
        wall = min(panels) / min(plain)
        print(f"panel CPU share: max {max(shares) * 100:.1f} %  (target < 5 %)")
        print(f"wall ratio with/without panels (best of {args.rounds} each): {wall:.2f}x")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
