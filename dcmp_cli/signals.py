"""Stopping long runs cleanly: a stop flag, and SIGINT/SIGTERM handlers that set it.

The first Ctrl-C (or SIGTERM) asks the run (training, a watched folder) to end after the
current step — training saves ``last/`` first; a second Ctrl-C interrupts at once. A
terminal sends Ctrl-C to the whole process group, data-loading worker processes
included, and forked workers inherit the handler: there it does nothing (the main
process stops them), so a request is reported once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar


class Stoppable(Protocol):
    """A stop flag: :class:`StopSignal`, or a :class:`threading.Event`."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


S = TypeVar("S", bound=Stoppable)


class StopSignal:
    """Set from a signal handler (or any thread) to end a run after its current step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signals(stop: S, on_first: Callable[[int], Any] | None = None) -> Iterator[S]:
    """SIGINT/SIGTERM set ``stop`` and call ``on_first(signum)`` once; a second SIGINT raises KeyboardInterrupt.

    Installed only from the main thread (elsewhere Python allows no handlers; ``stop`` is
    yielded unchanged). Processes forked inside the block ignore the handled signals.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    owner = os.getpid()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked worker: the training process handles the request
            return
        if stop.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        stop.set()
        if on_first is not None:
            on_first(signum)

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
