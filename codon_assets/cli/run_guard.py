"""Keeps a killed or interrupted command-line run from blocking the instance. The CLI runs in its own process,
with no daemon to notice when it dies: its run would stay STARTED holding its pool slots. These helpers tag each
run with its process, reap runs whose process is gone, say who holds a slot a run waits for, turn SIGINT/SIGTERM
into a canceled run, and serialise the runs of one host partition."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from codon_assets.cli.terminal import in_background, terminal_lines

if TYPE_CHECKING:
    from dagster import DagsterInstance, DagsterRun, DagsterRunStatus
PID_TAG = "codon_assets/pid"
HOSTNAME_TAG = "codon_assets/hostname"
PROCESS_START_TAG = "codon_assets/process_start"
PID_NAMESPACE_TAG = "codon_assets/pid_namespace"
Say = Callable[[str], None]
_HAS_PROC = os.path.exists("/proc/self/stat")


# --- process identity -------------------------------------------------------------------------------------

def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3 and on of /proc/<pid>/stat (the command name before them may hold spaces); None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def _start_ticks(fields: list[str]) -> str:
    return fields[19]  # field 22: start time, in clock ticks after boot


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime")


def _alive(pid: int, *, start_ticks: str | None = None, started_by: float | None = None) -> bool:
    """Whether `pid` still runs and is the process meant, not a later one that reuses its number: the same start
    ticks, or started no later than `started_by` (a Unix time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    fields = _proc_stat(pid)
    if fields is None:  # without /proc the pid is all there is to check; with it, the process has just ended
        return not _HAS_PROC
    if fields[0] in ("Z", "X"):  # a zombie has ended; only its parent has not reaped it yet
        return False
    if start_ticks is not None:
        return _start_ticks(fields) == start_ticks
    if started_by is not None:
        started = _boot_time() + int(_start_ticks(fields)) / os.sysconf("SC_CLK_TCK")
        return started <= started_by + 2.0  # btime has whole seconds
    return True


def process_tags() -> dict[str, str]:
    """Tags for each run this process launches: they let a later process tell whether the run's worker lives."""
    tags = {PID_TAG: str(os.getpid()), HOSTNAME_TAG: socket.gethostname()}
    fields = _proc_stat(os.getpid())
    if fields is not None:
        tags[PROCESS_START_TAG] = _start_ticks(fields)
        # Containers with the host's network have its hostname but pids of their own.
        tags[PID_NAMESPACE_TAG] = os.readlink("/proc/self/ns/pid")
    return tags


def own_runs(instance: DagsterInstance, statuses: Sequence[DagsterRunStatus] | None = None) -> list[DagsterRun]:
    """The runs this process launched (with `process_tags()`)."""
    from dagster import RunsFilter

    return list(instance.get_runs(filters=RunsFilter(tags=process_tags(), statuses=statuses)))


def _launched_here(run: DagsterRun, here: dict[str, str]) -> bool:
    """Whether `run` was launched by a process whose pid means the same here (`here`: this process's tags)."""
    from dagster._core.storage.tags import PARENT_RUN_ID_TAG

    # A retry or re-execution (by the daemon, from the UI) copies its parent's tags, pid included, but runs in
    # a worker of its own: it carries the parent's id, and is never ours to judge.
    return (PID_TAG in run.tags and PARENT_RUN_ID_TAG not in run.tags
            and all(run.tags.get(tag) == here.get(tag) for tag in (HOSTNAME_TAG, PID_NAMESPACE_TAG)))


def _worker_alive(instance: DagsterInstance, run: DagsterRun) -> bool:
    from dagster import DagsterEventType

    pid = int(run.tags[PID_TAG])
    if _alive(pid, start_ticks=run.tags.get(PROCESS_START_TAG)):
        return True
    # Large inputs run each step in a child process (multiprocess executor), which goes on after its parent is
    # killed and may still be using the GPU: its pid is on its STEP_START event.
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START):
        child = entry.dagster_event.pid if entry.dagster_event else None
        if child and child != pid and _alive(child, started_by=entry.timestamp):
            return True
    return False


# --- output -----------------------------------------------------------------------------------------------

def _print_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _clock(timestamp: float) -> str:
    moment = time.localtime(timestamp)
    same_day = moment[:3] == time.localtime()[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", moment)


# --- orphaned runs and leaked slots -----------------------------------------------------------------------

def fail_orphaned_runs(instance: DagsterInstance, *, say: Say = _print_stderr) -> list[str]:
    """Mark failed (canceled, if termination had been requested) the runs launched with `process_tags()` on this
    host whose worker process is gone, and free their pool slots; free the slots still held by finished runs.
    Returns the ids of the runs marked."""
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.events import JobFailureData, RunFailureReason

    here = process_tags()
    storage = instance.event_log_storage
    unfinished = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
                  DagsterRunStatus.CANCELING]
    marked = []
    for run in instance.get_runs(filters=RunsFilter(statuses=unfinished, tags={HOSTNAME_TAG: here[HOSTNAME_TAG]})):
        if not _launched_here(run, here) or _worker_alive(instance, run):
            continue
        gone = f"worker process {run.tags[PID_TAG]} is gone"
        canceling = run.status == DagsterRunStatus.CANCELING
        message = f"{gone} (killed?): marked {'canceled' if canceling else 'failed'} by codon_assets.cli.run_guard"
        if canceling:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message, JobFailureData(
                error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
        storage.free_concurrency_slots_for_run(run.run_id)
        say(f"run {run.run_id} ({run.job_name}): {gone}; marked {'canceled' if canceling else 'failed'}, "
            "its pool slots freed")
        marked.append(run.run_id)
    if storage.supports_global_concurrency_limits:
        _free_slots_of_finished_runs(instance, here, say)
    return marked


def _free_slots_of_finished_runs(instance: DagsterInstance, here: dict[str, str], say: Say) -> None:
    storage = instance.event_log_storage
    infos = storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).values()
    holders = storage.get_concurrency_run_ids() | {slot.run_id for info in infos for slot in info.claimed_slots}
    for run_id in sorted(holders):
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            continue
        # A run marked finished from outside (the UI's terminate) while our worker still executes a step: the
        # worker frees the slot when the step ends.
        if run is not None and _launched_here(run, here) and _worker_alive(instance, run):
            continue
        storage.free_concurrency_slots_for_run(run_id)
        ended = f"ended {run.status.value}" if run is not None else "no longer exists"
        say(f"run {run_id} {ended} but still held pool slots: freed")


# --- who holds the slot a run waits for -------------------------------------------------------------------

@contextmanager
def slot_wait_reporter(instance: DagsterInstance, run_id: str | None = None, *, every_s: float = 30.0,
                       say: Say | None = None) -> Iterator[None]:
    """While the run (None: any run this process launched) has a step waiting for a pool slot, say at once and
    then every `every_s` seconds who holds the pool's slots; a holder that died meanwhile is failed
    (`fail_orphaned_runs`) rather than waited for."""
    with ExitStack() as stack:
        say = say or stack.enter_context(terminal_lines())
        with in_background(lambda stop: _report_slot_waits(instance, run_id, every_s, say, stop), "slot-wait-reporter"):
            yield


def _report_slot_waits(instance: DagsterInstance, run_id: str | None, every_s: float, say: Say,
                       stop: threading.Event) -> None:
    poll_s = min(1.0, every_s)
    last_said: float | None = None
    failed = False
    while True:
        try:
            if not _slot_wait_lines(instance, run_id):
                last_said = None
            elif last_said is None or time.monotonic() - last_said >= every_s - poll_s:
                last_said = time.monotonic()
                fail_orphaned_runs(instance, say=say)
                for line in _slot_wait_lines(instance, run_id):
                    say(line)
        except Exception as exc:  # a busy sqlite file, an instance being closed: the run goes on regardless
            if not failed:
                say(f"cannot tell who holds the pool slots: {exc}")
            failed = True
        if stop.wait(poll_s):
            return


def _slot_wait_lines(instance: DagsterInstance, run_id: str | None = None) -> list[str]:
    """One line per pool in which the run (None: any run of this process) has a step waiting for a slot."""
    from dagster import DagsterRunStatus

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    # The cheap question first (one small table): most polls find no run waiting for any slot.
    queued = storage.get_concurrency_run_ids()
    if not queued:
        return []
    waiting = {run_id} if run_id else {run.run_id for run in own_runs(instance, [DagsterRunStatus.STARTED])}
    if not waiting & queued:
        return []
    lines = []
    for pool, info in sorted(storage.get_concurrency_infos(sorted(storage.get_concurrency_keys())).items()):
        # A pending step that has been assigned a slot takes it at its next claim: only unassigned ones wait.
        if not any(step.run_id in waiting and step.assigned_timestamp is None for step in info.pending_steps):
            continue
        holders = sorted({slot.run_id for slot in info.claimed_slots})
        held = ("held by " + "; ".join(_describe_run(instance, holder) for holder in holders) if holders
                else f"none is held (limit {info.limit}); queued behind other runs' steps")
        lines.append(f"waiting for a slot in pool {pool}: {held}")
    return lines


def _describe_run(instance: DagsterInstance, run_id: str) -> str:
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return f"run {run_id} (deleted; `codon_assets.cli.run_guard.fail_orphaned_runs` frees its slot)"
    run = record.dagster_run
    parts = [run.job_name]
    if PID_TAG in run.tags:
        where = "" if run.tags.get(HOSTNAME_TAG) == socket.gethostname() else f" on {run.tags.get(HOSTNAME_TAG)}"
        parts.append(f"pid {run.tags[PID_TAG]}{where}")
    started = record.start_time or record.create_timestamp.timestamp()
    parts.append(f"started {_clock(started)}")
    if run.is_finished:
        parts.append(f"ended {run.status.value}: a leaked slot, `codon_assets.cli.run_guard.fail_orphaned_runs` frees it")
    return f"run {run_id} ({', '.join(parts)})"


# --- SIGINT and SIGTERM -----------------------------------------------------------------------------------

class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the command; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def interrupt_handling(instance: DagsterInstance, *, grace_s: float = 5.0, say: Say | None = None) -> Iterator[None]:
    """Stop the runs this process launches on SIGINT or SIGTERM: they end CANCELED (FAILURE when Dagster records
    the interruption first), their pool slots are freed, and `Interrupted` leaves the block. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("interrupt_handling: signal handlers can only be set in the main thread")
    with ExitStack() as stack:
        guard = _InterruptGuard(instance, grace_s, say or stack.enter_context(terminal_lines()))
        stack.enter_context(guard)
        yield


class _InterruptGuard:
    """Dagster's `execute_job` replaces the SIGINT and SIGTERM handlers while it runs (`capture_interrupts`): a
    signal then raises inside a step's code, is only noted between steps, and is never looked at while an
    in-process run waits for a pool slot. So a watcher thread also reads the signal numbers that every
    Python-level handler writes to `signal.set_wakeup_fd`: it marks the runs CANCELING (Dagster then ends an
    interrupted run CANCELED) and, if the block has not been left `grace_s` later, cancels the runs, frees their
    slots and ends the process."""

    def __init__(self, instance: DagsterInstance, grace_s: float, say: Say):
        self.instance, self.grace_s, self.say = instance, grace_s, say
        self.signum: int | None = None
        self._raised = False
        self._left = threading.Event()
        self._finish_lock = threading.Lock()
        self._finished = False

    def __enter__(self) -> _InterruptGuard:
        # Only the runs launched inside the block are this guard's to cancel.
        self._earlier_runs = {run.run_id for run in own_runs(self.instance)}
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._old_wakeup_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._old_handlers = {signum: signal.signal(signum, self._on_signal)
                              for signum in (signal.SIGINT, signal.SIGTERM)}
        self._watcher = threading.Thread(target=self._watch, name="interrupt-watcher", daemon=True)
        self._watcher.start()
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        self._raised = True  # a signal from here on is handled below, not raised in the middle of it
        self._left.set()
        try:
            os.write(self._write_fd, b"\0")  # wakes the watcher, after any signal number written before it
            self._watcher.join(timeout=self.grace_s)
            if self.signum is not None:
                self._finish()
        finally:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            os.close(self._read_fd)
            os.close(self._write_fd)
        if self.signum is None or isinstance(exc, Interrupted):
            return False
        # Dagster turned the interruption into a finished run (with raise_on_error=False execute_job returns).
        raise Interrupted(self.signum) from exc

    def _on_signal(self, signum: int, frame) -> None:
        self.signum = self.signum or signum
        if not self._raised:
            self._raised = True
            raise Interrupted(signum)
        # A second signal while the run is being stopped: the watcher's deadline ends the process if that hangs.

    def _watch(self) -> None:
        stopping = False
        while True:
            for signum in os.read(self._read_fd, 64):
                if signum == 0:
                    return
                if signum in (signal.SIGINT, signal.SIGTERM) and not stopping:
                    stopping = True
                    self.signum = self.signum or signum
                    self._stop(signum)

    def _runs(self, statuses: Sequence[DagsterRunStatus] | None = None) -> list[DagsterRun]:
        return [run for run in own_runs(self.instance, statuses) if run.run_id not in self._earlier_runs]

    def _stop(self, signum: int) -> None:
        from dagster import DagsterRunStatus

        name = signal.Signals(signum).name
        self.say(f"received {name}: stopping (at most {self.grace_s:.0f} s)")
        try:
            for run in self._runs([DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTED]):
                self.instance.report_run_canceling(run, f"{name} received by the command line (pid {os.getpid()})")
        except Exception as exc:  # the deadline below must hold whatever the storage does
            self.say(f"could not mark the run canceling: {exc}")
        if self._left.wait(self.grace_s):
            return
        self.say(f"the run did not stop within {self.grace_s:.0f} s of {name} (a step inside a long library call, "
                 "or waiting for a pool slot, does not look at signals): ending the process")
        try:
            self._finish()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)

    def _finish(self) -> None:
        with self._finish_lock:
            if self._finished:
                return
            self._finished = True
            name = signal.Signals(self.signum).name
            for run in self._runs():
                if not run.is_finished:
                    self.instance.report_run_canceled(run, f"canceled: the command line received {name}")
                self.instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
                self.say(f"run {run.run_id} ended {self.instance.get_run_by_id(run.run_id).status.value}; "
                         "its pool slots are free")


# --- one run per host partition ---------------------------------------------------------------------------

@contextmanager
def partition_lock(home: Path, host: str, run_label: str, *, say: Say | None = None, poll_s: float = 1.0,
                   every_s: float = 30.0) -> Iterator[None]:
    """Hold `$DAGSTER_HOME/locks/<host>.lock` for the block. A process that has to wait says so at once and every
    `every_s` seconds, naming the holder; the lock is an flock, so a holder that dies releases it."""
    from filelock import FileLock, Timeout

    locks = Path(home) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{host}.lock"))
    holder = locks / f"{host}.json"
    with ExitStack() as stack:
        say = say or stack.enter_context(terminal_lines())
        timeout = 0.0
        while True:
            try:
                lock.acquire(timeout=timeout, poll_interval=poll_s)
                break
            except Timeout:
                say(f"waiting for run of {host} by {_describe_holder(holder)}")
                timeout = every_s
        try:
            tmp = holder.with_name(f".{holder.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(), "label": run_label,
                                       "since": time.time()}))
            os.replace(tmp, holder)
            yield
        finally:
            holder.unlink(missing_ok=True)
            lock.release()


def _describe_holder(holder: Path) -> str:
    try:
        info = json.loads(holder.read_text())
    except (OSError, ValueError):  # the holder has just taken the lock and not yet written who it is
        return "another process"
    where = "" if info["hostname"] == socket.gethostname() else f" on {info['hostname']}"
    return f"pid {info['pid']}{where} ({info['label']}, since {_clock(info['since'])})"
