"""``%gleitzeit``: status, metrics (and their export), adding/removing instances, strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from IPython.core.error import UsageError
from IPython.display import display

from .render import CellError, CellInterrupted, cell_error

__all__ = ["dispatch", "export_metrics", "metrics_frame", "status_frame"]

_STATUS_COLUMNS = [
    "provider",
    "instance",
    "endpoint",
    "status",
    "breaker",
    "available",
    "in_flight",
    "requests",
    "success_rate",
    "p50_ms",
    "p95_ms",
    "tokens_per_s",
    "runs",
    "recycled",
    "last_error",
]


def _on_loop(rt: Any, fn: Any, *args: Any) -> Any:
    """Call a provider's sync method on the runtime loop, where its state is mutated."""

    async def call() -> Any:
        return fn(*args)

    return rt.run(call(), timeout=30)


def snapshots(rt: Any) -> dict[str, dict[str, Any]]:
    return {name: _on_loop(rt, p.status) for name, p in rt.providers.items()}


def status_frame(snaps: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per instance of every pool, from ``provider.status()`` snapshots."""
    rows = []
    for name, snap in snaps.items():
        for inst in snap.get("instances", []):
            row = {"provider": name, **inst}
            if "instance" not in row and "id" in row:  # the contract's older spelling
                row["instance"] = row.pop("id")
            rows.append(row)
    frame = pd.DataFrame(rows)
    cols = [c for c in _STATUS_COLUMNS if c in frame.columns]
    return frame[cols] if cols else frame


def status_text(snaps: dict[str, dict[str, Any]]) -> str:
    if not snaps:
        return NO_POOLS
    lines = []
    for name, snap in snaps.items():
        totals = snap.get("totals", {})
        queue = snap.get("queue", {})
        lines.append(
            f"{name} ({snap.get('kind', '?')}, strategy {snap.get('strategy', '?')}):"
            # the count the panels, the sidebar and the status bar show
            f" {totals.get('available', totals.get('healthy', 0))}/{totals.get('instances', 0)}"
            " available,"
            f" {totals.get('in_flight', 0)} in flight, {queue.get('waiting', 0)} queued"
        )
    frame = status_frame(snaps)
    if len(frame):
        lines.append(frame.to_string(index=False))
    return "\n".join(lines)


NO_POOLS = (
    "no pools running yet: they start on the first %%llm / %%sandbox"
    " (or %gleitzeit add ollama URL / add openai URL)"
)


def metrics_frame(rt: Any) -> pd.DataFrame:
    """Every pool's ``metrics()`` stacked, with a ``provider`` column first."""
    frames = []
    for name, p in rt.providers.items():
        frame = _on_loop(rt, p.metrics)
        frame = frame.reset_index() if "instance" not in frame.columns else frame
        frame.insert(0, "provider", name)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["provider", "instance"])
    return pd.concat(frames, ignore_index=True)


def export_metrics(frame: pd.DataFrame, path: str) -> Path:
    target = Path(path).expanduser()
    suffix = target.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise UsageError(f"--export {path}: use a .csv or .parquet file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(target, index=False)
    else:
        # Mixed-type object columns (last_error: None or text) are written as strings so
        # Arrow does not have to guess a type.
        out = frame.copy()
        for col in out.columns:
            if out[col].dtype == object:
                out[col] = out[col].map(lambda v: None if v is None else str(v))
        try:
            out.to_parquet(target, index=False)
        except ImportError as exc:
            raise CellError(
                f"--export {path}: parquet needs pyarrow ({exc}); pip install pyarrow,"
                " or export to .csv",
                kind="UsageError",
            ) from None
    return target


def _show_status(rt: Any) -> None:
    snaps = snapshots(rt)
    panel = _status_panel(rt)
    if panel is not None:
        display(panel)
        return
    print(status_text(snaps))


def _status_panel(rt: Any) -> Any:
    # A widget needs a front end: in terminal IPython the text table is the useful answer.
    try:
        from IPython import get_ipython

        if type(get_ipython()).__name__ != "ZMQInteractiveShell":
            return None
    except ImportError:  # pragma: no cover
        return None
    try:
        from . import widgets
    except ImportError:
        return None
    factory = getattr(widgets, "status_panel", None) or getattr(widgets, "StatusPanel", None)
    if factory is None:
        return None
    return factory(rt)


def dispatch(magics: Any, words: list[str], *, export: str | None, provider: str | None) -> Any:
    cmd, rest = words[0], words[1:]
    rt = magics.runtime
    try:
        return _dispatch(magics, rt, cmd, rest, export=export, provider=provider)
    except KeyboardInterrupt:
        raise CellInterrupted(f"%gleitzeit {cmd} was cancelled") from None
    except (UsageError, CellError):
        raise
    except Exception as exc:
        raise cell_error(exc, context=f"%gleitzeit {cmd}") from None


def _dispatch(
    magics: Any, rt: Any, cmd: str, rest: list[str], *, export: str | None, provider: str | None
) -> Any:
    if export and cmd != "metrics":
        raise UsageError("--export goes with %gleitzeit metrics")
    if cmd == "status":
        _no_args(cmd, rest)
        _show_status(rt)
        return None
    if cmd == "metrics":
        _no_args(cmd, rest)
        frame = metrics_frame(rt)
        if export:
            target = export_metrics(frame, export)
            print(f"metrics of {len(frame)} rows written to {target}")
            return None
        if frame.empty:
            print(NO_POOLS)
            return None
        return frame
    if cmd in ("save", "load"):  # pools to / from a SQLite file (kernel/saving.py)
        if len(rest) != 1:
            raise UsageError(f"usage: %gleitzeit {cmd} PATH (a SQLite file)")
        from . import saving

        print((saving.save_runtime if cmd == "save" else saving.load_runtime)(rt, rest[0]))
        return None
    if cmd == "add":
        return _add(magics, rt, rest)
    if cmd == "remove":
        if len(rest) != 1:
            raise UsageError("usage: %gleitzeit remove INSTANCE_ID (ids: %gleitzeit status)")
        name, p = _owner_of(rt, rest[0])
        rt.run(p.remove_resource(rest[0]))
        print(f"removed {rest[0]} from {name}")
        return None
    if cmd == "strategy":
        if len(rest) != 1:
            raise UsageError("usage: %gleitzeit strategy NAME [--provider POOL]")
        return _strategy(magics, rt, rest[0], provider)
    if cmd in ("drain", "enable") or (cmd == "reset" and rest):
        return _control(rt, cmd, rest)
    if cmd == "reset":
        names = list(rt.providers)
        for name in names:
            rt.discard_provider(name)
        magics.chats.clear()
        magics.offered.clear()
        stopped = ", ".join(names) if names else "none were running"
        print(f"stopped pools: {stopped}; chat sessions cleared. Pools restart on next use.")
        return None
    raise UsageError(
        f"unknown %gleitzeit command {cmd!r}: status | metrics [--export PATH] |"
        " add ollama URL | add openai URL | add sandbox | remove ID | drain ID | enable ID |"
        " reset ID | strategy NAME | reset | save PATH | load PATH"
    )


def _control(rt: Any, cmd: str, rest: list[str]) -> None:
    """drain / enable / reset (the breaker of) one instance: the sidebar's buttons."""
    if len(rest) != 1:
        raise UsageError(f"usage: %gleitzeit {cmd} INSTANCE_ID (ids: %gleitzeit status)")
    from .comm import run_action

    name, p = _owner_of(rt, rest[0])
    action = "reset_breaker" if cmd == "reset" else cmd
    print(f"{name}: {_on_loop(rt, run_action, p, action, rest[0])}")
    return None


def _no_args(cmd: str, rest: list[str]) -> None:
    if rest:
        raise UsageError(f"%gleitzeit {cmd} takes no arguments (got {' '.join(rest)})")


def _owner_of(rt: Any, instance_id: str) -> tuple[str, Any]:
    known = []
    for name, p in rt.providers.items():
        ids = [i.id for i in p.instances]
        if instance_id in ids:
            return name, p
        known += ids
    raise UsageError(f"no instance {instance_id!r}; known: {', '.join(known) if known else 'none'}")


def _add(magics: Any, rt: Any, rest: list[str]) -> None:
    if rest[:1] == ["ollama"] and len(rest) == 2:
        from ..providers.ollama import OllamaConfig
        from .config import normalize_host

        url = normalize_host(rest[1])
        p = rt.ollama()
        inst = rt.run(p.add_resource(OllamaConfig(host=url)))
        print(f"added {inst.id} ({inst.endpoint}) to ollama: {inst.status.value}")
        return None
    if rest[:1] == ["openai"] and len(rest) == 2:
        from ..providers.openai import OpenAIConfig, base_url

        p = rt.openai()
        inst = rt.run(p.add_resource(OpenAIConfig(host=base_url(rest[1]))))
        print(f"added {inst.id} ({inst.endpoint}) to openai: {inst.status.value}")
        return None
    if rest == ["sandbox"]:
        p = rt.sandbox()
        config = rt.run(p.config_for_new_resource())
        if config is None:
            raise UsageError("the sandbox pool cannot take another container")
        inst = rt.run(p.add_resource(config))
        print(f"added {inst.id} to sandbox: {inst.status.value}")
        return None
    raise UsageError(
        "usage: %gleitzeit add ollama URL | %gleitzeit add openai URL | %gleitzeit add sandbox"
    )


def _strategy(magics: Any, rt: Any, name: str, provider: str | None) -> None:
    from ..hub.balancing import STRATEGIES

    if name not in STRATEGIES:
        raise UsageError(f"unknown strategy {name!r}; one of: {', '.join(STRATEGIES)}")
    pools = rt.providers
    if provider is not None:
        if provider not in pools:
            raise UsageError(f"no pool {provider!r}; running: {', '.join(pools) or 'none'}")
        pools = {provider: pools[provider]}
    if not pools:
        # Nothing running yet: make it the default of the Ollama pool to come.
        magics.cfg.strategy = name
        print(f"strategy {name} will be used when the ollama pool starts")
        return None
    for pool_name, p in pools.items():
        _on_loop(rt, p.set_strategy, name)
        if pool_name == "ollama":
            # Keep %config in step; the pool already runs this strategy, so it is kept.
            magics.cfg.strategy = name
    print(f"strategy {name} on {', '.join(pools)}")
    return None
