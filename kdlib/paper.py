"""The paper's reported numbers (Fan et al., ICML 2024), shipped as CSV package data.

Percentages are kept as printed in the paper (percent, not fractions).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

# The distillation temperatures of the paper's Table 6 (and Figures 2, 3, 6)
PAPER_TEMPERATURES = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0]

TABLES = {
    "table1": "table1_gmm_optimal_teacher.csv",
    "table2": "table2_takd_cifar100.csv",
    "table3": "table3_takd_tinyimagenet.csv",
    "table4": "table4_eskd_checkpoints.csv",
    "table5_8": "table5_8_few_vs_full_trained.csv",
    "table6": "table6_temperature_sweep.csv",
    "table6_9_spearman": "table6_9_spearman.csv",
    "table7": "table7_takd_seeds.csv",
}


def paper_table(name: str) -> pd.DataFrame:
    """One of the paper's tables as a DataFrame; `name` in TABLES (e.g. "table6")."""
    if name not in TABLES:
        raise ValueError(f"unknown paper table {name!r}; choose one of {sorted(TABLES)}")
    with resources.files("kdlib.paper_data").joinpath(TABLES[name]).open("r") as fh:
        return pd.read_csv(fh)


def paper_name(arch: str) -> str:
    """The paper's spelling of a kdlib architecture name: "resnet56" -> "ResNet56",
    "wrn_28_1" -> "WRN-28-1", "mobilenetv2" -> "MobileNetV2"; other names unchanged."""
    if not isinstance(arch, str) or not arch:
        raise TypeError(f"arch must be a non-empty string, got {arch!r}")
    if arch.startswith("resnet") and arch[6:].isdigit():
        return f"ResNet{arch[6:]}"
    if arch.startswith("wrn_"):
        return "WRN-" + arch[4:].replace("_", "-")
    if arch == "mobilenetv2":
        return "MobileNetV2"
    return arch


def aligned_table(ours: pd.DataFrame, paper: pd.DataFrame, keys: list[str],
                  metrics: dict[str, str], *, seed_column: str = "seed",
                  scale: float = 100.0, epoch: str = "last") -> pd.DataFrame:
    """Ours beside the paper's, one row per (keys..., metric).

    ours: one row per run (seed), with the `keys` columns, `seed_column` and our metric
    columns (fractions: multiplied by `scale` to the paper's percent). paper: the paper's
    table with the same `keys` columns (names matched beforehand, e.g. with `paper_name`).
    metrics: {our column: paper column}. Columns of the result: keys, "metric", "paper (%)",
    "ours mean (%)", "ours sd (%)", "n seeds", "ours - paper (points)", "epoch" (which of
    our epochs is reported: the last, as the paper reports). Rows of ours without a paper
    value keep NaN in the paper columns; paper rows we did not run are left out.
    """
    if not isinstance(ours, pd.DataFrame) or not isinstance(paper, pd.DataFrame):
        raise TypeError("ours and paper must be pandas DataFrames")
    if not isinstance(keys, (list, tuple)) or not keys:
        raise ValueError(f"keys must be a non-empty list of column names, got {keys!r}")
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f"metrics must be a non-empty dict {{our column: paper column}}, "
                         f"got {metrics!r}")
    for frame, cols, label in ((ours, [*keys, seed_column, *metrics], "ours"),
                               (paper, [*keys, *metrics.values()], "paper")):
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ValueError(f"{label} lacks columns {missing}; it has {list(frame.columns)}")
    rows = []
    for metric, paper_col in metrics.items():
        stats = (ours.groupby(list(keys), sort=False)
                 .agg(mean=(metric, "mean"), sd=(metric, "std"), n=(seed_column, "nunique"))
                 .reset_index())
        merged = stats.merge(paper[[*keys, paper_col]], on=list(keys), how="left")
        for _, r in merged.iterrows():
            mean, sd = r["mean"] * scale, r["sd"] * scale
            rows.append({**{k: r[k] for k in keys}, "metric": metric,
                         "paper (%)": r[paper_col], "ours mean (%)": mean,
                         "ours sd (%)": sd, "n seeds": int(r["n"]),
                         "ours - paper (points)": mean - r[paper_col], "epoch": epoch})
    return pd.DataFrame(rows)
