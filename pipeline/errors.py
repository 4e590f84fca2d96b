"""The one error tree of ecobatch.

Vendor errors are wrapped where they are raised (``raise ... from e``); the CLI turns any
:class:`EcobatchError` into a ``click.ClickException`` and nothing else does.
"""

from __future__ import annotations


class EcobatchError(Exception):
    """Base of every error ecobatch raises on purpose."""


class ConfigError(EcobatchError):
    """A setting, device registry or model path is missing or invalid."""


class InputError(EcobatchError):
    """User input (a prompt file, a task argument) is malformed.

    Attributes:
        line: 1-based line (or record) number where the problem is, when known.
        field: name of the offending field, when known.
    """

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None):
        self.line = line
        self.field = field
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(prefix + message)


class RateLimitError(InputError):
    """A client made more submissions this minute than ``ECOBATCH_SUBMIT_RATE_PER_MIN`` allows
    (HTTP 429 from ``ecobatch serve``; a rejected job for the ``ecobatch.submit`` task).

    Attributes:
        retry_after_s: seconds until the client's count starts again.
    """

    def __init__(self, message: str, *, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UnknownDeviceError(ConfigError):
    """A device name does not appear in the registry."""


class ServiceError(EcobatchError):
    """Redis, the database or a child process could not be reached or started."""


class LedgerSchemaError(ServiceError):
    """The ledger's schema revision is not the one this ecobatch was built for."""


class OutdatedLedgerError(LedgerSchemaError):
    """The ledger was made by an older ecobatch; ``ecobatch db upgrade`` migrates it in place."""


class UnroutableError(EcobatchError):
    """No device may take a batch now (all dead, too small, or too small a max batch size).

    The router keeps such prompts pending and tries again on its next pass.
    """


class StateError(EcobatchError):
    """A status change the life cycle does not allow (``pipeline.ledger.state``): a bug."""


class NotFoundError(EcobatchError):
    """A job, batch or prompt id does not exist in the ledger."""


class InferenceError(EcobatchError):
    """The inference backend failed to load a model or to decode a batch."""


class BatchTimeLimitError(InferenceError):
    """A batch outlived its time limit in a continuous-batching engine and was dropped from the
    decoder alone (retried like any failed attempt; its batch-mates go on)."""


class EngineStuckError(InferenceError):
    """A continuous-batching engine's decoding thread made no progress (a C call that never
    returns): only ending the worker process frees the device; its batches are redelivered."""


class RetryableError(EcobatchError):
    """An attempt failed in a way another attempt may not: try again after a delay.

    Outcome: retry (``pipeline.ledger.outcome.decide``), until the attempts counted in SQL
    pass the limit and the next claim dead-letters the batch.

    Attributes:
        attempts: attempts counted so far, which sets the backoff before the next one.
        delay_s: the delay the raiser asks for, or None for the policy's backoff.
    """

    def __init__(self, message: str, *, attempts: int = 0, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.delay_s = delay_s


class DeadLetterError(EcobatchError):
    """Another attempt would fail the same way: the batch goes to the dead-letter state at once.

    Outcome: dead-letter (``pipeline.ledger.outcome.decide``), with this message as the reason.
    """


class MemoryBudgetError(InferenceError, DeadLetterError):
    """A batch's KV cache would not fit the device's free memory, even split (dead-lettered:
    the same batch on the same device never fits)."""


class MeterError(EcobatchError):
    """An energy meter could not be read."""


class WaitTimeoutError(EcobatchError, TimeoutError):
    """A job did not finish within the time a caller was willing to wait.

    Also a builtin :class:`TimeoutError`, so ``except TimeoutError`` catches it too.
    """


class DataSourceError(ServiceError):
    """A carbon, price or weather data service failed or refused (HTTP error, timeout, bad JSON).

    Attributes:
        status: the HTTP status, when there was one.
        retry_after_s: how long the service asked callers to wait (``Retry-After``), if it did.
    """

    def __init__(self, message: str, *, status: int | None = None,
                 retry_after_s: float | None = None) -> None:
        self.status = status
        self.retry_after_s = retry_after_s
        super().__init__(message)
