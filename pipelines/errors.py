"""The engine's error types. Every message names what went wrong and the rule."""

from __future__ import annotations


class AtelierError(Exception):
    """Base class of every error the engine raises on purpose."""


class RequestError(AtelierError, ValueError):
    """A request field broke a rule. `field` is the request's field name."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")


class ModelUnavailableError(AtelierError):
    """A model exists by name but cannot be loaded here (offline, missing files)."""


class Cancelled(AtelierError):
    """Raised inside a run when its cancel token is set; the run returns no image."""


class LimitError(RequestError):
    """A job was refused by admission: `field` names the limit (queue_size,
    max_jobs_per_user, max_work) and the rule says what was asked and allowed."""
