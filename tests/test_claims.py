"""Claims tables: every branch of the verdict rule, rows, the one-line summary."""

import math

import numpy as np
import pandas as pd
import pytest

from kdlib import claims as cl


@pytest.mark.parametrize("low, high, n, expected", [
    (-0.85, -0.28, 3, "holds"),          # wholly below 0
    (0.10, 0.60, 3, "does not hold"),    # wholly above 0
    (-0.40, 0.20, 3, "inconclusive"),    # straddles
    (-0.40, 0.0, 3, "inconclusive"),     # touches the null
    (-0.85, -0.28, 2, "inconclusive"),   # too few points
    (math.nan, math.nan, 5, "inconclusive"),
])
def test_less(low, high, n, expected):
    assert cl.verdict("less", low, high, n) == expected


@pytest.mark.parametrize("low, high, expected", [
    (0.1, 0.6, "holds"), (-0.6, -0.1, "does not hold"), (-0.1, 0.3, "inconclusive")])
def test_greater_with_null(low, high, expected):
    assert cl.verdict("greater", low, high, 4) == expected
    # shifting the null moves the verdict with it
    assert cl.verdict("greater", low + 1, high + 1, 4, null=1.0) == expected


@pytest.mark.parametrize("low, high, expected", [
    (-20, 25, "holds"),            # inside the band [-30, 30]
    (-30, 30, "holds"),            # the band's edges are inside
    (35, 60, "does not hold"),     # wholly above the band
    (-89, -57, "does not hold"),   # wholly below
    (-50, 10, "inconclusive"),     # overlaps the lower edge
    (-40, 40, "inconclusive"),     # wider than the band
])
def test_insensitive(low, high, expected):
    assert cl.verdict("insensitive", low, high, 3, tolerance=30) == expected


def test_insensitive_small_n_is_inconclusive():
    assert cl.verdict("insensitive", -1, 1, 2, tolerance=30) == "inconclusive"
    assert cl.verdict("insensitive", -1, 1, 2, tolerance=30, min_n=2) == "holds"


@pytest.mark.parametrize("kwargs, err", [
    ({"kind": "smaller"}, ValueError),
    ({"kind": "insensitive"}, ValueError),                  # no tolerance
    ({"kind": "insensitive", "tolerance": 0.0}, ValueError),
    ({"kind": "less", "tolerance": 1.0}, ValueError),       # tolerance on a directional claim
    ({"low": 1.0, "high": 0.0}, ValueError),                # inverted interval
    ({"n": -1}, ValueError),
    ({"low": "a"}, TypeError),
    ({"low": True}, TypeError),
])
def test_bad_inputs(kwargs, err):
    args = {"kind": "less", "low": -1.0, "high": -0.5, "n": 3, **kwargs}
    with pytest.raises(err):
        cl.verdict(**args)


def test_row_table_and_line():
    rows = [cl.claim("KD falls with teacher ECE", "Table 6: -92% to -76%", -68.04, -85.2,
                     -28.0, 3, "less", unit="%", digits=0),
            cl.claim("DIST insensitive", "Table 6: 0.5% to 1.8%", -77.0, -89.0, -57.0, 3,
                     "insensitive", tolerance=30, unit="%", digits=0)]
    t = cl.claims_table(rows)
    assert list(t.columns) == list(cl.COLUMNS)
    assert list(t["verdict"]) == ["holds", "does not hold"]
    assert t.loc[0, "ours"] == "-68%" and t.loc[0, "interval"] == (-85.0, -28.0)
    assert t.loc[1, "rule"] == "|x| <= 30%" and t.loc[0, "rule"] == "< 0%"
    assert cl.verdict_line(t) == ("KD falls with teacher ECE: holds, -68% [-85, -28]; "
                                  "DIST insensitive: does not hold, -77% [-89, -57]")
    assert cl.counts(t) == {"holds": 1, "does not hold": 1, "inconclusive": 0}
    both = cl.concat(t, t)
    assert len(both) == 4 and cl.counts(both)["holds"] == 2
    assert cl.verdict_line(cl.claims_table([])) == ""


def test_table_rejects_foreign_rows():
    with pytest.raises(ValueError):
        cl.claims_table([{"claim": "x"}])
    with pytest.raises(TypeError):
        cl.verdict_line(pd.DataFrame().to_dict())
    with pytest.raises(ValueError):
        cl.verdict_line(pd.DataFrame({"claim": ["x"]}))


def test_spearman_claim_decreasing_and_too_few_cells():
    rng = np.random.default_rng(0)
    rows = [{"temperature": t, "seed": s, "ece": t + 0.01 * rng.normal(),
             "acc": 1.0 - 0.1 * t + 0.01 * rng.normal()}
            for t in (1, 2, 3, 4, 5) for s in range(3)]
    df = pd.DataFrame(rows)
    r = cl.spearman_claim(df, "ece", "acc", "falls", "paper", "less", n_boot=200, scale=100,
                          unit="%", digits=0)
    assert r["verdict"] == "holds" and r["ours"] == "-100%" and r["n"] == 3
    one_seed = cl.spearman_claim(df[df.seed == 0], "ece", "acc", "falls", "p", "less",
                                 n_boot=50)
    assert one_seed["verdict"] == "inconclusive" and one_seed["n"] == 1
    two_cells = cl.spearman_claim(df[df.temperature <= 2], "ece", "acc", "falls", "p", "less")
    assert two_cells["verdict"] == "inconclusive" and two_cells["ours"] == "nan"
