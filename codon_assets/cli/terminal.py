"""The terminal as the command line has it while Dagster runs steps in its process, and helper threads that
report to it."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


@contextmanager
def terminal_stream() -> Iterator[TextIO]:
    """The stderr this process has now. While Dagster executes steps in this process it points fd 2 at the run's
    compute log and mirrors that back through a `tail -F` process: up to a second late, and lost when the
    process ends abruptly."""
    try:
        fd = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # a stream without a descriptor (pytest's capture)
        yield sys.stderr
        return
    with open(fd, "w", buffering=1) as stream:
        yield stream


@contextmanager
def terminal_lines() -> Iterator[Callable[[str], None]]:
    """Lines to ``terminal_stream``, one writer at a time."""
    with terminal_stream() as stream:
        lock = threading.Lock()

        def say(line: str) -> None:
            with lock:
                stream.write(line + "\n")
                stream.flush()

        yield say


@contextmanager
def in_background(target: Callable[[threading.Event], None], name: str) -> Iterator[None]:
    """``target(stop)`` in a daemon thread for the duration of the block, then told to stop and joined."""
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
