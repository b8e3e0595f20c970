"""kdlib.report_index: summary.json + index.html from notebook results (no kernel)."""

from __future__ import annotations

import json

import pytest

from kdlib.report_index import NotebookResult, render_index, write_index


def _result(name, status="ok", **kw):
    return NotebookResult(name=name, source=f"/x/{name}.py", status=status, duration_s=1.5,
                          html=f"{name}.html", ipynb=f"{name}.ipynb", **kw)


def test_write_index_merges_earlier_entries_and_records_the_run(tmp_path):
    write_index([_result("00_a"), _result("01_b")], tmp_path, "smoke")
    stopped = _result("01_b", "stopped", last_ok={"html": "01_b.html", "ipynb": "01_b.ipynb"},
                      error={"cell": 3, "source": "x", "ename": "Stopped",
                             "evalue": "stopped by SIGTERM after 2.0 s"})
    stopped.html, stopped.ipynb = "01_b.failed.html", "01_b.failed.ipynb"
    run = {"state": "stopped", "signal": "SIGTERM", "done": 1, "selected": 2,
           "not_run": ["02_c"]}
    rows = write_index([stopped], tmp_path, "smoke", run)
    assert [(r["name"], r["status"]) for r in rows] == [("00_a", "ok"), ("01_b", "stopped")]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"] == run and summary["notebooks"] == rows
    page = (tmp_path / "index.html").read_text()
    assert "Run stopped by SIGTERM; not run (earlier entries, if any, kept): 02_c." in page
    assert '<a href="01_b.failed.html"><b>01_<wbr>b</b></a>' in page
    assert 'last ok report: <a href="01_b.html">01_b.html</a>' in page
    assert 'class="stopped">stopped<' in page and "In [3]: Stopped: stopped by SIGTERM" in page
    assert "<dt>notebooks</dt><dd>1 of 2 ok</dd>" in page
    # another scale starts afresh
    assert [r["name"] for r in write_index([_result("09_z")], tmp_path, "paper")] == ["09_z"]


def test_render_index_run_states():
    rows = [vars(_result("00_a"))]
    assert "Run in progress: 1 of 3 notebooks done." in render_index(
        rows, "smoke", {"state": "running", "done": 1, "selected": 3})
    assert 'class="run"' not in render_index(rows, "smoke", {"state": "finished"})
    assert 'class="run"' not in render_index(rows, "smoke")


def test_write_index_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"run\['state'\] must be one of \['running', 'fin"):
        write_index([], tmp_path, "smoke", {"state": "paused"})
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="out_dir must be a folder"):
        write_index([], a_file, "smoke")
    assert a_file.read_text() == "x"


def test_index_row_shows_verdicts_thumbnail_figures_results_and_skipped(tmp_path):
    line = ("KD falls: holds, -68.00% [-85, -28]; "
            "DIST insensitive: does not hold, -77.00% [-89, -57]")
    a = _result(
        "02_sweep", headline={"top1": {"value": 0.9712, "unit": "percent", "low": 0.968,
                                       "high": 0.974}, "rho": 0.123456},
        verdicts=[{"line": line, "claims": [
            {"claim": "KD falls", "verdict": "holds",
             "text": "KD falls: holds, -68.00% [-85, -28]"},
            {"claim": "DIST insensitive", "verdict": "does not hold",
             "text": "DIST insensitive: does not hold, -77.00% [-89, -57]"}]}],
        skipped=[{"table": "Table 3", "reason": "fetch tiny-imagenet-200.zip"}],
        datasets=["CIFAR-10"], results=["02_sweep.results/sweep.csv"],
        key_figure={"thumbnail": "02_sweep.key.png", "anchor": "kdlib-key-figure-1",
                    "title": "acc vs ECE"},
        kernel={"device": "CPU (2 cores)", "torch_threads": 1})
    a.duration_s = 354.2
    b = _result("03_ta", verdicts=["old-style line"], kernel={"device": "CPU (2 cores)",
                                                              "torch_threads": 2},
                datasets=["CIFAR-10", "CIFAR-100"])
    run = {"state": "finished", "dry_run": True, "select": "table=6 seed=0",
           "kdlib_version": "0.1.0", "git_commit": "abc123", "elapsed_s": 400.0}
    write_index([a, b], tmp_path, "paper", run)
    page = (tmp_path / "index.html").read_text()
    assert "<h1>kdlib report: scale paper (dry run)</h1>" in page
    assert '<a href="02_sweep.html#kdlib-key-figure-1" title="open the figure in the report">' \
           '<img class="thumb" src="02_sweep.key.png"' in page
    assert '<li>KD falls: <span class="v-holds">holds</span>, -68.00% [-85, -28]</li>' in page
    assert ('<li>DIST insensitive: <span class="v-does-not-hold">does not hold</span>, '
            '-77.00% [-89, -57]</li>') in page
    assert "<li>old-style line</li>" in page
    assert "top1: <b>97.12% [96.80, 97.40]</b>" in page and "rho: <b>0.123</b>" in page
    assert '<a href="02_sweep.results/sweep.csv">sweep.csv</a>' in page
    assert '<div class="skipped">Table 3 skipped: fetch tiny-imagenet-200.zip</div>' in page
    # no jobs recorded (an older summary): the wall time and every entry's durations
    assert "<dt>total time</dt><dd>6 min 40 s (this run, wall clock); the notebooks&#x27; " \
           "durations add up to 5 min 56 s</dd>" in page
    assert "<dt>device</dt><dd>CPU (2 cores)</dd>" in page
    assert "<dt>torch threads</dt><dd>1, 2</dd>" in page
    assert "<dt>kdlib</dt><dd>0.1.0, commit abc123</dd>" in page
    assert "<dt>data sets</dt><dd>CIFAR-10, CIFAR-100</dd>" in page
    assert "<code>table=6 seed=0</code>" in page
    assert "<script" not in page and "http" not in page.replace('http-equiv', '')
    assert '<span class="muted">no key figure</span>' in page  # 03_ta has none
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["dry_run"] is True
    (entry,) = [e for e in summary["notebooks"] if e["name"] == "02_sweep"]
    assert entry["results"] == ["02_sweep.results/sweep.csv"]
    assert entry["skipped"] == [{"table": "Table 3", "reason": "fetch tiny-imagenet-200.zip"}]
    # a dry run and a real run of one scale do not merge their entries
    assert [r["name"] for r in write_index([_result("09_z")], tmp_path, "paper")] == ["09_z"]


def test_clock():
    from kdlib.report_index import clock

    assert [clock(s) for s in (0, 44.6, 60, 354.2, 3725)] == [
        "0 s", "45 s", "1 min 00 s", "5 min 54 s", "1 h 02 min"]


def test_total_time_shows_the_wall_time_jobs_and_durations_added_up(tmp_path):
    a, b = _result("00_a"), _result("01_b")
    a.duration_s, b.duration_s = 300.0, 240.0
    run = {"state": "finished", "jobs": 2, "elapsed_s": 310.4, "notebooks_s": 540.0}
    page = render_index([vars(a), vars(b)], "default", run)
    assert "<dt>total time</dt><dd>5 min 10 s (this run, wall clock, 2 notebooks at a " \
           "time); the notebooks&#x27; durations add up to 9 min 00 s</dd>" in page
    one = render_index([vars(a)], "default", {**run, "jobs": 1, "notebooks_s": 300.0})
    assert "(this run, wall clock, 1 notebook at a time); the notebooks&#x27; durations " \
           "add up to 5 min 00 s</dd>" in one
    # no wall time recorded: the durations only
    old = render_index([vars(a), vars(b)], "default", {"state": "finished"})
    assert "<dt>total time</dt><dd>9 min 00 s (the notebooks&#x27; durations added up)</dd>" \
        in old
