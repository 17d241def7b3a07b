"""codon_assets.cli.run_guard: a killed run gives its `gpu` slot back, a waiting run names the slot's holder,
SIGINT/SIGTERM stop an in-process run, and one host partition runs in one process at a time."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.utils import make_new_run_id

from codon_assets.cli import run_guard

ROOT = Path(__file__).resolve().parents[1]


@dg.op(pool="gpu", config_schema={"seconds": float})
def gpu_sleep(context) -> None:
    time.sleep(context.op_config["seconds"])


@dg.job
def gpu_job():
    gpu_sleep()


def gpu_run_config(seconds: float) -> dict:
    return {"ops": {"gpu_sleep": {"config": {"seconds": seconds}}}, "execution": {"config": {"in_process": {}}}}


# What the CLI does around execute_job; `guarded` adds the interrupt handling and the slot-wait reporter.
DRIVER = """
import contextlib, sys
import dagster as dg
from codon_assets.cli import run_guard
from codon_assets_tests.test_run_guard import gpu_job, gpu_run_config

seconds, mode = float(sys.argv[1]), sys.argv[2]
with dg.DagsterInstance.get() as instance:
    try:
        with contextlib.ExitStack() as stack:
            if mode == "guarded":
                stack.enter_context(run_guard.interrupt_handling(instance))
                stack.enter_context(run_guard.slot_wait_reporter(instance, every_s=0.5))
            result = dg.execute_job(dg.reconstructable(gpu_job), instance, run_config=gpu_run_config(seconds),
                                    tags=run_guard.process_tags())
    except run_guard.Interrupted as exc:
        sys.exit(exc.exit_code)
print("run ended", result.success, flush=True)
"""

LOCK_HOLDER = """
import sys, time
from pathlib import Path
from codon_assets.cli.run_guard import partition_lock

release = Path(sys.argv[2])
with partition_lock(Path(sys.argv[1]), "S_cerevisiae", "holder run"):
    print("locked", flush=True)
    while not release.exists():
        time.sleep(0.05)
"""


def wait_for(condition, what: str, timeout: float = 60.0, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start(tmp_path: Path, name: str, code: str, *args: str) -> tuple[subprocess.Popen, Path]:
    # Output to a file: Dagster's compute-log `tail -F` child keeps a pipe open after the driver is killed.
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, log


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def gpu_info(instance):
    return instance.event_log_storage.get_concurrency_info("gpu")


def holder_of_gpu(instance) -> str | None:
    claimed = gpu_info(instance).claimed_slots
    return claimed[0].run_id if claimed else None


def add_run(instance, tags: dict[str, str], status=dg.DagsterRunStatus.STARTED) -> str:
    """A run record as a launcher would leave it (no worker behind it)."""
    run_id = make_new_run_id()
    instance.add_run(dg.DagsterRun(job_name="gpu_job", run_id=run_id, status=status, tags=tags))
    return run_id


def claim_gpu(instance, run_id: str) -> bool:
    storage = instance.event_log_storage
    storage.initialize_concurrency_limit_to_default("gpu")
    return storage.claim_concurrency_slot("gpu", run_id, "gpu_sleep").is_claimed


def own_tags(**changes: str) -> dict[str, str]:
    return {**run_guard.process_tags(), **changes}


def dead_pid() -> str:
    return subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_orphan_rules(instance):
    """Only runs launched on this host by a process that is gone are failed; a live worker, another host's run,
    a daemon's run and a retry (which copies its parent's tags) are left alone."""
    gone = dead_pid()
    alive = add_run(instance, own_tags())
    reused_pid = add_run(instance, own_tags(**{run_guard.PROCESS_START_TAG: "1"}))
    dead = add_run(instance, own_tags(**{run_guard.PID_TAG: gone}))
    canceling = add_run(instance, own_tags(**{run_guard.PID_TAG: gone}), dg.DagsterRunStatus.CANCELING)
    other_host = add_run(instance, own_tags(**{run_guard.PID_TAG: gone, run_guard.HOSTNAME_TAG: "elsewhere"}))
    other_container = add_run(instance, own_tags(**{run_guard.PID_TAG: gone, run_guard.PID_NAMESPACE_TAG: "pid:[1]"}))
    daemon_run = add_run(instance, {})
    retry = add_run(instance, own_tags(**{run_guard.PID_TAG: gone, "dagster/parent_run_id": dead}))
    finished = add_run(instance, {}, dg.DagsterRunStatus.FAILURE)
    assert claim_gpu(instance, finished)

    said: list[str] = []
    assert sorted(run_guard.fail_orphaned_runs(instance, say=said.append)) == sorted([reused_pid, dead, canceling])

    untouched = (alive, other_host, other_container, daemon_run, retry)
    assert {run_id: instance.get_run_by_id(run_id).status for run_id in untouched} == dict.fromkeys(
        untouched, dg.DagsterRunStatus.STARTED)
    assert [instance.get_run_by_id(run_id).status for run_id in (reused_pid, dead, canceling)] == [
        dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
    assert any(dead in line and f"worker process {gone} is gone" in line for line in said)
    assert gpu_info(instance).claimed_slots == []  # the finished run's leaked slot
    assert any(finished in line and "FAILURE" in line for line in said)


def test_slot_wait_reporter_names_the_holder(instance):
    holder = add_run(instance, {run_guard.PID_TAG: "4242", run_guard.HOSTNAME_TAG: "gpu-box"})
    waiter = add_run(instance, {})
    assert claim_gpu(instance, holder)
    assert not claim_gpu(instance, waiter)  # now a pending step of `waiter`

    said: list[str] = []
    with run_guard.slot_wait_reporter(instance, waiter, every_s=0.5, say=said.append):
        wait_for(lambda: len(said) >= 2, "two reports", timeout=20)
        instance.event_log_storage.free_concurrency_slots_for_run(holder)  # the waiting step is assigned the slot
        reports = len(said)
        time.sleep(2)
        assert len(said) <= reports + 1  # at most the report under way when the slot was freed
        stop_started = time.monotonic()
    assert time.monotonic() - stop_started < 2
    assert said[0].startswith(f"waiting for a slot in pool gpu: held by run {holder} (gpu_job, pid 4242 on gpu-box, "
                              "started ")


def test_slot_wait_reporter_frees_a_dead_holder(instance):
    """A holder launched here that died while the run waited is failed, not waited for."""
    gone = dead_pid()
    holder = add_run(instance, own_tags(**{run_guard.PID_TAG: gone}))
    waiter = add_run(instance, {})
    assert claim_gpu(instance, holder)
    assert not claim_gpu(instance, waiter)

    said: list[str] = []
    with run_guard.slot_wait_reporter(instance, waiter, every_s=0.5, say=said.append):
        wait_for(lambda: instance.get_run_by_id(holder).status == dg.DagsterRunStatus.FAILURE, "the holder to fail")
    assert f"worker process {gone} is gone" in said[0]
    assert claim_gpu(instance, waiter)


def wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def test_interrupt_handling_restores_handlers(instance):
    handlers, fd = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}, wakeup_fd()
    with run_guard.interrupt_handling(instance, say=lambda line: None):
        assert signal.getsignal(signal.SIGTERM) is not handlers[signal.SIGTERM]
        assert wakeup_fd() != fd
    assert ({s: signal.getsignal(s) for s in handlers}, wakeup_fd()) == (handlers, fd)


@pytest.mark.integration
def test_killed_run_is_failed_and_its_slot_freed(instance, tmp_path, processes):
    proc, log = start(tmp_path, "killed", DRIVER, "120", "plain")
    processes.append(proc)
    run_id = wait_for(lambda: holder_of_gpu(instance), "the driver's run to claim the gpu slot")
    # A live worker is never reaped.
    assert run_guard.fail_orphaned_runs(instance, say=lambda line: None) == []
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

    proc.kill()
    proc.wait()
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
    assert holder_of_gpu(instance) == run_id  # the issue: the killed run keeps the only slot

    said: list[str] = []
    assert run_guard.fail_orphaned_runs(instance, say=said.append) == [run_id]
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
    assert f"worker process {proc.pid} is gone" in said[0]
    info = gpu_info(instance)
    assert (info.claimed_slots, info.pending_steps) == ([], [])

    result = dg.execute_job(dg.reconstructable(gpu_job), instance, run_config=gpu_run_config(0))
    assert result.success


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_running_step(instance, tmp_path, processes, signum):
    proc, log = start(tmp_path, "signalled", DRIVER, "120", "guarded")
    processes.append(proc)
    run_id = wait_for(lambda: holder_of_gpu(instance), "the driver's run to claim the gpu slot")
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        returncode = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s after {signum.name}:\n{log.read_text()}")
    elapsed = time.monotonic() - sent
    output = log.read_text()
    assert returncode == 128 + signum, output
    assert elapsed < 10, output
    assert instance.get_run_by_id(run_id).status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE)
    info = gpu_info(instance)
    assert (info.claimed_slots, info.pending_steps) == ([], [])
    assert f"received {signum.name}" in output


@pytest.mark.integration
def test_signal_stops_a_run_waiting_for_the_slot(instance, tmp_path, processes):
    """An in-process run waiting for a pool slot ignores Dagster's interrupt flag: the guard's deadline ends it."""
    holder = add_run(instance, {})
    assert claim_gpu(instance, holder)
    proc, log = start(tmp_path, "waiting", DRIVER, "0", "guarded")
    processes.append(proc)

    def waiting_run():
        return next((step.run_id for step in gpu_info(instance).pending_steps if step.run_id != holder), None)

    run_id = wait_for(waiting_run, "the driver's run to wait for the gpu slot")
    wait_for(lambda: f"held by run {holder}" in log.read_text(), "the driver to name the holder", timeout=20)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        returncode = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s after SIGINT:\n{log.read_text()}")
    output = log.read_text()
    assert (returncode, time.monotonic() - sent < 10) == (130, True), output
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
    info = gpu_info(instance)
    assert [slot.run_id for slot in info.claimed_slots] == [holder]  # another run's slot is left alone
    assert [step.run_id for step in info.pending_steps] == [holder]


@pytest.mark.integration
def test_partition_lock_waits_for_the_holder(dagster_home, tmp_path, processes):
    release = tmp_path / "release"
    proc, log = start(tmp_path, "holder", LOCK_HOLDER, str(dagster_home), str(release))
    processes.append(proc)
    wait_for(lambda: "locked" in log.read_text(), "the holder to take the lock", timeout=30)

    said: list[str] = []
    acquired = threading.Event()

    def second_run():
        with run_guard.partition_lock(dagster_home, "S_cerevisiae", "second run", say=said.append, poll_s=0.1,
                                      every_s=0.5):
            acquired.set()

    waiter = threading.Thread(target=second_run)
    waiter.start()
    wait_for(lambda: len(said) >= 2, "two waiting messages", timeout=20)
    assert not acquired.is_set()
    assert said[0].startswith(f"waiting for run of S_cerevisiae by pid {proc.pid} (holder run, since ")
    release.touch()
    assert acquired.wait(20)
    waiter.join(timeout=20)
    assert proc.wait(timeout=20) == 0

    # A holder that is killed releases the lock with its process.
    proc, log = start(tmp_path, "killed-holder", LOCK_HOLDER, str(dagster_home), str(tmp_path / "never"))
    processes.append(proc)
    wait_for(lambda: "locked" in log.read_text(), "the second holder to take the lock", timeout=30)
    proc.kill()
    proc.wait()
    started = time.monotonic()
    with run_guard.partition_lock(dagster_home, "S_cerevisiae", "after a kill", say=said.append, poll_s=0.1):
        assert time.monotonic() - started < 5
