"""A background asyncio loop in its own thread, and the notebook thread's ways to wait on it.

The notebook thread waits in short slices, so a kernel interrupt (SIGINT ->
``KeyboardInterrupt`` in the main thread) lands promptly, cancels the coroutine on the loop
(closing HTTP streams, killing sandbox workers) and waits briefly for that cleanup.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ..hub.errors import ExecutionTimeout

__all__ = ["CANCEL_GRACE_S", "WAIT_SLICE_S", "LoopThread"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long the notebook thread waits for a cancelled coroutine to finish its cleanup.
CANCEL_GRACE_S = 10.0
#: Slice of every blocking wait: short so SIGINT's KeyboardInterrupt is raised promptly.
WAIT_SLICE_S = 0.1


class LoopThread:
    """An asyncio loop running in a daemon thread named ``name``, started at once."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._closed = False
        self._thread.start()
        self._ready.wait()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._cancel_leftovers()
            self._loop.close()

    def _cancel_leftovers(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def closed(self) -> bool:
        return self._closed

    def check_caller(self) -> None:
        """Refuse a blocking wait that could never end: after stop(), or on the loop thread."""
        if self._closed:
            raise RuntimeError("the gleitzeit runtime is shut down")
        if threading.current_thread() is self._thread:
            # Blocking the loop thread on itself would deadlock forever.
            raise RuntimeError("Runtime.run() called from the runtime's own loop thread")

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and block until it is done.

        A ``KeyboardInterrupt`` while waiting cancels the coroutine, waits up to
        :data:`CANCEL_GRACE_S` for its cleanup, then re-raises. ``timeout`` (seconds) cancels
        it the same way and raises :class:`ExecutionTimeout`.
        """
        try:
            self.check_caller()
        except RuntimeError:
            coro.close()
            raise
        holder: dict[str, asyncio.Task[T]] = {}

        async def wrapper() -> T:
            task = asyncio.ensure_future(coro)
            holder["task"] = task
            return await task

        fut = asyncio.run_coroutine_threadsafe(wrapper(), self._loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                left = WAIT_SLICE_S
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        self._cancel_and_wait(fut, holder)
                        raise ExecutionTimeout(
                            f"call did not finish within {timeout:g} s and was cancelled",
                            hint="raise the timeout or check the pool with %gleitzeit status",
                        )
                try:
                    return fut.result(timeout=left)
                except concurrent.futures.TimeoutError:
                    continue
        except KeyboardInterrupt:
            self._cancel_and_wait(fut, holder)
            raise

    def _cancel_and_wait(
        self, fut: concurrent.futures.Future[Any], holder: dict[str, asyncio.Task[Any]]
    ) -> None:
        # Cancel the inner task (not the concurrent future): the future then completes only
        # once the task has run its cleanup, and we can wait for exactly that.
        def cancel() -> None:
            task = holder.get("task")
            if task is not None:
                task.cancel()
            else:
                fut.cancel()

        self._loop.call_soon_threadsafe(cancel)
        end = time.monotonic() + CANCEL_GRACE_S
        while time.monotonic() < end:
            try:
                fut.result(timeout=WAIT_SLICE_S)
                return
            except concurrent.futures.TimeoutError:
                continue
            except (concurrent.futures.CancelledError, asyncio.CancelledError):
                return
            except Exception:
                return
        log.warning("gleitzeit: a cancelled call did not finish its cleanup in time")

    def stream(
        self, source: Callable[[], AsyncIterable[T]], timeout: float | None = None
    ) -> Iterator[T]:
        """Iterate, on the notebook thread, an async iterable run on the loop.

        Items are handed over through a thread-safe queue so the consumer (display updates,
        progress bars) stays on the notebook thread, where ipykernel routes output to the
        right cell. Interrupt, timeout and closing the iterator early cancel the producer.
        """
        self.check_caller()
        items: queue.Queue[tuple[str, Any]] = queue.Queue()
        holder: dict[str, asyncio.Task[Any]] = {}

        async def produce() -> None:
            holder["task"] = asyncio.current_task()  # type: ignore[assignment]
            iterable = source()
            try:
                async for item in iterable:
                    items.put(("item", item))
            except BaseException as exc:
                items.put(("error", exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                items.put(("end", None))
            finally:
                # Close the generator now, not at garbage collection: that is what closes an
                # HTTP stream or stops a sandbox run when the cell is interrupted.
                aclose = getattr(iterable, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(BaseException):
                        await aclose()

        fut = asyncio.run_coroutine_threadsafe(produce(), self._loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = False
        try:
            while True:
                left = WAIT_SLICE_S
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        raise ExecutionTimeout(
                            f"call did not finish within {timeout:g} s and was cancelled",
                            hint="raise the timeout or check the pool with %gleitzeit status",
                        )
                try:
                    kind, value = items.get(timeout=left)
                except queue.Empty:
                    continue
                if kind == "item":
                    yield value
                elif kind == "end":
                    finished = True
                    return
                else:
                    finished = True
                    if isinstance(value, asyncio.CancelledError):
                        raise KeyboardInterrupt
                    raise value
        finally:
            if not finished:
                # Interrupt, timeout, or the consumer stopped early (GeneratorExit).
                self._cancel_and_wait(fut, holder)

    def stop(self, timeout: float) -> None:
        """Stop the loop (its leftover tasks are cancelled) and wait up to ``timeout`` for the
        thread; later run() and stream() calls are refused."""
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
