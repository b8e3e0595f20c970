"""kdlib.report_kernel without a kernel: time limits, the SIGINT/SIGTERM stopper, and
killing a kernel's process group."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from kdlib.report_kernel import Limits, Stopper, StopRequested, kill_kernels, signal_name


def test_limits_take_the_smaller_of_cell_and_remaining_notebook_time():
    assert Limits()() is None  # no limit at all
    only_cell = Limits(cell_timeout_s=7)
    assert only_cell() == 7.0 and only_cell.binding == "cell" and not only_cell.expired()
    both = Limits(cell_timeout_s=30, notebook_timeout_s=10)
    assert both.deadline is None and not both.expired()  # the clock starts with a cell
    left = both()
    assert 9.0 < left <= 10.0 and both.binding == "notebook"
    time.sleep(0.05)
    assert both() < left  # one clock for the whole notebook
    tight = Limits(cell_timeout_s=2, notebook_timeout_s=10)
    tight.start()
    assert tight() == 2.0 and tight.binding == "cell"
    spent = Limits(notebook_timeout_s=0.05)
    spent.start()
    time.sleep(0.06)
    assert spent.expired() and spent() == 0.01  # never 0: nbclient reads 0 as no limit


@pytest.mark.parametrize("bad", [0, -1, True, "5", float("nan")])
def test_limits_reject_bad_values(bad):
    with pytest.raises(ValueError, match="must be None or a number > 0"):
        Limits(notebook_timeout_s=bad)


def test_stopper_records_outside_and_raises_inside_the_executing_region():
    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)  # SIG_IGN under nohup / a background job
    stopper = Stopper()
    assert stopper.install()
    try:
        signal.raise_signal(signal.SIGTERM)  # between notebooks: recorded only
        assert stopper.signum == signal.SIGTERM
        with pytest.raises(StopRequested) as exc:  # the next kernel does not start
            with stopper.executing():
                raise AssertionError("must not get here")
        assert exc.value.signum == signal.SIGTERM and str(exc.value) == "SIGTERM"
    finally:
        stopper.restore()
    assert signal.getsignal(signal.SIGTERM) is before

    stopper = Stopper()
    stopper.install()
    reached = []
    try:
        with pytest.raises(StopRequested) as exc:
            with stopper.executing():
                signal.raise_signal(signal.SIGINT)  # while a kernel runs: raises here
                reached.append("after")
        assert exc.value.signum == signal.SIGINT and reached == []
        signal.raise_signal(signal.SIGTERM)  # during cleanup: recorded, not raised
        assert stopper.signum == signal.SIGINT
    finally:
        stopper.restore()
    assert signal.getsignal(signal.SIGINT) is before_int


def test_signal_name():
    assert signal_name(15) == "SIGTERM" and signal_name(2) == "SIGINT"
    assert signal_name(999) == "signal 999"


class _Provisioner:
    def __init__(self, proc):
        self.process, self.pgid = proc, proc.pid


class _Manager:
    def __init__(self, proc):
        self.provisioner = _Provisioner(proc)
        self.cleaned = 0

    def cleanup_connection_file(self):
        self.cleaned += 1


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_kernels_kills_the_process_group():
    # a "kernel" in its own session with a child, as jupyter_client starts kernels
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
            "print(p.pid, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    assert _alive(proc.pid) and _alive(child)
    km = _Manager(proc)
    assert kill_kernels([km]) == 1
    assert proc.poll() == -signal.SIGKILL and km.cleaned == 1
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)  # the child went with it
    assert kill_kernels([km]) == 0  # already dead: nothing to do
    proc.stdout.close()
