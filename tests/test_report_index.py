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
    assert '<a href="01_b.failed.html">01_b</a>' in page
    assert 'last ok report: <a href="01_b.html">01_b.html</a>' in page
    assert 'class="stopped">stopped<' in page and "In [3]: Stopped: stopped by SIGTERM" in page
    assert "1 of 2 notebooks ok" in page
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
