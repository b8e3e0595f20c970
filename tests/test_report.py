"""The report runner (kdlib.report, `python -m kdlib report`) and the scale presets.

Real kernels are slow (seconds each), so the runner is executed three times in all
(module-scoped fixtures, 8 kernels): over three tiny notebooks, two at a time (--jobs 2),
into a folder holding an earlier good report of the one that raises; again with -p
overrides, selection by number and by path, a per-cell timeout and a notebook timeout
(--jobs auto); and once two at a time, stopped by SIGTERM while both notebooks sleep.
Every other test inspects those outputs or needs no kernel.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import torch

from kdlib import headline as headline_module
from kdlib import presets, report, report_jobs
from kdlib.__main__ import build_parser, main

NOTEBOOKS = {
    "00_headline": '''
        # %% [markdown]
        # # A notebook with headline figures

        # %% tags=["parameters"]
        SCALE = "default"
        INTERACTIVE = True

        # %%
        import os
        import sys

        from kdlib.headline import headline

        print(f"scale={SCALE} interactive={INTERACTIVE}")
        print(f"python={sys.executable}")
        print(f"mplbackend={os.environ.get('MPLBACKEND')}")
        print(f"cwd={os.getcwd()}")
        headline(accuracy=0.97)
        headline("ECE (teacher)", 0.12)

        # %% [markdown]
        # ## The marks

        # %%
        import time

        import matplotlib.pyplot as plt
        import pandas as pd
        import torch  # noqa: F401 (the kernel reports torch's device and threads)
        from tqdm.auto import tqdm

        from kdlib import claims as cl
        from kdlib.headline import datasets, key_figure, percent, points, skipped
        from kdlib.outputs import save_frame, save_records

        for _ in tqdm(range(1), desc="epochs", disable=not INTERACTIVE):
            time.sleep(1.1)  # the runner polls the bars every second
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [0, 1])
        key_figure(fig, "a line")
        headline(gain=points(0.0253, 0.011, 0.039), top1=percent(0.9712, 0.968, 0.974))
        skipped(3, "Tiny-ImageNet missing: fetch tiny-imagenet-200.zip into data/")
        datasets(["digits"])
        save_frame("table_1", pd.DataFrame({"seed": [0, 1], "accuracy_pct": [90.5, 91.0]}))
        save_records("runs", [{"seed": 0, "accuracy": 0.905}])
        cl.show(cl.claims_table([cl.claim("KD falls with teacher ECE", "Fig. 2", -68, -85,
                                          -28, 5, "less", unit="%")]))
    ''',
    "01_raises": '''
        # %% tags=["parameters"]
        SCALE = "default"
        INTERACTIVE = True

        # %%
        print("before the failure")

        # %%
        value = 41
        raise RuntimeError(f"boom from cell two {value + 1}")

        # %%
        print("never printed")
    ''',
    "02_params": '''
        # %% tags=["parameters"]
        SCALE = "default"
        INTERACTIVE = True
        EPOCHS = 3  # a literal the runner may override
        MODEL = "mlp"

        # %%
        print(f"epochs*2={EPOCHS * 2} model={MODEL} scale={SCALE}")
    ''',
}

SLOW_NOTEBOOK = '''
    # %% tags=["parameters"]
    SCALE = "default"
    INTERACTIVE = True
    EPOCHS = 1
    MODEL = "none"

    # %%
    print("started")

    # %%
    import time
    time.sleep(120)
'''

CELL_TIMEOUT_S = 3
OLD_GOOD_HTML = "<!DOCTYPE html><html><body>OLD GOOD REPORT</body></html>"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def _run_cli(args, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kdlib", "report", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Environment whose registered `python3` kernelspec points at a missing interpreter:
    the runner must not depend on registered kernelspecs."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({
        "argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "broken", "language": "python",
    }))
    e = dict(os.environ)
    e["JUPYTER_PATH"] = str(root)
    e["MPLBACKEND"] = "TkAgg"  # a GUI backend in the user's shell must not reach kernels
    e["KDLIB_PROGRESS_INTERVAL_S"] = "0.5"  # progress lines of short cells, in the log
    return e


@pytest.fixture(scope="module")
def run(tmp_path_factory, env):
    """The runner over the three notebooks (default selection) at smoke scale."""
    root = tmp_path_factory.mktemp("report")
    for stem, text in NOTEBOOKS.items():
        _write(root / "notebooks" / f"{stem}.py", text)
    _write(root / "notebooks" / "helper.py", "x = 1\n")  # not NN_*.py: not selected
    out = root / "out"
    # an earlier good report of the notebook that now raises, and a stale failure of one
    # that now succeeds
    _write(out / "01_raises.html", OLD_GOOD_HTML)
    _write(out / "01_raises.ipynb", nbformat.writes(nbformat.v4.new_notebook()))
    _write(out / "00_headline.failed.html", "<!DOCTYPE html>stale failure")
    _write(out / "summary.json", json.dumps({"scale": "smoke", "notebooks": [
        {"name": "01_raises", "status": "ok", "duration_s": 1.0, "html": "01_raises.html",
         "ipynb": "01_raises.ipynb"}]}))
    proc = _run_cli(["--scale", "smoke", "--out", "out", "--jobs", "2"], cwd=root, env=env)
    return root, out, proc


@pytest.fixture(scope="module")
def rerun(run, env):
    """A second run into a copy of the first output: notebook 2 by number with -p
    overrides plus a slow notebook and one of many short cells by path, under a per-cell
    timeout (the slow one's) and a notebook timeout (the other's)."""
    root, out, _ = run
    out2 = root / "out2"
    shutil.copytree(out, out2)
    slow = _write(root / "extra" / "03_sleeps.py", SLOW_NOTEBOOK)
    hangs = _write(root / "extra" / "04_hangs.py", HANGS_NOTEBOOK)
    proc = _run_cli(
        ["--scale", "smoke", "--out", "out2", "-p", "EPOCHS=5", "-p", "MODEL=resnet8",
         "--cell-timeout", str(CELL_TIMEOUT_S), "--notebook-timeout", str(NOTEBOOK_TIMEOUT_S),
         "2", str(slow), str(hangs)],
        cwd=root, env=env,
    )
    return root, out2, proc


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


HANGS_NOTEBOOK = '''
    # %% tags=["parameters"]
    SCALE = "default"
    INTERACTIVE = True
    EPOCHS = 1
    MODEL = "none"

    # %%
    print("before the hang")
    import time

    # %%
    time.sleep(2)  # every cell is shorter than the cell timeout, all of them are longer

    # %%
    time.sleep(2)  # than the notebook timeout

    # %%
    time.sleep(2)

    # %%
    time.sleep(2)

    # %%
    time.sleep(2)
'''

SLEEPER_NOTEBOOK = '''
    # %% tags=["parameters"]
    SCALE = "default"
    INTERACTIVE = True

    # %%
    import os
    import pathlib
    print("sleeping")
    pathlib.Path({pidfile!r}).write_text(str(os.getpid()))

    # %%
    import time
    time.sleep(120)
'''

NOTEBOOK_TIMEOUT_S = 5


@pytest.fixture(scope="module")
def stopped(run, env):
    """A real `python -m kdlib report --jobs 2` into a copy of the first output: 02_params
    (a sleeping version of it, with a good report in the folder) and 05_sleeps run at
    once, 06_waits waits for a free slot, and SIGTERM arrives while both sleep."""
    root, out, _ = run
    out3 = root / "out3"
    shutil.copytree(out, out3)
    before = _snapshot(out3)
    pidfiles = [root / "kernel-02.pid", root / "kernel-05.pid"]
    sleepers = [_write(root / "extra3" / name, SLEEPER_NOTEBOOK.format(pidfile=str(pid)))
                for name, pid in zip(["02_params.py", "05_sleeps.py"], pidfiles)]
    sleepers.append(_write(root / "extra3" / "06_waits.py", SLEEPER_NOTEBOOK.format(
        pidfile=str(root / "kernel-06.pid"))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kdlib", "report", "--scale", "smoke", "--out", "out3",
         "--jobs", "2", *map(str, sleepers)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while (not all(p.exists() for p in pidfiles) and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.1)
    time.sleep(0.5)  # into the sleeping cells
    t_signal = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    stop_s = time.monotonic() - t_signal
    kernel_pids = [int(p.read_text()) if p.exists() else None for p in pidfiles]
    return out3, before, proc.returncode, stderr, stop_s, kernel_pids


def _stream_text(nb) -> str:
    return "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _entry(out: Path, name: str) -> dict:
    (entry,) = [e for e in _summary(out)["notebooks"] if e["name"] == name]
    return entry


# --------------------------------------------------------------------------- first run


def test_each_notebook_writes_ipynb_and_html(run):
    _, out, _ = run
    for stem in NOTEBOOKS:
        name = f"{stem}.failed" if stem == "01_raises" else stem
        nb = nbformat.read(out / f"{name}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert (out / f"{name}.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert not (out / "helper.html").exists()
    # no temporary or in-progress files left behind; a success removes a stale failure
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert not (out / "00_headline.failed.html").exists()
    assert not (out / "02_params.failed.html").exists()
    for path in out.rglob("*"):  # readable by others, as files written with open() are
        if path.is_dir():
            continue
        assert path.stat().st_mode & 0o777 == 0o666 & ~_umask(), path


def test_marks_reach_summary_index_and_files(run):
    _, out, proc = run
    ok = _entry(out, "00_headline")
    assert ok["verdicts"][0]["line"] == "KD falls with teacher ECE: holds, -68.00% [-85, -28]"
    assert ok["skipped"] == [{"table": "Table 3", "reason": "Tiny-ImageNet missing: fetch "
                                                             "tiny-imagenet-200.zip into data/"}]
    assert ok["datasets"] == ["digits"]
    assert ok["results"] == ["00_headline.results/runs.jsonl", "00_headline.results/table_1.csv"]
    assert (out / "00_headline.results" / "table_1.csv").read_text() == (
        "seed,accuracy_pct\n0,90.5\n1,91.0\n")
    assert json.loads((out / "00_headline.results" / "runs.jsonl").read_text()) == {
        "seed": 0, "accuracy": 0.905}
    assert ok["kernel"]["torch_threads"] >= 1 and ok["kernel"]["device"]
    key = ok["key_figure"]
    assert key["thumbnail"] == "00_headline.key.png" and key["title"] == "a line"
    from PIL import Image

    with Image.open(out / key["thumbnail"]) as img:
        assert img.format == "PNG" and img.width <= report.THUMBNAIL_WIDTH
    html_page = (out / "00_headline.html").read_text()
    assert f'id="{key["anchor"]}"' in html_page
    # opens without a network: no script from anywhere, no CDN link
    assert "<script src" not in html_page and "https://cdn" not in html_page
    index = (out / "index.html").read_text()
    assert f'<a href="00_headline.html#{key["anchor"]}"' in index
    assert '<img class="thumb" src="00_headline.key.png"' in index
    assert '<span class="v-holds">holds</span>, -68.00% [-85, -28]' in index
    assert "Table 3 skipped: Tiny-ImageNet missing" in index
    assert '<a href="00_headline.results/table_1.csv">table_1.csv</a>' in index
    assert "threads" in index and "digits" in index
    summary = _summary(out)
    assert summary["run"]["dry_run"] is False and summary["run"]["kdlib_version"]
    # live progress (stderr is not a terminal: plain lines): the cell and the bar
    assert "kdlib report: 3 notebook(s) (scale=smoke, 2 at a time) into " in proc.stderr
    assert "[1/3] 00_headline  " in proc.stderr
    assert "cell 4/4 (The marks) import time" in proc.stderr
    assert "| epochs: " in proc.stderr
    assert "\r" not in proc.stderr
    # the bar never reaches the report (INTERACTIVE=False disables it there)
    nb = nbformat.read(out / "00_headline.ipynb", as_version=4)
    assert "epochs" not in _stream_text(nb)


def test_exit_code_and_progress_on_stderr(run):
    _, out, proc = run
    assert proc.returncode == 1, proc.stderr
    assert "[1/3] 00_headline" in proc.stderr
    assert "[3/3] 02_params" in proc.stderr
    assert "3 notebook(s): 2 ok, 1 failed" in proc.stderr
    assert "notebook" not in proc.stdout  # progress goes to stderr only


def test_two_at_a_time_rows_in_order_and_run_times(run):
    _, out, proc = run
    # 01_raises started while 00_headline ran, and failed without stopping it
    assert proc.stderr.index("[2/3] 01_raises  ") < proc.stderr.index("[1/3] 00_headline: ok")
    assert proc.stderr.index("[3/3] 02_params  ") > min(
        proc.stderr.index("[1/3] 00_headline: ok"), proc.stderr.index("[2/3] 01_raises: failed"))
    summary = _summary(out)
    assert [e["name"] for e in summary["notebooks"]] == list(NOTEBOOKS)  # notebook order
    run_ = summary["run"]
    assert run_["jobs"] == 2 and run_["state"] == "finished" and run_["done"] == 3
    durations = sum(e["duration_s"] for e in summary["notebooks"])
    assert run_["notebooks_s"] == pytest.approx(durations, abs=0.2)
    assert 0 < run_["elapsed_s"]
    index = (out / "index.html").read_text()
    assert "(this run, wall clock, 2 notebooks at a time); the notebooks&#x27; durations " \
           "add up to " in index
    assert f"in {run_['elapsed_s']:.1f} s (2 at a time; the notebooks' durations add up to " \
           f"{run_['notebooks_s']:.1f} s)" in proc.stderr
    # two kernels share the cores: each gets cores // 2 OpenMP threads unless the user
    # set them
    if not os.environ.get("OMP_NUM_THREADS"):
        expected = max(1, report_jobs.cpu_cores() // 2)
        assert _entry(out, "00_headline")["kernel"]["torch_threads"] == expected


def test_injected_scale_and_kernel_environment(run):
    root, out, _ = run
    nb = nbformat.read(out / "00_headline.ipynb", as_version=4)
    text = _stream_text(nb)
    assert "scale=smoke interactive=False" in text
    assert f"python={sys.executable}\n" in text  # this interpreter despite the broken spec
    assert f"mplbackend={report.KERNEL_MPLBACKEND}\n" in text
    assert f"cwd={(root / 'notebooks').resolve()}\n" in text
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert tags[:2] == [["parameters"], ["injected-parameters"]]
    assert "scale=smoke interactive=False" in (out / "00_headline.html").read_text()


def test_headline_figures_in_summary_and_index(run):
    _, out, _ = run
    summary = _summary(out)
    assert summary["scale"] == "smoke"
    assert [e["name"] for e in summary["notebooks"]] == list(NOTEBOOKS)
    assert [e["status"] for e in summary["notebooks"]] == ["ok", "failed", "ok"]
    assert all(e["duration_s"] > 0 for e in summary["notebooks"])
    ok = _entry(out, "00_headline")
    assert list(ok["headline"].items()) == [
        ("accuracy", 0.97), ("ECE (teacher)", 0.12),
        ("gain", {"value": 0.0253, "unit": "points", "low": 0.011, "high": 0.039}),
        ("top1", {"value": 0.9712, "unit": "percent", "low": 0.968, "high": 0.974})]
    assert ok["parameters"] == {"SCALE": "smoke", "INTERACTIVE": False}
    assert ok["error"] is None
    index = (out / "index.html").read_text()
    assert "gain: <b>+2.53 points [1.10, 3.90]</b>" in index
    assert "top1: <b>97.12% [96.80, 97.40]</b>" in index
    for stem in NOTEBOOKS:
        page = f"{stem}.failed.html" if stem == "01_raises" else f"{stem}.html"
        assert f'<a href="{page}"><b>{stem.replace("_", "_<wbr>")}</b></a>' in index
    assert "accuracy: <b>0.970</b>" in index
    assert "ECE (teacher): <b>0.120</b>" in index
    assert index.count('class="ok">ok<') == 2
    assert index.count('class="failed">failed<') == 1
    # the headline renders as a table in the notebook's own report
    assert "<td>accuracy</td>" in (out / "00_headline.html").read_text().replace("\n", "")


def test_failing_notebook_is_partial_and_others_still_run(run):
    _, out, proc = run
    nb = nbformat.read(out / "01_raises.failed.ipynb", as_version=4)
    text = _stream_text(nb)
    assert "before the failure" in text
    assert "never printed" not in text
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("RuntimeError", "boom from cell two 42")]
    assert nb.cells[0].cell_type == "markdown"
    assert nb.cells[0].source.startswith("**Partial report: the notebook failed in cell In [")
    assert "01_raises.html" in nb.cells[0].source  # names the good report kept beside
    page = (out / "01_raises.failed.html").read_text()
    assert "boom from cell two 42" in page and "Partial report" in page
    entry = _entry(out, "01_raises")
    assert entry["status"] == "failed"
    assert entry["error"]["ename"] == "RuntimeError"
    assert entry["error"]["evalue"] == "boom from cell two 42"
    assert "raise RuntimeError" in entry["error"]["source"]
    assert entry["html"] == "01_raises.failed.html"
    assert entry["ipynb"] == "01_raises.failed.ipynb"
    assert "01_raises.failed.html" in proc.stderr
    # stderr names the failing cell (its source) and the error
    assert 'raise RuntimeError(f"boom from cell two {value + 1}")' in proc.stderr
    assert "RuntimeError: boom from cell two 42" in proc.stderr
    # the earlier good report is untouched and linked from the index
    assert (out / "01_raises.html").read_text() == OLD_GOOD_HTML
    assert entry["last_ok"] == {"html": "01_raises.html", "ipynb": "01_raises.ipynb"}
    assert 'last ok report: <a href="01_raises.html">' in (out / "index.html").read_text()
    # the notebook after the failing one ran
    assert "epochs*2=6 model=mlp scale=smoke" in _stream_text(
        nbformat.read(out / "02_params.ipynb", as_version=4)
    )


# --------------------------------------------------------------------------- second run


def test_overrides_selection_and_timeout(rerun):
    root, out, proc = rerun
    assert proc.returncode == 1, proc.stderr
    assert "[1/3] 02_params" in proc.stderr and "[2/3] 03_sleeps" in proc.stderr
    text = _stream_text(nbformat.read(out / "02_params.ipynb", as_version=4))
    assert "epochs*2=10 model=resnet8 scale=smoke" in text
    assert _entry(out, "02_params")["parameters"] == {
        "SCALE": "smoke", "INTERACTIVE": False, "EPOCHS": 5, "MODEL": "resnet8"
    }
    slow = _entry(out, "03_sleeps")
    assert slow["status"] == "failed"
    assert slow["error"]["ename"] == "CellTimeoutError"
    assert "time.sleep(120)" in slow["error"]["source"]
    assert slow["duration_s"] < 100  # stopped by the timeout, not by the sleep ending
    assert "started" in _stream_text(nbformat.read(out / "03_sleeps.failed.ipynb", as_version=4))
    assert (out / "03_sleeps.failed.html").exists() and not (out / "03_sleeps.html").exists()
    assert "time.sleep(120)" in proc.stderr and "CellTimeoutError" in proc.stderr


def test_index_keeps_earlier_entries_of_the_same_scale(rerun):
    _, out, _ = rerun
    summary = _summary(out)
    assert [e["name"] for e in summary["notebooks"]] == [*NOTEBOOKS, "03_sleeps", "04_hangs"]
    assert _entry(out, "00_headline")["headline"]["accuracy"] == 0.97
    index = (out / "index.html").read_text()
    assert "accuracy: <b>0.970</b>" in index and "03_sleeps.failed.html" in index


# --------------------------------------------------------------------------- stopped run


def test_notebook_timeout_stops_a_hanging_notebook_with_a_clear_message(rerun):
    _, out, proc = rerun
    stderr = proc.stderr
    entry = _entry(out, "04_hangs")
    assert entry["status"] == "timeout"
    assert entry["notebook_timeout_s"] == NOTEBOOK_TIMEOUT_S
    assert entry["error"]["ename"] == "NotebookTimeout"
    assert f"time limit of {NOTEBOOK_TIMEOUT_S} s" in entry["error"]["evalue"]
    assert "time.sleep(2)" in entry["error"]["source"]  # the cell it hung in
    assert NOTEBOOK_TIMEOUT_S <= entry["duration_s"] < 60
    assert entry["ipynb"] == "04_hangs.failed.ipynb" and entry["last_ok"] is None
    nb = nbformat.read(out / "04_hangs.failed.ipynb", as_version=4)
    assert "before the hang" in _stream_text(nb)
    assert "ran past its time limit" in nb.cells[0].source
    assert "ran past its time limit" in (out / "04_hangs.failed.html").read_text()
    assert "NotebookTimeout: ran past its time limit of 5 s" in (out / "index.html").read_text()
    assert "04_hangs: timeout" in stderr and "NotebookTimeout" in stderr


def test_sigterm_keeps_old_reports_and_writes_the_index(stopped):
    out, before, returncode, stderr, stop_s, kernel_pids = stopped
    assert returncode == 128 + signal.SIGTERM, stderr
    assert stop_s < 30  # a pending notebook must not hold the stop for the grace period
    assert None not in kernel_pids, stderr
    # both sleeping notebooks' kernels are gone (or zombies awaiting their reaper)
    for pid in kernel_pids:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    # every earlier report is byte for byte as it was
    after = _snapshot(out)
    for name, data in before.items():
        if name not in ("index.html", "summary.json"):
            assert after[name] == data, name
    assert sorted(p for p in after if p.startswith(".")) == []  # no hidden partial files
    new = {f"{stem}.failed.{ext}" for stem in ("02_params", "05_sleeps")
           for ext in ("html", "ipynb")}
    assert new <= set(after) and set(after) - set(before) - new <= {
        f"{stem}.failed.kernel.log" for stem in ("02_params", "05_sleeps")}
    summary = _summary(out)
    assert summary["run"]["state"] == "stopped" and summary["run"]["signal"] == "SIGTERM"
    assert summary["run"]["not_run"] == ["06_waits"]  # never started, and not waited for
    assert not (out.parent / "kernel-06.pid").exists()
    assert summary["run"]["jobs"] == 2 and summary["run"]["done"] == 2
    for stem in ("02_params", "05_sleeps"):  # both running notebooks stopped cleanly
        entry = _entry(out, stem)
        assert entry["status"] == "stopped" and entry["error"]["ename"] == "Stopped"
        assert "SIGTERM" in entry["error"]["evalue"]
        assert "time.sleep(120)" in entry["error"]["source"]
        assert entry["duration_s"] < 60
        partial = nbformat.read(out / f"{stem}.failed.ipynb", as_version=4)
        assert "sleeping" in _stream_text(partial)
        assert "stopped by SIGTERM" in (out / f"{stem}.failed.html").read_text()
        assert f"{stem}: stopped in " in stderr
    assert _entry(out, "02_params")["last_ok"] == {"html": "02_params.html",
                                                   "ipynb": "02_params.ipynb"}
    assert _entry(out, "05_sleeps")["last_ok"] is None
    # entries of notebooks not run now are kept
    assert _entry(out, "00_headline")["headline"]["accuracy"] == 0.97
    index = (out / "index.html").read_text()
    assert "Run stopped by SIGTERM" in index and 'class="stopped">stopped<' in index
    assert "stopped by SIGTERM after 2 of 3 notebook(s) started" in stderr


# --------------------------------------------------------------------------- no kernel


@pytest.fixture()
def notebooks_dir(tmp_path):
    for stem, text in NOTEBOOKS.items():
        _write(tmp_path / "notebooks" / f"{stem}.py", text)
    return tmp_path / "notebooks"


def test_undeclared_parameter_fails_before_execution(notebooks_dir, tmp_path, capsys):
    rc = None
    with pytest.raises(SystemExit) as exc:
        rc = main(["report", "--out", str(tmp_path / "out"), "--notebooks-dir",
                   str(notebooks_dir), "-p", "BOGUS=1", "00"])
    assert rc is None and exc.value.code == 2
    err = capsys.readouterr().err
    assert "['BOGUS']" in err and "declared: ['SCALE', 'INTERACTIVE']" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out").exists()  # nothing written, not even the folder


def test_invalid_rerun_leaves_old_reports_and_index_intact(run, capsys):
    """02_params declares EPOCHS, 00_headline does not: nothing runs, nothing changes."""
    root, out, _ = run
    before = _snapshot(out)
    with pytest.raises(SystemExit) as exc:
        main(["report", "--scale", "smoke", "--out", str(out), "--notebooks-dir",
              str(root / "notebooks"), "-p", "EPOCHS=5", "2", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing was run" in err
    assert "00_headline: parameter(s) ['EPOCHS'] not declared" in err
    assert "02_params" not in err  # it declares EPOCHS
    assert _snapshot(out) == before


def test_declared_parameters_reads_the_parameters_cell():
    nb = jupytext.reads(textwrap.dedent(NOTEBOOKS["02_params"]), fmt="py:percent")
    declared = report.declared_parameters(nb)
    assert declared == ["SCALE", "INTERACTIVE", "EPOCHS", "MODEL"]
    with pytest.raises(ValueError, match=r"\['LR'\] not declared.*declared: \['SCALE', 'INTER"):
        report.check_parameters(declared, {"SCALE": 1, "LR": 0.1})
    report.check_parameters(["SCALE"], {"SCALE": "smoke"})  # declared: no error


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("# %%\nSCALE = 'default'\n", "exactly one cell tagged 'parameters'.*found 0"),
        ('# %% tags=["parameters"]\nA = 1\n\n# %% tags=["parameters"]\nB = 2\n',
         "exactly one cell tagged 'parameters'.*found 2"),
        ('# %% tags=["parameters"]\nA = 1\nimport os\n', "only assignments.*line 2"),
        ('# %% tags=["parameters"]\nA, B = 1, 2\n', "only assignments.*line 1"),
    ],
)
def test_bad_parameters_cells_are_errors(text, match):
    with pytest.raises(ValueError, match=match):
        report.declared_parameters(jupytext.reads(text, fmt="py:percent"))


def test_notebook_without_parameters_cell_fails_clearly(tmp_path):
    src = _write(tmp_path / "05_noparams.py", "# %%\nprint(1)\n")
    result = report.run_notebook(src, tmp_path / "out", scale="smoke")
    assert result.status == "failed" and result.ipynb is None
    assert "found 0" in result.error["evalue"]


def test_find_notebooks_by_stem_number_and_path(notebooks_dir, tmp_path):
    _write(notebooks_dir / "helper.py", "x = 1\n")
    _write(notebooks_dir / "1_short.py", "x = 1\n")
    stems = lambda sel: [p.stem for p in report.find_notebooks(sel, notebooks_dir)]
    assert stems(()) == ["00_headline", "01_raises", "02_params"]
    assert stems(["02", "0", "01_raises"]) == ["02_params", "00_headline", "01_raises"]
    assert stems(["2", "02_params", str(notebooks_dir / "02_params.py")]) == ["02_params"]
    other = _write(tmp_path / "elsewhere" / "07_other.py", "x = 1\n")
    assert report.find_notebooks([str(other)], notebooks_dir) == [other]
    with pytest.raises(ValueError, match=r"no notebook '9'.*'00_headline', '01_raises'"):
        report.find_notebooks(["9"], notebooks_dir)
    with pytest.raises(ValueError, match="no notebook 'calibration'"):
        report.find_notebooks(["calibration"], notebooks_dir)
    with pytest.raises(ValueError, match="no notebooks matching"):
        report.find_notebooks((), tmp_path / "empty")


def test_cli_usage_errors_exit_2(notebooks_dir, tmp_path, capsys):
    a_file = _write(tmp_path / "taken.txt", "not a folder\n")
    for argv, message in [
        (["-p", "SCALE=paper"], "runner sets ['SCALE', 'INTERACTIVE']"),
        (["-p", "EPOCHS"], "NAME=VALUE"),
        (["42"], "no notebook '42'"),
        (["--scale", "huge"], "invalid choice: 'huge'"),
        (["--cell-timeout", "0"], "must be >= 1 second"),
        (["--notebook-timeout", "0"], "must be > 0 seconds"),
        (["--notebook-timeout", "soon"], "number of seconds, 'none' or 'scale'"),
        (["--out", str(a_file)], f"--out: output folder {str(a_file)!r} is not a folder"),
        (["--out", str(a_file / "sub")], "above it is a file"),
        (["--dry-run", "00"], "--dry-run needs a parameter DRY_RUN in its parameters cell; "
                              "it declares ['SCALE', 'INTERACTIVE']"),
        (["--select", "table=6", "00", "2"], "--select needs a parameter SELECT"),
        (["--select", " "], "--select: select must be a non-empty one-line string"),
        (["-p", "DRY_RUN=True"], "-p DRY_RUN=... is not allowed: use --dry-run"),
        (["-p", "SELECT=x"], "-p SELECT=... is not allowed: use --select"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["report", "--notebooks-dir", str(notebooks_dir), *argv])
        assert exc.value.code == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert err.count("\n") == 1 and err.startswith("kdlib report: error: "), err
    assert a_file.read_text() == "not a folder\n"


FLAGGED_NOTEBOOK = '''
    # %% tags=["parameters"]
    SCALE = "default"
    INTERACTIVE = True
    DRY_RUN = False
    SELECT = ""
'''


def test_dry_run_and_select_flags(notebooks_dir, tmp_path):
    flagged = _write(notebooks_dir / "05_flagged.py", FLAGGED_NOTEBOOK)
    assert report.flag_parameters() == {}
    assert report.flag_parameters(True, " table=6 seed=0 ") == {"DRY_RUN": True,
                                                               "SELECT": "table=6 seed=0"}
    assert report.check_run([flagged], tmp_path, "paper", dry_run=True,
                            select="pair=resnet56->resnet14") == [flagged]
    with pytest.raises(ValueError, match=r"00_headline: --dry-run needs a parameter DRY_RUN"):
        report.check_run([notebooks_dir / "00_headline.py", flagged], tmp_path, dry_run=True)
    with pytest.raises(ValueError, match="set by the runner's flags: use --select"):
        report.check_run([flagged], tmp_path, parameters={"SELECT": "x"})
    with pytest.raises(ValueError, match="dry_run must be True or False"):
        report.flag_parameters("yes")
    with pytest.raises(ValueError, match="one-line string"):
        report.flag_parameters(select="a\nb")
    from kdlib.__main__ import default_out

    assert default_out("paper", True) == "reports/paper-dry-run"
    assert default_out("paper", False) == "reports"
    args = build_parser().parse_args(["report", "--scale", "paper", "--dry-run", "--select",
                                      "table=6"])
    assert (args.dry_run, args.select, args.out) == (True, "table=6", None)


def test_notebook_timeout_defaults_per_scale():
    assert report.NOTEBOOK_TIMEOUT_S == {"smoke": 600, "default": 3600, "paper": 604800}
    assert report.resolve_notebook_timeout("scale", "smoke") == 600.0
    assert report.resolve_notebook_timeout(None, "paper") is None
    assert report.resolve_notebook_timeout(2.5, "default") == 2.5
    for bad in [0, -1, True, "10", math.nan]:
        with pytest.raises(ValueError, match="notebook_timeout must be"):
            report.resolve_notebook_timeout(bad, "smoke")
    args = build_parser().parse_args
    assert args(["report"]).notebook_timeout == "scale"
    assert args(["report", "--notebook-timeout", "none"]).notebook_timeout is None
    assert args(["report", "--notebook-timeout", "90"]).notebook_timeout == 90.0


def test_help_explains_scales(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for scale in presets.SCALES:
        assert f"\n  {scale} " in out
    assert "--cell-timeout" in out and "NAME=VALUE" in out
    with pytest.raises(SystemExit):
        main([])  # a subcommand is required
    assert "report" in capsys.readouterr().err


def test_parse_parameter():
    p = report.parse_parameter
    assert p("EPOCHS=5") == ("EPOCHS", 5)
    assert p("LR=1e-3") == ("LR", 0.001)
    assert p("MODEL=resnet8") == ("MODEL", "resnet8")
    assert p("TEMPS=[1, 4.0]") == ("TEMPS", [1, 4.0])
    assert p("FLAG=True") == ("FLAG", True)
    assert p("NAME='a b'") == ("NAME", "a b")
    assert p("EXPR=a=b") == ("EXPR", "a=b")
    assert p(" X = 2 ") == ("X", 2)
    for bad in ["EPOCHS", "1X=3", "=3", "A-B=1"]:
        with pytest.raises(ValueError, match="NAME=VALUE|identifier"):
            p(bad)


def test_run_reports_validates_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"scale must be one of \['smoke', 'default', 'paper'\]"):
        report.run_reports(["x.py"], tmp_path, scale="tiny")
    with pytest.raises(ValueError, match="set by the runner"):
        report.run_reports(["x.py"], tmp_path, parameters={"SCALE": "paper"})
    with pytest.raises(ValueError, match="cell_timeout"):
        report.run_reports(["x.py"], tmp_path, cell_timeout=0)
    with pytest.raises(ValueError, match="no notebooks"):
        report.run_reports([], tmp_path)
    with pytest.raises(ValueError, match="notebook_timeout"):
        report.run_reports(["x.py"], tmp_path, notebook_timeout=0)
    with pytest.raises(ValueError, match="is not a folder"):
        report.run_reports(["x.py"], _write(tmp_path / "f", "x"))
    with pytest.raises(ValueError, match=r"nothing was run: x: .*No such file"):
        report.run_reports([tmp_path / "x.py"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- headline


def test_headline_bundle_values_and_renderings():
    b = report.headline_bundle(
        "ECE (teacher)", np.float32(0.25), acc=0.971234567, n=np.int64(3),
        model="resnet8", loss=torch.tensor([1.5]),
    )
    data = b[report.HEADLINE_MIMETYPE]
    assert data == {"ECE (teacher)": 0.25, "acc": 0.971234567, "n": 3, "model": "resnet8",
                    "loss": 1.5}
    assert type(data["n"]) is int and type(data["ECE (teacher)"]) is float
    assert b["text/plain"].splitlines() == [
        "ECE (teacher): 0.250", "acc: 0.971", "n: 3", "model: resnet8", "loss: 1.50"
    ]
    assert "| acc | 0.971 |" in b["text/markdown"]
    json.dumps(data, allow_nan=False)  # plain JSON


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((), {}, ValueError, "at least one figure"),
        ((), {"ok": True}, TypeError, "got a bool"),
        ((), {"ece": math.nan}, ValueError, "must be finite"),
        ((), {"note": "x" * 81}, ValueError, "at most 80 characters"),
        ((), {"note": "two\nlines"}, ValueError, "single-line"),
        ((), {"v": np.zeros(3)}, TypeError, "more than one element"),
        ((), {"v": [0.1]}, TypeError, "got list"),
        (("acc",), {}, TypeError, "needs a value"),
        ((3, 0.5), {}, TypeError, "name must be a non-empty string"),
        (("acc", 0.5), {"acc": 0.6}, ValueError, "given twice"),
    ],
)
def test_headline_rejects_bad_figures(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        report.headline_bundle(*args, **kwargs)


def test_headline_lives_in_its_own_module_and_report_reexports_it():
    assert report.headline is headline_module.headline
    assert report.HEADLINE_MIMETYPE == headline_module.HEADLINE_MIMETYPE
    code = ("import sys, kdlib.headline; "
            "print(any(m.startswith('kdlib.report') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_headline_outside_ipython_prints_text(capsys):
    report.headline(accuracy=0.5)
    assert capsys.readouterr().out == "accuracy: 0.500\n"


def test_collect_headlines_later_values_win():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data=report.headline_bundle(a=1, b=2)),
        nbformat.v4.new_output("stream", text="noise"),
    ]
    later = nbformat.v4.new_code_cell("")
    later.outputs = [nbformat.v4.new_output("display_data", data=report.headline_bundle(b=3))]
    nb.cells = [nbformat.v4.new_markdown_cell("x"), cell, later]
    assert report.collect_headlines(nb) == {"a": 1, "b": 3}


def test_render_index_escapes_html():
    entry = {"name": "<b>x</b>", "status": "failed", "duration_s": 1.25, "html": None,
             "ipynb": None, "headline": {"a<": "<i>"},
             "error": {"cell": 2, "ename": "E", "evalue": "<script>"}}
    page = report.render_index([entry], "smoke")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "a&lt;: <b>&lt;i&gt;</b>" in page
    assert '<small>in 1 s</small>' in page


# --------------------------------------------------------------------------- presets


@pytest.fixture()
def registered():
    presets.register("toy_experiment", {
        "smoke": {"epochs": 1, "temps": [1.0]},
        "default": {"epochs": 10, "temps": [1.0, 4.0]},
        "paper": {"epochs": 240, "temps": [1.0, 4.0, 8.0]},
    })
    yield "toy_experiment"
    presets.unregister("toy_experiment")


def test_presets_get_returns_a_copy(registered):
    cfg = presets.get(registered, "default")
    assert cfg == {"epochs": 10, "temps": [1.0, 4.0]}
    cfg["temps"].append(99.0)
    assert presets.get(registered, "default")["temps"] == [1.0, 4.0]
    assert presets.get(registered, "paper")["epochs"] == 240
    assert registered in presets.experiments()


def test_presets_errors(registered):
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'.*'toy_experiment'"):
        presets.get("nope", "smoke")
    with pytest.raises(ValueError, match=r"one of \['smoke', 'default', 'paper'\], got 'big'"):
        presets.get(registered, "big")
    with pytest.raises(ValueError, match=r"missing \['paper'\], unknown \['huge'\]"):
        presets.register("e", {"smoke": {}, "default": {}, "huge": {}})
    with pytest.raises(ValueError, match=r"only in 'paper': \['seeds'\]"):
        presets.register("e", {"smoke": {"a": 1}, "default": {"a": 2},
                               "paper": {"a": 3, "seeds": 5}})
    with pytest.raises(TypeError, match="must be a dict of parameters"):
        presets.register("e", {"smoke": {}, "default": {}, "paper": 3})
    with pytest.raises(TypeError, match="non-empty string"):
        presets.register("", {s: {} for s in presets.SCALES})
    assert "e" not in presets.experiments()


def test_presets_reregistration(registered):
    same = {s: presets.get(registered, s) for s in presets.SCALES}
    presets.register(registered, same)  # identical: no-op
    changed = {s: {**same[s], "epochs": 2} for s in presets.SCALES}
    with pytest.raises(ValueError, match="already registered with different presets"):
        presets.register(registered, changed)
    presets.register(registered, changed, replace=True)
    assert presets.get(registered, "paper")["epochs"] == 2
    with pytest.raises(ValueError, match="unknown experiment"):
        presets.unregister("nope")
