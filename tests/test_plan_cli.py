"""`kdlib plan` end to end for the notebooks with planners (00, 01, 09): totals, GPU-hours,
selections, run counts implied by the presets, the CSV and the command line."""

import re
import subprocess
import sys

import pandas as pd
import pytest

from kdlib import commands, presets
from kdlib.experiments import calibration_explorer, gmm_optimal_teacher, gmm_oracle
from kdlib.plan import gpu_hours, macs

TOTALS = re.compile(r"runs asked for: (\d+); unique: (\d+) .*to train: (\d+) \((\d+) models\)")
HOURS = re.compile(r"GPU-hours to spend: ([\d,.]+)")


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A project folder whose data folder holds a (presence-only) CIFAR-100: planning
    checks that the data set is there, it never reads it."""
    (tmp_path / "data" / "cifar-100-python").mkdir(parents=True)
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    return tmp_path


def _totals(text: str) -> tuple[int, int, int, int, float]:
    runs, unique, todo, models = (int(v) for v in TOTALS.search(text).groups())
    return runs, unique, todo, models, float(HOURS.search(text).group(1).replace(",", ""))


def _oracle_counts(cfg) -> tuple[int, int]:
    """(runs, models) of the GMM oracle by hand: per (task, width, length) one teacher stack
    of the seeds and one student stack of losses x temperatures per seed."""
    cells = len(cfg["tasks"]) * len(cfg["teacher_hidden"]) * len(cfg["teacher_epochs"])
    seeds = len(cfg["seeds"])
    students = len(cfg["losses"]) * len(cfg["temperatures"])
    return cells * (1 + seeds), cells * (seeds + seeds * students)


def _optimal_teacher_counts(cfg) -> tuple[int, int]:
    """(runs, models) of notebook 01 by hand: per task a Table 1 stack (one-hot and
    posterior arms) and a tempered stack (one arm per temperature), each x runs."""
    tasks, runs = len(cfg["tasks"]), cfg["runs"]
    return 2 * tasks, tasks * runs * (2 + len(cfg["temperatures"]))


def test_paper_plan_prints_totals_and_gpu_hours(project):
    text = commands.plan_command(["00", "01", "09"], "paper")
    cal = presets.get(calibration_explorer.NAME, "paper")
    opt = presets.get(gmm_optimal_teacher.NAME, "paper")
    ora = presets.get(gmm_oracle.NAME, "paper")
    runs = len(cal["teachers"]) + _optimal_teacher_counts(opt)[0] + _oracle_counts(ora)[0]
    models = len(cal["teachers"]) + _optimal_teacher_counts(opt)[1] + _oracle_counts(ora)[1]
    assert (runs, models) == (3 + 4 + 108, 3 + 60 + 1530)
    assert _totals(text)[:4] == (runs, runs, runs, models)
    # the three CIFAR-100 teachers, 240 epochs of 50,000 images, dominate the GPU-hours
    teachers = sum(gpu_hours(240 * 50_000 * 3 * macs(t["arch"], "cifar100"))
                   for t in cal["teachers"])
    hours = _totals(text)[4]
    assert hours > 0 and hours == pytest.approx(teachers, abs=0.06)  # printed to 0.1
    assert "00_calibration_explorer" in text and "09_gmm_oracle" in text
    assert "throughput: kdlib.plan.DEFAULT_THROUGHPUT" in text
    assert not (project / "runs").exists()  # planning writes nothing


def test_a_selection_reduces_the_runs(project):
    full = _totals(commands.plan_command(["00", "01"], "paper"))
    some = _totals(commands.plan_command(["00"], "paper", "pair=resnet56"))
    table1 = _totals(commands.plan_command(["01"], "paper", "table=1"))
    assert (full[0], some[0], table1[0]) == (7, 1, 2)
    assert 0 < some[4] < full[4]
    assert table1[3] == 2 * 5 * 2  # 2 tasks x 5 runs x (one-hot, posterior)
    with pytest.raises(ValueError, match="resnet56"):  # names what exists
        commands.plan_command(["00"], "paper", "pair=no_such_teacher")


def test_default_scale_run_count_of_01_matches_its_preset(project, tmp_path):
    cfg = presets.get(gmm_optimal_teacher.NAME, "default")
    runs, models = _optimal_teacher_counts(cfg)
    assert (runs, models) == (4, 60)
    csv = tmp_path / "plan.csv"
    text = commands.plan_command(["01"], "default", csv=str(csv), throughput=1000.0)
    assert _totals(text)[:4] == (runs, runs, runs, models)
    frame = pd.read_csv(csv)
    assert len(frame) == runs and frame["members"].sum() == models
    assert set(frame["epochs"]) == {cfg["recipe"]["epochs"]}
    assert "measured (--throughput)" in text and "1,000 resnet14" in text
    # the dry run plans the same cells with one run per arm
    dry = _totals(commands.plan_command(["01"], "default", dry_run=True))
    assert dry[:4] == (4, 4, 4, 2 * (2 + len(cfg["temperatures"])))


def test_command_line(project):
    help_ = subprocess.run([sys.executable, "-m", "kdlib", "plan", "--help"],
                           capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0, help_.stderr
    assert "--throughput" in help_.stdout and "--select" in help_.stdout
    out = subprocess.run([sys.executable, "-m", "kdlib", "plan", "--scale", "default", "01",
                          "--select", "table=1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert _totals(out.stdout)[:4] == (2, 2, 2, 20)
    bad = subprocess.run([sys.executable, "-m", "kdlib", "plan", "99"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "unknown notebook" in bad.stderr
