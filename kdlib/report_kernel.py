"""The report runner's kernels, their time limits and clean stops on SIGINT/SIGTERM.

    stopper = Stopper(); stopper.install()        # main thread: SIGINT/SIGTERM -> clean stop
    limits = Limits(cell_timeout_s=None, notebook_timeout_s=600.0)
    managers = []
    with stopper.executing():                      # StopRequested is raised only in here
        papermill.execute_notebook(..., timeout_func=limits,
                                   kernel_manager_class=kernel_manager_class(log, managers))
    kill_kernels(managers)                         # whatever papermill did not shut down
    stopper.restore()

Imports of jupyter_client, ipykernel and zmq happen inside `kernel_manager_class`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from typing import TextIO

# Inline figures (Agg-based, no GUI). Plain "Agg" would stop ipykernel from showing figures.
KERNEL_MPLBACKEND = "module://matplotlib_inline.backend_inline"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequested(BaseException):
    """SIGINT or SIGTERM asked the runner to stop (a BaseException, like KeyboardInterrupt).

    `signum` is the signal number; `results` (set by `run_reports`) the results so far.
    """

    def __init__(self, signum: int, results=None):
        self.signum = int(signum)
        self.results = list(results or [])
        super().__init__(signal_name(signum))


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, and so on (``signal N`` for numbers without a name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Stopper:
    """Turns SIGINT/SIGTERM into a clean stop of the runner.

    The first signal is recorded in `signum`. If it arrives while a kernel runs (inside
    `executing()`), StopRequested is raised there, so the caller can shut the kernel down
    and keep the partial report; otherwise the caller sees `signum` at its next check.
    Later signals are recorded only, so the cleanup is not cut short.
    """

    def __init__(self):
        self.signum: int | None = None
        self._executing = False
        self._raised = False
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Install the handlers (main thread only; returns False elsewhere, doing nothing)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return True

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        while self._previous:
            signum, handler = self._previous.popitem()
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self._executing and not self._raised:
            self._raised = True
            raise StopRequested(signum)

    @contextlib.contextmanager
    def executing(self):
        """The region where a signal interrupts at once (raises StopRequested)."""
        if self.signum is not None and not self._raised:
            self._raised = True
            raise StopRequested(self.signum)
        self._executing = True
        try:
            yield
        finally:
            self._executing = False


class Limits:
    """nbclient's ``timeout_func``: seconds a cell may run, the smaller of the per-cell
    limit and what is left of the notebook's limit (None: no limit). The notebook's clock
    starts with its first cell (kernel start-up has its own limit in nbclient), or at
    `start`. `binding` says which limit the last cell ran under ("cell" or "notebook")."""

    def __init__(self, cell_timeout_s: float | None = None,
                 notebook_timeout_s: float | None = None):
        for name, value in (("cell_timeout_s", cell_timeout_s),
                            ("notebook_timeout_s", notebook_timeout_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not value > 0):
                raise ValueError(f"{name} must be None or a number > 0 (s), got {value!r}")
        self.cell_timeout_s = cell_timeout_s
        self.notebook_timeout_s = notebook_timeout_s
        self.deadline: float | None = None
        self.binding: str | None = None

    def start(self) -> None:
        """Start the notebook's clock (time.monotonic)."""
        if self.notebook_timeout_s is not None:
            self.deadline = time.monotonic() + self.notebook_timeout_s

    def expired(self) -> bool:
        """True once the notebook's limit has passed."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def __call__(self, cell=None) -> float | None:
        if self.deadline is None:
            self.start()
        limits = []
        if self.cell_timeout_s is not None:
            limits.append((float(self.cell_timeout_s), "cell"))
        if self.deadline is not None:  # nbclient reads 0 as "no limit": keep it positive
            limits.append((max(self.deadline - time.monotonic(), 0.01), "notebook"))
        if not limits:
            self.binding = None
            return None
        seconds, self.binding = min(limits)
        return seconds


def kernel_manager_class(kernel_log: TextIO | None = None, started: list | None = None,
                         env: dict | None = None, extensions=(), cwd=None):
    """An AsyncKernelManager class that always launches ipykernel in *this* interpreter.

    Registered kernelspecs are not consulted: this works in a fresh venv without a
    ``python3`` kernelspec and cannot pick up another environment's. MPLBACKEND and `env`
    (str -> str) are set for the kernel (inline figures, no GUI), the IPython
    `extensions` (module names) are loaded at its start, the kernel process's own stdout/stderr (its
    log, not cell output) go to `kernel_log` when given, every manager that starts a
    kernel is appended to `started` (for `kill_kernels`), the kernel starts in the folder
    `cwd` when given (papermill's own ``cwd=`` changes the whole process's working
    directory, which notebooks run from threads at the same time must not do), and
    CurveZMQ transport encryption is used when the installed jupyter_client and pyzmq
    support it.
    """
    import zmq
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    env = {str(k): str(v) for k, v in (env or {}).items()}
    extensions = [str(e) for e in extensions]
    cwd = None if cwd is None else os.fspath(cwd)
    encrypt = "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has(
        "curve"
    )

    class ThisInterpreterKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = get_kernel_dict()
            spec["env"] = {"MPLBACKEND": KERNEL_MPLBACKEND, **env}
            spec["argv"] = [*spec["argv"], *(f"--ext={e}" for e in extensions)]
            return KernelSpec(resource_dir=RESOURCES, **spec)

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return ThisInterpreterKernelSpecs(data_dir=self.data_dir)

        if encrypt:

            @default("transport_encryption")
            def _transport_encryption_default(self):
                return "auto"

        async def start_kernel(self, **kw):
            if cwd is not None:
                kw["cwd"] = cwd
            if kernel_log is not None:
                kw.setdefault("stdout", kernel_log)
                kw.setdefault("stderr", kernel_log)
            if started is not None:
                started.append(self)
            return await super().start_kernel(**kw)

    return ThisInterpreterKernelManager


def kill_kernels(managers, wait_s: float = 10.0) -> int:
    """SIGKILL the process group of every kernel in `managers` still alive and remove its
    connection file; returns how many were killed. Needed after StopRequested, which
    can land before papermill's own shutdown is in place."""
    killed = 0
    for km in managers:
        provisioner = getattr(km, "provisioner", None)
        proc = getattr(provisioner, "process", None)
        if isinstance(proc, subprocess.Popen) and proc.poll() is None:
            pgid = getattr(provisioner, "pgid", None)
            try:
                if pgid and hasattr(os, "killpg"):
                    os.killpg(pgid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:
                pass
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait_s)
            killed += 1
        with contextlib.suppress(Exception):
            km.cleanup_connection_file()
    return killed


__all__ = [
    "KERNEL_MPLBACKEND",
    "Limits",
    "STOP_SIGNALS",
    "StopRequested",
    "Stopper",
    "kernel_manager_class",
    "kill_kernels",
    "signal_name",
]
