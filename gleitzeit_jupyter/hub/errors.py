"""The one error family of gleitzeit-jupyter.

Every error raised by the hub or a provider derives from :class:`HubError`. Its ``str()`` is
one line a notebook user can act on: what failed, on which instance, and what to do.
"""

from __future__ import annotations

__all__ = [
    "ExecutionTimeout",
    "HubError",
    "NoResourceAvailable",
    "ResourceDeclined",
    "ResourceFailed",
    "UserError",
]


class HubError(Exception):
    """Base class of every gleitzeit error.

    ``instance`` names the instance involved (if any); ``hint`` says what to do about it.
    """

    def __init__(self, message: str, *, instance: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.instance = instance
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.instance and self.instance not in text:
            text = f"{text} (instance {self.instance})"
        if self.hint:
            text = f"{text}. {self.hint}"
        return text


class UserError(HubError):
    """The caller's mistake: bad method, missing parameter, unknown model.

    Never retried, never counted against an instance's breaker.
    """


class ResourceFailed(HubError):
    """An infrastructure fault: refused connection, 5xx, dead container.

    ``started`` says whether the request may have reached the resource (and so may have had
    effects there). ``started=False`` is a promise by the provider that it provably did not
    (connection refused, the container was already dead before the request was sent): the hub
    then requeues the call on another instance without spending the retry budget. A call that
    may have started is retried only where the provider allows it
    (``HubProvider.retry_started_calls``) and never after it produced output.
    """

    def __init__(
        self,
        message: str,
        *,
        instance: str | None = None,
        hint: str | None = None,
        started: bool = True,
    ):
        super().__init__(message, instance=instance, hint=hint)
        self.started = started


class ResourceDeclined(ResourceFailed):
    """The instance turned the call away without running it: its queue is full (backpressure)
    or it no longer has what the call needs while another instance has. The hub moves the call
    elsewhere at no cost and holds nothing against the instance (breaker and health as they
    were)."""

    def __init__(self, message: str, *, instance: str | None = None, hint: str | None = None):
        super().__init__(message, instance=instance, hint=hint, started=False)


class ExecutionTimeout(ResourceFailed):
    """A call ran past its deadline before producing output."""


class NoResourceAvailable(HubError):
    """No instance can take the call: empty pool, everything down, or the queue is full."""
