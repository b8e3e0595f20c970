"""kdlib.report_progress: the kernel's tqdm bars routed to a file, and the runner's line."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

from kdlib.report_progress import ProgressBoard, ProgressLine, cell_label, heading, read_bars


def test_read_bars_tracks_open_bars_in_order():
    bars = read_bars("1\tsweep: 0/3\n2\tepochs: 1/10\n1\tsweep: 1/3\n")
    assert bars == {"1": "sweep: 1/3", "2": "epochs: 1/10"}
    assert read_bars("2\t\nnoise without a tab\n", bars) == {"1": "sweep: 1/3"}


def test_labels():
    assert cell_label("\n\n  df = ts.run(cfg)  \nmore") == "df = ts.run(cfg)"
    assert cell_label("x" * 80, max_len=10) == "xxxxxxx..."
    assert heading("text\n## Table 6: the sweep\n") == "Table 6: the sweep"
    assert heading("no heading") is None


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_log_lines_at_cell_changes_and_throttled_between(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr("kdlib.report_progress.time.monotonic", clock)
    bars = tmp_path / "bars"
    bars.write_text("")
    out = io.StringIO()
    line = ProgressLine(out, "[2/3] 02_x", 3, bars, tty=False, interval_s=10)
    line.on_cell_start(cell={"cell_type": "markdown", "source": "## The sweep"})
    line.on_cell_start(cell={"cell_type": "code", "source": "", "metadata": {}})  # empty
    line.on_cell_start(cell={"cell_type": "code", "source": "x = 1\ny = 2",
                             "metadata": {"tags": ["injected-parameters"]}})
    clock.t += 3
    with open(bars, "a") as fh:
        fh.write("7\tepochs: 10% 1/10\n8\tpart")  # the second line is not complete yet
    line.poll()  # 3 s after the last line: nothing
    clock.t += 8
    line.poll()  # 11 s: the bar
    line.poll()  # unchanged: nothing
    with open(bars, "a") as fh:
        fh.write("ial\n")
    line.on_cell_start(cell={"cell_type": "code", "source": "df = run()", "metadata": {}})
    clock.t += 50
    line.finish("[2/3] 02_x: ok in 61.0 s")
    assert out.getvalue().splitlines() == [
        "[2/3] 02_x  0s  cell 1/3 (The sweep) (parameters)",
        "[2/3] 02_x  11s  cell 1/3 (The sweep) (parameters) | epochs: 10% 1/10",
        "[2/3] 02_x  11s  cell 2/3 (The sweep) df = run() | epochs: 10% 1/10 | partial",
        "[2/3] 02_x: ok in 61.0 s",
    ]


def _width(monkeypatch, columns):
    monkeypatch.setattr("kdlib.report_progress.shutil.get_terminal_size",
                        lambda fallback: type("S", (), {"columns": columns})())


def test_terminal_line_is_rewritten_in_place(tmp_path, monkeypatch):
    _width(monkeypatch, 41)
    out = io.StringIO()
    line = ProgressLine(out, "[1/1] 00_a", 2, None, tty=True)
    line.on_cell_start(cell={"cell_type": "code", "source": "import a_module_with_a_long_name",
                             "metadata": {}})
    line.finish("[1/1] 00_a: ok in 1.0 s")
    # the live line is cut to 40 columns; the final line replaces it (cursor up one line)
    assert out.getvalue() == ("\r[1/1] 00_a  0s  cell 1/2 import a_mod...\x1b[K\n\x1b[J"
                              "\r\x1b[1A[1/1] 00_a: ok in 1.0 s\x1b[K\n\x1b[J")


def test_board_keeps_one_line_per_running_notebook_in_a_block(monkeypatch):
    _width(monkeypatch, 80)
    out = io.StringIO()
    board = ProgressBoard(out, tty=True)
    board.update("a", "A 1")
    board.update("b", "B 1")
    board.update("a", "A 2")  # rewritten in its place, above B
    print("a message", file=board)  # permanent, above the block
    board.finish("a", "A: ok in 3.0 s")  # permanent; B moves up
    board.finish("b", "B: failed in 4.0 s")
    assert out.getvalue().split("\x1b[J") == [
        "\rA 1\x1b[K\n",
        "\r\x1b[1AA 1\x1b[K\nB 1\x1b[K\n",
        "\r\x1b[2AA 2\x1b[K\nB 1\x1b[K\n",
        "\r\x1b[2Aa message\x1b[K\nA 2\x1b[K\nB 1\x1b[K\n",
        "\r\x1b[2AA: ok in 3.0 s\x1b[K\nB 1\x1b[K\n",
        "\r\x1b[1AB: failed in 4.0 s\x1b[K\n",
        ""]
    # what a terminal shows at the end: the messages and final lines, no live line
    assert _screen(out.getvalue()) == ["a message", "A: ok in 3.0 s", "B: failed in 4.0 s"]


def _screen(text: str) -> list[str]:
    """The lines a terminal shows after `text`: \\r, \\n, ESC[nA and ESC[J (ESC[K follows
    every text here)."""
    import re

    rows, row = [""], 0
    for token in re.findall(r"\x1b\[(\d*)([AKJ])|(\r)|(\n)|([^\x1b\r\n]+)", text):
        n, code, cr, nl, chars = token
        if code == "A":
            row -= int(n or 1)
        elif code == "J":  # erase below the cursor (here always at column 0)
            rows[row] = ""
            del rows[row + 1:]
        elif nl:
            row += 1
            rows.extend([""] * (row + 1 - len(rows)))
        elif chars:  # every text here is followed by ESC[K: it replaces the row
            rows[row] = chars
    return [r for r in rows if r]


def test_board_in_a_log_writes_plain_lines_and_keeps_each_threads_lines_whole():
    import threading

    out = io.StringIO()
    board = ProgressBoard(out, tty=False)
    board.update("a", "A 1")

    def say(name):
        for k in range(50):
            print(f"{name} {k} first", f"{name} {k} second", sep="\n", file=board)

    threads = [threading.Thread(target=say, args=(n,)) for n in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    board.finish("a", "A: ok in 1.0 s")
    lines = out.getvalue().splitlines()
    assert lines[0] == "A 1" and lines[-1] == "A: ok in 1.0 s" and len(lines) == 202
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    for i, line in enumerate(lines):  # a print's two lines stay together
        if line.endswith(" first"):
            assert lines[i + 1] == line.replace("first", "second")


def test_install_bars_routes_disabled_bars_to_the_file(tmp_path):
    path = tmp_path / "bars"
    code = textwrap.dedent(f"""
        import kdlib.report_progress as rp
        rp.install_bars({str(path)!r})
        from tqdm.auto import tqdm, trange
        for _ in tqdm(range(2), desc="sweep", disable=True):
            pass
        for _ in trange(3, desc="epochs", leave=False):
            pass
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == ""  # nothing of the bars in the outputs
    lines = path.read_text().splitlines()
    texts = [ln.split("\t", 1)[1] for ln in lines]
    assert texts[0].startswith("sweep: 0% 0/2") and "sweep: 100% 2/2" in texts[1]
    assert read_bars(path.read_text()) == {}  # every bar closed
    assert any(t.startswith("epochs: 0% 0/3") for t in texts)
