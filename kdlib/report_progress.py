"""Live progress of ``kdlib report``: the cell a notebook is in and its tqdm bars.

Kernel side: the runner starts every kernel with this module as an IPython extension
(``--ext=kdlib.report_progress``) and two environment variables. With KDLIB_PROGRESS set,
every tqdm bar the notebook creates through ``tqdm.auto`` / ``tqdm`` (all of kdlib's) is
switched on - including bars a notebook disables with ``progress=INTERACTIVE`` - and
reports to that file instead of the notebook's outputs, one ``<bar id>\\t<text>`` line per
refresh (at most one a second per bar) and ``<bar id>\\t`` when it closes; the saved
report is unchanged. With KDLIB_KERNEL_INFO set, after each cell that has imported torch
the kernel writes {"device", "torch_threads"} there (JSON).

Runner side: `ProgressLine` shows, per notebook, ``[i/n] name  12s  cell 5/14 (Heading)
first line | sweep: 3/12 ...``; `ProgressBoard` puts the lines of the notebooks running at
once on one stream. On a terminal they form a block of lines (one per running notebook)
below the runner's other messages, rewritten in place, and a notebook's final line moves
above the block; in a log they are plain lines (at every cell change and at most one per
`interval_s` otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import TextIO

PROGRESS_ENV = "KDLIB_PROGRESS"
KERNEL_INFO_ENV = "KDLIB_KERNEL_INFO"
BAR_INTERVAL_S = 1.0

# --------------------------------------------------------------------------- kernel side


class _Null:
    """A file that swallows what tqdm would print itself."""

    def write(self, text):
        return len(text)

    def flush(self):
        pass


def _bar_class(base, sink):
    lock = threading.Lock()

    class RunnerBar(base):
        """tqdm reporting to the runner's progress file (always enabled, no output)."""

        def __init__(self, *args, **kw):
            kw.update(file=_Null(), disable=False, position=0, ncols=0, ascii=True,
                      dynamic_ncols=False)
            kw["mininterval"] = max(float(kw.get("mininterval") or 0.0), BAR_INTERVAL_S)
            super().__init__(*args, **kw)

        def display(self, msg=None, pos=None):
            text = self.__str__() if msg is None else msg
            text = " ".join(str(text).split())
            with lock:
                sink.write(f"{id(self)}\t{text}\n")
                sink.flush()
            return True

        def close(self):
            if getattr(self, "_kdlib_closed", False):
                return
            self._kdlib_closed = True
            try:
                super().close()
            finally:
                with lock:
                    sink.write(f"{id(self)}\t\n")
                    sink.flush()

    RunnerBar.__name__ = RunnerBar.__qualname__ = "tqdm"
    return RunnerBar


def install_bars(path) -> type:
    """Route every tqdm.auto / tqdm bar created from now on to the file `path`; returns
    the bar class."""
    import tqdm as tqdm_pkg
    import tqdm.auto
    import tqdm.autonotebook
    import tqdm.std

    sink = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (kernel-long)
    bar = _bar_class(tqdm.std.tqdm, sink)

    def trange(*args, **kw):
        return bar(range(*args), **kw)

    for module in (tqdm_pkg, tqdm.auto, tqdm.autonotebook):
        module.tqdm = bar
        module.trange = trange
    return bar


def kernel_info() -> dict | None:
    """{"device", "torch_threads"} of this process, or None before torch is imported."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return None
    device = f"CPU ({os.cpu_count()} cores)"
    try:
        if torch.cuda.is_available():
            device = f"{torch.cuda.get_device_name(0)} (CUDA)"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "Apple MPS"
    except Exception:  # noqa: BLE001 - a device query must never fail a cell
        pass
    return {"device": device, "torch_threads": int(torch.get_num_threads())}


def load_ipython_extension(ipython) -> None:
    """IPython extension entry point (the runner's kernels load it at start)."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        install_bars(path)
    info_path = os.environ.get(KERNEL_INFO_ENV)
    if info_path:
        last: list = [None]

        def _record(*_args):
            info = kernel_info()
            if info is not None and info != last[0]:
                last[0] = info
                from kdlib.atomic import atomic_write

                atomic_write(info_path, json.dumps(info))

        ipython.events.register("post_run_cell", _record)


# --------------------------------------------------------------------------- runner side


def read_bars(text: str, bars: dict | None = None) -> dict:
    """Apply progress-file lines (`text`, complete lines) to `bars` {id: text}: a line
    with text sets it, an empty one removes the bar. Returns `bars` (insertion order)."""
    bars = {} if bars is None else bars
    for line in text.splitlines():
        bar_id, sep, msg = line.partition("\t")
        if not sep:
            continue
        if msg.strip():
            bars[bar_id] = msg.strip()
        else:
            bars.pop(bar_id, None)
    return bars


def cell_label(source: str, max_len: int = 40) -> str:
    """The first non-empty line of a cell's source, cut to `max_len` characters."""
    for line in source.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= max_len else line[: max_len - 3] + "..."
    return ""


def heading(source: str) -> str | None:
    """The text of the first markdown heading in `source` ('## Table 6' -> 'Table 6')."""
    for line in source.splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip() or None
    return None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressBoard:
    """One stream shared by the progress lines of the notebooks running at once.

    File-like (``write``/``flush``): text written to it is shown as permanent lines, one
    write call's complete lines together (each thread has its own line buffer). On a
    terminal (`tty`) the live lines (`update`) form a block below the permanent ones,
    each cut to the terminal width and rewritten in place; `finish` turns a live line
    into a permanent one. In a log every update is a plain line.
    """

    def __init__(self, stream: TextIO, tty: bool | None = None):
        if not hasattr(stream, "write"):
            raise TypeError(f"stream must be a text stream, got {type(stream).__name__}")
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)()) if tty is None else tty
        self._live: dict = {}  # key -> text, in the order the lines appeared
        self._drawn = 0  # live lines on the screen below the cursor's line
        self._buffers: dict[int, str] = {}
        self._lock = threading.RLock()

    def _cut(self, text: str) -> str:
        width = max(shutil.get_terminal_size((100, 20)).columns - 1, 20)
        return text if len(text) <= width else text[: width - 3] + "..."

    def _show(self, permanent=()) -> None:
        """Write `permanent` lines, then the block of live lines (terminal) - one write."""
        if not self.tty:
            if permanent:
                self.stream.write("".join(f"{line}\n" for line in permanent))
                self.stream.flush()
            return
        out = f"\r\x1b[{self._drawn}A" if self._drawn else "\r"
        out += "".join(f"{line}\x1b[K\n" for line in permanent)
        out += "".join(f"{self._cut(text)}\x1b[K\n" for text in self._live.values())
        out += "\x1b[J"  # erase what is left of a longer block
        self._drawn = len(self._live)
        self.stream.write(out)
        self.stream.flush()

    def update(self, key, text: str) -> None:
        """Show `text` as the live line of `key` (a new one goes to the end of the block)."""
        with self._lock:
            if self.tty:
                self._live[key] = text
                self._show()
            else:
                self._show([text])

    def finish(self, key, text: str) -> None:
        """Drop the live line of `key` and print `text` as a permanent line."""
        with self._lock:
            self._live.pop(key, None)
            self._show([text])

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, got {type(text).__name__}")
        with self._lock:
            ident = threading.get_ident()
            buf = self._buffers.pop(ident, "") + text
            complete, sep, rest = buf.rpartition("\n")
            if rest:
                self._buffers[ident] = rest
            if sep:
                self._show(complete.split("\n"))
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest = self._buffers.pop(threading.get_ident(), "")
            if rest:
                self._show([rest])
            self.stream.flush()


class ProgressLine:
    """The progress display of one notebook run.

    `on_cell_start` is nbclient's hook (cell=, cell_index=); `n_cells` the number of
    non-empty code cells (the papermill parameters cell included). `start()` polls the bar
    file `bars_path` in a thread; `finish(text)` stops it and prints the final line.
    On a terminal (`tty`) the line is rewritten in place, cut to the terminal width.
    """

    def __init__(self, stream: TextIO, tag: str, n_cells: int, bars_path=None,
                 tty: bool | None = None, interval_s: float = 10.0, poll_s: float = 1.0):
        self.board = stream if isinstance(stream, ProgressBoard) else ProgressBoard(stream, tty)
        self.stream, self.tag, self.n_cells = stream, tag, max(int(n_cells), 1)
        self.bars_path = Path(bars_path) if bars_path is not None else None
        self.tty = self.board.tty
        self.interval_s, self.poll_s = float(interval_s), float(poll_s)
        self.cell = 0
        self.label = ""
        self.section: str | None = None
        self.bars: dict = {}
        self._offset = 0
        self._partial = ""
        self._t0 = time.monotonic()
        self._last_emit = -1e9
        self._last_text = ""
        self._done = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- input
    def on_cell_start(self, cell=None, cell_index=None, **_kw) -> None:
        if cell is None:
            return
        source = cell.get("source", "")
        if cell.get("cell_type") == "markdown":
            self.section = cell_label(heading(source) or "", 40) or self.section
            return
        if cell.get("cell_type") != "code" or not source.strip():
            return
        with self._lock:
            self.cell = min(self.cell + 1, self.n_cells)
            tags = cell.get("metadata", {}).get("tags", [])
            self.label = "(parameters)" if "injected-parameters" in tags else cell_label(source)
        self.poll(force=True)

    def _read(self) -> None:
        if self.bars_path is None:
            return
        try:
            with open(self.bars_path, encoding="utf-8", errors="replace") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
                self._offset = fh.tell()
        except OSError:
            return
        text = self._partial + chunk
        complete, _, self._partial = text.rpartition("\n")
        if complete:
            read_bars(complete + "\n", self.bars)

    # ---- output
    def text(self) -> str:
        """The current line (no terminal control characters)."""
        parts = [f"{self.tag}  {_clock(time.monotonic() - self._t0)}"]
        if self.cell:
            where = f"cell {self.cell}/{self.n_cells}"
            if self.section:
                where += f" ({self.section})"
            parts.append(f"{where} {self.label}".rstrip())
        line = "  ".join(parts)
        if self.bars:
            line += " | " + " | ".join(list(self.bars.values())[-2:])
        return line

    def _write(self, text: str, final: bool = False) -> None:
        if final:
            self._done = True
            self.board.finish(self, text)
        elif not self._done:  # a poll that outlived finish() must not bring the line back
            self.board.update(self, text)

    def poll(self, force: bool = False) -> None:
        """Read new bar lines and show the line: on a terminal whenever it changed, in a
        log when `force`d (a cell change) or `interval_s` after the last line."""
        with self._lock:
            self._read()
            text = self.text()
            now = time.monotonic()
            if self.tty:
                changed = text != self._last_text
            else:
                state = text.split("  ", 2)[-1]  # without the clock
                changed = force or (now - self._last_emit >= self.interval_s
                                    and state != self._last_text.split("  ", 2)[-1])
            if changed:
                self._write(text)
                self._last_text, self._last_emit = text, now

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the display must never stop a run
                pass

    def start(self) -> ProgressLine:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="kdlib-progress", daemon=True)
        self._thread.start()
        return self

    def finish(self, text: str) -> None:
        """Stop polling and print `text` as the notebook's final line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._write(text, final=True)


__all__ = ["BAR_INTERVAL_S", "KERNEL_INFO_ENV", "PROGRESS_ENV", "ProgressBoard", "ProgressLine",
           "cell_label", "heading", "install_bars", "kernel_info", "load_ipython_extension",
           "read_bars"]
