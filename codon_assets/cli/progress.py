"""Progress of a command-line run on the terminal: steps done of the selection, rate and ETA (tqdm), and the
feature step's own scoring progress. Read from the run's event log by a background thread, so the run itself
is untouched; silent when stderr is not a terminal (logs, CI, pipes)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from codon_assets.cli.run_guard import own_runs
from codon_assets.cli.terminal import in_background, terminal_stream

if TYPE_CHECKING:
    from dagster import DagsterInstance

POLL_S = 1.0


@contextmanager
def run_progress(instance: DagsterInstance, steps: list[str], enabled: bool | None = None) -> Iterator[None]:
    """A progress bar over ``steps`` while the block runs (``enabled`` None: only on a terminal)."""
    enabled = sys.stderr.isatty() if enabled is None else enabled
    if not enabled:
        yield
        return
    from tqdm import tqdm

    with terminal_stream() as stream, \
            tqdm(total=len(steps), unit="step", file=stream, leave=False, dynamic_ncols=True) as bar, \
            in_background(lambda stop: _follow(instance, bar, stop), "run-progress"):
        yield


def _follow(instance: DagsterInstance, bar, stop: threading.Event) -> None:
    from dagster import DagsterEventType, DagsterRunStatus

    finished = (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE, DagsterEventType.STEP_SKIPPED)
    run_id, cursor = None, 0
    while True:
        try:
            if run_id is None:
                runs = own_runs(instance, [DagsterRunStatus.STARTED])
                run_id = runs[0].run_id if runs else None
            events = [] if run_id is None else instance.all_logs(run_id)[cursor:]
        except Exception:  # a busy sqlite file or a closing instance: the bar stays as it is this time
            events = []
        cursor += len(events)
        for event in events:
            kind = event.dagster_event.event_type if event.dagster_event is not None else None
            if kind == DagsterEventType.STEP_START:
                bar.set_description(event.step_key or "")
            elif kind in finished:
                bar.update(1)
            elif kind is None and event.user_message.startswith("scored "):
                bar.set_postfix_str(event.user_message)  # the feature step's records, rate and ETA
        if stop.wait(POLL_S):
            return
