"""kdlib.paper: the paper's tables, its names for architectures, ours beside the paper's."""

import math

import pandas as pd
import pytest

from kdlib.paper import aligned_table, paper_name, paper_table


@pytest.mark.parametrize("arch, name", [("resnet56", "ResNet56"), ("wrn_28_1", "WRN-28-1"),
                                        ("mobilenetv2", "MobileNetV2"), ("mlp", "mlp")])
def test_paper_name(arch, name):
    assert paper_name(arch) == name


def test_aligned_table_means_sds_and_differences_by_hand():
    ours = pd.DataFrame({"teacher": ["ResNet56"] * 3 + ["WRN-28-1"], "tau": [4.0] * 4,
                         "seed": [0, 1, 2, 0], "acc": [0.70, 0.72, 0.74, 0.60]})
    paper = pd.DataFrame({"teacher": ["ResNet56", "ResNet110"], "tau": [4.0, 4.0],
                          "kd_accuracy": [69.0, 71.0]})
    out = aligned_table(ours, paper, ["teacher", "tau"], {"acc": "kd_accuracy"})
    first = out.iloc[0]
    assert first["ours mean (%)"] == pytest.approx(72.0)
    assert first["ours sd (%)"] == pytest.approx(2.0)  # sample sd of 70, 72, 74
    assert first["n seeds"] == 3 and first["ours - paper (points)"] == pytest.approx(3.0)
    assert out.iloc[1]["teacher"] == "WRN-28-1" and math.isnan(out.iloc[1]["paper (%)"])
    assert len(out) == 2 and (out["epoch"] == "last").all()


def test_aligned_table_names_missing_columns():
    with pytest.raises(ValueError, match="paper lacks columns"):
        aligned_table(pd.DataFrame({"t": [1], "seed": [0], "a": [0.5]}), paper_table("table6"),
                      ["t"], {"a": "kd_accuracy"})
