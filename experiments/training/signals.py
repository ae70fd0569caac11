"""Stopping a run: a stop signal (SIGINT, SIGTERM) turned into :class:`RunInterrupted` where the run can keep what it
has, held while a checkpoint or a record is being written, and the :class:`RunStopped` error a stopped run raises,
whose message says what is kept and the command that continues it."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """A stop signal (SIGINT or SIGTERM) arrived during a run; the last checkpoint is kept.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that code catching ``Exception`` does not swallow it.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(f"stopped by {signal.Signals(signal_number).name}")


class RunStopped(RuntimeError):
    """A run stopped before its end (a stop signal, a diverging loss); the message says what is kept and how to resume.
    ``signal_number`` is the stop signal's, None for a run that stopped on its own (a diverging loss)."""

    def __init__(self, message: str, exit_code: int, signal_number: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.signal_number = signal_number

    def __reduce__(self) -> tuple[type[RunStopped], tuple[str, int, int | None]]:
        # Whole, across processes: a grid's pool sends a cell's error back pickled.
        return RunStopped, (str(self), self.exit_code, self.signal_number)


@contextmanager
def interrupt_on_stop_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`RunInterrupted` within the block (main thread only; elsewhere a no-op).

    Inside :func:`stop_signals_deferred` a signal is held and raised when that block ends.
    """

    def interrupt(signal_number: int, frame: Any) -> None:
        if _deferral.depth:
            _deferral.pending = _deferral.pending or signal_number
            return
        raise RunInterrupted(signal_number)

    try:
        previous = {number: signal.signal(number, interrupt) for number in _STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold stop signals until the block has run (a checkpoint written and recorded), then raise the first one.

    CPython runs signal handlers in the main thread whichever thread received the signal, so a flag the handler
    reads is enough, where blocking the signal in one thread would not be.
    """
    _deferral.depth += 1
    try:
        yield
    finally:
        _deferral.depth -= 1
    if _deferral.depth == 0 and _deferral.pending:
        signal_number, _deferral.pending = _deferral.pending, 0
        raise RunInterrupted(signal_number)


# Whether stop signals are being held (nesting depth of stop_signals_deferred) and the first one held.
_deferral = SimpleNamespace(depth=0, pending=0)
