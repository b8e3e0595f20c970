"""The paper scale, executed: every notebook's paper preset, with each training cut to a few
steps (`kdlib report --scale paper --dry-run`), on CIFAR-10, CIFAR-100 and Tiny-ImageNet
written in their real on-disk formats (tests/fake_datasets.py) into a temporary project.

Also: a one-pair, one-seed selection from the command line; a missing Tiny-ImageNet is a
skipped table, not a failed notebook; the cells of a dry run sent to a Dask cluster of two
worker processes give the records of the in-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fake_datasets import write_project

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.dry_run
BUDGET_S = 15 * 60


def _kdlib(args, project: Path, timeout: float = BUDGET_S, env=None):
    environ = {**os.environ, "KDLIB_PROJECT_DIR": str(project), "PYTHONUNBUFFERED": "1",
               **(env or {})}
    return subprocess.run([sys.executable, "-m", "kdlib", *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=timeout)


def _summary(out: Path) -> dict:
    return {nb["name"]: nb for nb in json.loads((out / "summary.json").read_text())["notebooks"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return write_project(tmp_path_factory.mktemp("paper-project"))


@pytest.fixture(scope="module")
def full_dry_run(project):
    out = project / "reports" / "paper-dry-run"
    done = _kdlib(["report", "--scale", "paper", "--dry-run", "--out", str(out)], project)
    return done, out


def test_every_notebook_runs_its_paper_preset(full_dry_run):
    done, out = full_dry_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    summary = _summary(out)
    assert sorted(summary) == sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py"))
    for name, nb in summary.items():
        assert nb["status"] == "ok", (name, nb.get("error"))
        assert nb["parameters"]["DRY_RUN"] is True and nb["parameters"]["SCALE"] == "paper"
        assert nb["headline"], f"{name} computed no headline figures"
        assert not nb.get("skipped"), f"{name} skipped tables with every data set present"
    index = (out / "index.html").read_text()
    assert "dry run" in index.lower()


def test_one_pair_one_seed_selected_from_the_command_line(project):
    out = project / "reports" / "selected"
    done = _kdlib(["report", "--scale", "paper", "--dry-run", "--select",
                   "table=6 pair=resnet56->resnet14 seed=0", "--out", str(out), "02"], project)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    nb = _summary(out)["02_temperature_sweep"]
    assert nb["status"] == "ok" and nb["parameters"]["SELECT"].startswith("table=6")
    bad = _kdlib(["report", "--scale", "paper", "--dry-run", "--select", "pair=vgg8",
                  "--out", str(project / "reports" / "bad"), "02"], project, timeout=600)
    assert bad.returncode != 0
    assert "resnet56->resnet14" in bad.stdout + bad.stderr  # names what exists


def test_missing_tinyimagenet_skips_table_3_only(project, tmp_path):
    no_tiny = tmp_path / "no-tiny"
    (no_tiny / "data").mkdir(parents=True)
    for name in ("cifar-10-batches-py", "cifar-100-python"):
        (no_tiny / "data" / name).symlink_to(project / "data" / name)
    out = no_tiny / "reports"
    done = _kdlib(["report", "--scale", "paper", "--dry-run", "--out", str(out), "03"], no_tiny)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    nb = _summary(out)["03_teacher_assistant"]
    assert nb["status"] == "ok"
    skipped = json.dumps(nb.get("skipped"))
    assert "3" in skipped and "tiny-imagenet-200" in skipped


def test_dask_cluster_fills_the_store_like_an_in_process_run(project, full_dry_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    from kdlib import sweep

    other = tmp_path / "dask-project"
    (other / "data").mkdir(parents=True)
    for child in (project / "data").iterdir():
        if child.is_dir() and child.name != "teachers":
            (other / "data" / child.name).symlink_to(child)
    select = "table=6 pair=resnet56->resnet14"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  env={"KDLIB_PROJECT_DIR": str(other)}) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        done = _kdlib(["run", "02", "--scale", "paper", "--dry-run", "--select", select,
                       "--executor", address, "--out", str(other / "reports")], other,
                      timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    def timeless(value):  # everything but how long things took
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items()
                    if not k.startswith("_") and "seconds" not in k}
        if isinstance(value, list):
            return [timeless(v) for v in value]
        return value

    def records(root):
        store = root / "runs" / "paper-dry-run" / "temperature_sweep.sqlite"
        return {r["_key"]: timeless(r) for r in sweep.load(store, namespace="temperature_sweep")}

    ours, reference = records(other), records(project)
    assert len(ours) == 2  # Table 6's cell and the control's cell of the selected pair
    assert all(ours[k] == reference[k] for k in ours)  # bit for bit, on other processes
