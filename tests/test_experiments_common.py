import math

import pandas as pd
import pytest
import torch

from kdlib.experiments import common
from kdlib.recipe import recipe_from_spec


def test_table6_aligned_by_hand():
    # two seeds of ResNet56 -> ResNet14 at tau = 1 (paper: ECE 12.04, KD 68.09, DIST 67.35)
    df = pd.DataFrame({"loss": ["kd", "kd", "dist", "dist", "fitnet"],
                       "temperature": [1.0] * 5, "seed": [0, 1, 0, 1, 0],
                       "accuracy": [0.68, 0.70, 0.67, 0.67, 0.5],
                       "teacher_ece_at_tau": [0.12, 0.12, 0.12, 0.12, 0.12]})
    t = common.table6_aligned(df, "resnet56", "resnet14").set_index(["loss", "metric"])
    kd = t.loc[("kd", "accuracy")]
    assert kd["teacher"] == "ResNet56" and kd["student"] == "ResNet14"
    assert kd["paper (%)"] == pytest.approx(68.09)
    assert kd["ours mean (%)"] == pytest.approx(69.0)
    assert kd["ours sd (%)"] == pytest.approx(math.sqrt(2))       # sd of 68, 70
    assert kd["ours - paper (points)"] == pytest.approx(69.0 - 68.09)
    assert kd["n seeds"] == 2 and kd["epoch"] == "last"
    assert t.loc[("dist", "accuracy"), "paper (%)"] == pytest.approx(67.35)
    assert t.loc[("dist", "teacher_ece_at_tau"), "ours - paper (points)"] == \
        pytest.approx(12.0 - 12.04)
    assert "fitnet" not in t.index.get_level_values("loss")
    # a pair the paper does not print: NaN paper values, ours still there
    other = common.table6_aligned(df, "resnet20", "resnet8")
    assert other["paper (%)"].isna().all() and len(other) == 4
    assert common.table6_aligned(df[df.loss == "fitnet"], "resnet56", "resnet14").empty
    with pytest.raises(ValueError, match="lacks columns"):
        common.table6_aligned(df.drop(columns="seed"), "resnet56", "resnet14")


def test_cut_recipe_specs_spells_out_and_cuts():
    cfg = {"teacher_recipe": "paper", "student_recipe": {"preset": "default"},
           "other": None}
    out = common.cut_recipe_specs(cfg, ("teacher_recipe", "student_recipe", "other"))
    for key in ("teacher_recipe", "student_recipe"):
        r = recipe_from_spec(out[key])
        assert (r.epochs, r.batch_size, r.milestones) == (1, 8, ())
    assert recipe_from_spec(out["teacher_recipe"]).checkpoint_every == 1   # paper saves: 1
    assert out["other"] is None and cfg["teacher_recipe"] == "paper"     # a copy


def test_limited_threads_students_dir_headline_number(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    with common.limited_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with common.limited_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        common.limited_threads(0)
    monkeypatch.setenv("KDLIB_PROJECT_DIR", str(tmp_path))
    assert common.students_dir("paper-dry-run") == tmp_path / "runs" / "paper-dry-run" / \
        "students"
    with pytest.raises(ValueError, match="run_name"):
        common.students_dir("huge")
    assert common.headline_number(0.123456) == 0.123
    assert common.headline_number(float("nan")) == "n/a"
    assert common.headline_number("x") == "n/a"
