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
