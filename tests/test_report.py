"""The report runner (kdlib.report, `python -m kdlib report`) and the scale presets.

Real kernels are slow, so the runner is executed twice in all (module-scoped fixtures):
once over three tiny notebooks, once more with -p overrides, selection by number and by
path, and a per-cell timeout. Every other test inspects those outputs or needs no kernel.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jupytext
import nbformat
import numpy as np
import pytest
import torch

from kdlib import presets, report
from kdlib.__main__ import main

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

        from kdlib.report import headline

        print(f"scale={SCALE} interactive={INTERACTIVE}")
        print(f"python={sys.executable}")
        print(f"mplbackend={os.environ.get('MPLBACKEND')}")
        print(f"cwd={os.getcwd()}")
        headline(accuracy=0.97)
        headline("ECE (teacher)", 0.12)
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
    return e


@pytest.fixture(scope="module")
def run(tmp_path_factory, env):
    """The runner over the three notebooks (default selection) at smoke scale."""
    root = tmp_path_factory.mktemp("report")
    for stem, text in NOTEBOOKS.items():
        _write(root / "notebooks" / f"{stem}.py", text)
    _write(root / "notebooks" / "helper.py", "x = 1\n")  # not NN_*.py: not selected
    proc = _run_cli(["--scale", "smoke", "--out", "out"], cwd=root, env=env)
    return root, root / "out", proc


@pytest.fixture(scope="module")
def rerun(run, env):
    """A second run into a copy of the first output: notebook 2 by number with -p
    overrides plus a slow notebook by path, under a per-cell timeout."""
    root, out, _ = run
    out2 = root / "out2"
    shutil.copytree(out, out2)
    slow = _write(root / "extra" / "03_sleeps.py", SLOW_NOTEBOOK)
    proc = _run_cli(
        ["--scale", "smoke", "--out", "out2", "-p", "EPOCHS=5", "-p", "MODEL=resnet8",
         "--cell-timeout", str(CELL_TIMEOUT_S), "2", str(slow)],
        cwd=root, env=env,
    )
    return root, out2, proc


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
        nb = nbformat.read(out / f"{stem}.ipynb", as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert (out / f"{stem}.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert not (out / "helper.html").exists()
    # no temporary or in-progress files left behind
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_exit_code_and_progress_on_stderr(run):
    _, out, proc = run
    assert proc.returncode == 1, proc.stderr
    assert "[1/3] 00_headline" in proc.stderr
    assert "[3/3] 02_params" in proc.stderr
    assert "3 notebook(s): 2 ok, 1 failed" in proc.stderr
    assert "notebook" not in proc.stdout  # progress goes to stderr only


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
    assert ok["headline"] == {"accuracy": 0.97, "ECE (teacher)": 0.12}
    assert ok["parameters"] == {"SCALE": "smoke", "INTERACTIVE": False}
    assert ok["error"] is None
    index = (out / "index.html").read_text()
    for stem in NOTEBOOKS:
        assert f'<a href="{stem}.html">{stem}</a>' in index
    assert "accuracy: <b>0.97</b>" in index
    assert "ECE (teacher): <b>0.12</b>" in index
    assert index.count('class="ok">ok<') == 2
    assert index.count('class="failed">failed<') == 1
    # the headline renders as a table in the notebook's own report
    assert "<td>accuracy</td>" in (out / "00_headline.html").read_text().replace("\n", "")


def test_failing_notebook_is_partial_and_others_still_run(run):
    _, out, proc = run
    nb = nbformat.read(out / "01_raises.ipynb", as_version=4)
    text = _stream_text(nb)
    assert "before the failure" in text
    assert "never printed" not in text
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("RuntimeError", "boom from cell two 42")]
    assert "boom from cell two 42" in (out / "01_raises.html").read_text()
    entry = _entry(out, "01_raises")
    assert entry["status"] == "failed"
    assert entry["error"]["ename"] == "RuntimeError"
    assert entry["error"]["evalue"] == "boom from cell two 42"
    assert "raise RuntimeError" in entry["error"]["source"]
    assert entry["html"] == "01_raises.html"
    # stderr names the failing cell (its source) and the error
    assert 'raise RuntimeError(f"boom from cell two {value + 1}")' in proc.stderr
    assert "RuntimeError: boom from cell two 42" in proc.stderr
    # the notebook after the failing one ran
    assert "epochs*2=6 model=mlp scale=smoke" in _stream_text(
        nbformat.read(out / "02_params.ipynb", as_version=4)
    )


# --------------------------------------------------------------------------- second run


def test_overrides_selection_and_timeout(rerun):
    root, out, proc = rerun
    assert proc.returncode == 1, proc.stderr
    assert "[1/2] 02_params" in proc.stderr and "[2/2] 03_sleeps" in proc.stderr
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
    assert "started" in _stream_text(nbformat.read(out / "03_sleeps.ipynb", as_version=4))
    assert (out / "03_sleeps.html").exists()
    assert "time.sleep(120)" in proc.stderr and "CellTimeoutError" in proc.stderr


def test_index_keeps_earlier_entries_of_the_same_scale(rerun):
    _, out, _ = rerun
    summary = _summary(out)
    assert [e["name"] for e in summary["notebooks"]] == [*NOTEBOOKS, "03_sleeps"]
    assert _entry(out, "00_headline")["headline"]["accuracy"] == 0.97
    index = (out / "index.html").read_text()
    assert "accuracy: <b>0.97</b>" in index and "03_sleeps.html" in index


# --------------------------------------------------------------------------- no kernel


@pytest.fixture()
def notebooks_dir(tmp_path):
    for stem, text in NOTEBOOKS.items():
        _write(tmp_path / "notebooks" / f"{stem}.py", text)
    return tmp_path / "notebooks"


def test_undeclared_parameter_fails_before_execution(notebooks_dir, tmp_path, capsys):
    rc = main(["report", "--out", str(tmp_path / "out"), "--notebooks-dir",
               str(notebooks_dir), "-p", "BOGUS=1", "00"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "['BOGUS']" in err and "declared: ['SCALE', 'INTERACTIVE']" in err
    entry = _entry(tmp_path / "out", "00_headline")
    assert entry["status"] == "failed" and entry["ipynb"] is None and entry["html"] is None
    assert "BOGUS" in entry["error"]["evalue"]
    assert not (tmp_path / "out" / "00_headline.ipynb").exists()
    assert "BOGUS" in (tmp_path / "out" / "index.html").read_text()


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


def test_cli_usage_errors_exit_2(notebooks_dir, capsys):
    for argv, message in [
        (["-p", "SCALE=paper"], "runner sets ['SCALE', 'INTERACTIVE']"),
        (["-p", "EPOCHS"], "NAME=VALUE"),
        (["42"], "no notebook '42'"),
        (["--scale", "huge"], "invalid choice: 'huge'"),
        (["--cell-timeout", "0"], "must be >= 1 second"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["report", "--notebooks-dir", str(notebooks_dir), *argv])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


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
        "ECE (teacher): 0.25", "acc: 0.971235", "n: 3", "model: resnet8", "loss: 1.5"
    ]
    assert "| acc | 0.971235 |" in b["text/markdown"]
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


def test_headline_outside_ipython_prints_text(capsys):
    report.headline(accuracy=0.5)
    assert capsys.readouterr().out == "accuracy: 0.5\n"


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
    assert '<td class="num">1.2</td>' in page or '<td class="num">1.3</td>' in page


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
