"""Claims tables: the paper's claims, our figure with its interval, and a computed verdict.

One row per claim, columns `claim`, `paper_evidence`, `ours`, `interval`, `n`, `verdict`,
`rule`. The verdict follows `verdict` below, so a notebook's conclusion is computed from
the run it shows, at whatever scale it ran.
"""

from __future__ import annotations

import math

import pandas as pd

from kdlib._validate import check_int, check_real

VERDICTS = ("holds", "does not hold", "inconclusive")
"""The three verdicts, in this order."""

KINDS = ("less", "greater", "insensitive")
"""Claim kinds: the effect is below the null, above it, or within +-tolerance of it."""

MIN_N = 3
"""Fewest independent points (seeds, cells, pairs) for a verdict other than inconclusive."""

COLUMNS = ("claim", "paper_evidence", "ours", "interval", "n", "verdict", "rule")


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(
            value, "__float__"):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def verdict(kind: str, low, high, n: int, null: float = 0.0, tolerance: float | None = None,
            min_n: int = MIN_N) -> str:
    """The verdict of one claim from the interval [low, high] of its effect over n points.

    Rule, in order:
    1. inconclusive when n < min_n, or low or high is NaN (no interval could be formed);
    2. kind "less" (the claim: effect < null, e.g. Spearman < 0): holds when the whole
       interval lies below the null (high < null), does not hold when it lies wholly above
       (low > null), inconclusive when it contains the null;
    3. kind "greater": the mirror image (holds when low > null, fails when high < null);
    4. kind "insensitive" (the claim: |effect - null| <= tolerance): holds when the whole
       interval lies inside the band [null - tolerance, null + tolerance], does not hold
       when it lies wholly outside it (low > null + tolerance or high < null - tolerance),
       inconclusive when it overlaps the band's edge.
    An interval touching the null (or the band's edge) is inconclusive. `tolerance` is
    required (> 0) for "insensitive" and must be None otherwise; units are the effect's.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    low, high = _real(low, "low"), _real(high, "high")
    null = _real(null, "null")
    n = check_int(n, "n", minimum=0)
    min_n = check_int(min_n, "min_n", minimum=1)
    if not math.isfinite(null):
        raise ValueError(f"null must be finite, got {null}")
    if kind == "insensitive":
        if tolerance is None:
            raise ValueError("an 'insensitive' claim needs a tolerance > 0 (the effect's units)")
        tolerance = check_real(tolerance, "tolerance", 0.0)
        if not 0 < tolerance < math.inf:
            raise ValueError(f"tolerance must be finite and > 0, got {tolerance}")
    elif tolerance is not None:
        raise ValueError(f"tolerance applies to 'insensitive' claims only, not {kind!r}")
    if not (math.isnan(low) or math.isnan(high)) and low > high:
        raise ValueError(f"low must be <= high, got [{low}, {high}]")
    if n < min_n or math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if kind == "less":
        return "holds" if high < null else "does not hold" if low > null else "inconclusive"
    if kind == "greater":
        return "holds" if low > null else "does not hold" if high < null else "inconclusive"
    lo_band, hi_band = null - tolerance, null + tolerance
    if lo_band <= low and high <= hi_band:
        return "holds"
    if low > hi_band or high < lo_band:
        return "does not hold"
    return "inconclusive"


def rule_text(kind: str, null: float = 0.0, tolerance: float | None = None,
              unit: str = "") -> str:
    """The claimed side as a short string: '< 0', '> 0', '|x| <= 30%' (x - null when null != 0)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "less":
        return f"< {null:g}{unit}"
    if kind == "greater":
        return f"> {null:g}{unit}"
    x = "|x|" if null == 0 else f"|x - {null:g}{unit}|"
    return f"{x} <= {tolerance:g}{unit}"


def claim(claim: str, paper_evidence: str, estimate, low, high, n: int, kind: str,
          null: float = 0.0, tolerance: float | None = None, unit: str = "",
          digits: int = 2, min_n: int = MIN_N) -> dict:
    """One row of a claims table (a dict with COLUMNS as keys).

    claim and paper_evidence: short strings (the paper's figure/table and its value or
    direction); estimate, low, high: our effect and its interval, in the effect's units
    (`unit` is appended to `ours`, e.g. '%' or ' pp'); n: independent points behind the
    interval (seeds, cells or pairs); kind/null/tolerance: as in `verdict`. NaN estimate
    or interval gives 'inconclusive' and prints 'nan'.
    """
    for name, value in (("claim", claim), ("paper_evidence", paper_evidence), ("unit", unit)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not claim.strip():
        raise ValueError("claim must be a non-empty string")
    digits = check_int(digits, "digits", minimum=0, maximum=10)
    estimate = _real(estimate, "estimate")
    v = verdict(kind, low, high, n, null=null, tolerance=tolerance, min_n=min_n)
    return {"claim": claim, "paper_evidence": paper_evidence,
            "ours": f"{estimate:.{digits}f}{unit}",
            "interval": (round(float(low), digits), round(float(high), digits)),
            "n": int(n), "verdict": v, "rule": rule_text(kind, null, tolerance, unit)}


def claims_table(rows) -> pd.DataFrame:
    """A claims table (columns COLUMNS) from a list of `claim(...)` rows; empty list ok."""
    if isinstance(rows, (dict, str)) or not hasattr(rows, "__iter__"):
        raise TypeError(f"rows must be a list of claim(...) dicts, got {type(rows).__name__}")
    rows = list(rows)
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or set(r) != set(COLUMNS):
            raise ValueError(f"row {i} must be a claim(...) dict with keys {COLUMNS}, got {r!r}")
        if r["verdict"] not in VERDICTS:
            raise ValueError(f"row {i}: verdict must be one of {VERDICTS}, got {r['verdict']!r}")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def concat(*tables) -> pd.DataFrame:
    """Several claims tables as one (row order kept)."""
    for t in tables:
        _check_table(t)
    return pd.concat(tables, ignore_index=True) if tables else claims_table([])


def _check_table(table) -> None:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"expected a claims table (DataFrame), got {type(table).__name__}")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"not a claims table: columns {missing} missing; it has "
                         f"{list(table.columns)}")


def verdict_line(table: pd.DataFrame) -> str:
    """One line for a report index: 'claim: verdict, ours [low, high]; ...' ('' if empty)."""
    _check_table(table)
    parts = []
    for _, r in table.iterrows():
        lo, hi = r["interval"]
        parts.append(f"{r['claim']}: {r['verdict']}, {r['ours']} [{lo:g}, {hi:g}]")
    return "; ".join(parts)


def counts(table: pd.DataFrame) -> dict:
    """Number of claims per verdict, every verdict present (zeros included)."""
    _check_table(table)
    return {v: int((table["verdict"] == v).sum()) for v in VERDICTS}


def spearman_claim(df: pd.DataFrame, x: str, y: str, claim_text: str, paper_evidence: str,
                   kind: str, tolerance: float | None = None, cell: str = "temperature",
                   seed_col: str = "seed", n_boot: int = 2000, scale: float = 1.0,
                   unit: str = "", digits: int = 2, rng_seed: int = 0) -> dict:
    """A claim on the Spearman of per-cell means of x and y (analysis.bootstrap_spearman:
    interval over seeds), times `scale` (100 for percent). n is the number of seeds (the
    interval's independent points); fewer than 3 cells gives NaN and 'inconclusive'.
    tolerance is in the scaled units."""
    from kdlib.analysis import bootstrap_spearman

    scale = check_real(scale, "scale", 0.0)
    if not 0 < scale < math.inf:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a DataFrame, got {type(df).__name__}")
    for c in (x, y, cell, seed_col):
        if c not in df.columns:
            raise ValueError(f"column {c!r} not in the frame; it has {list(df.columns)}")
    if df[cell].nunique() < 3:
        rho, lo, hi, n = math.nan, math.nan, math.nan, int(df[seed_col].nunique())
    else:
        r = bootstrap_spearman(df, x, y, cell=cell, seed_col=seed_col, n_boot=n_boot,
                               rng_seed=rng_seed)
        rho, lo, hi, n = r["rho"], r["lo"], r["hi"], r["n_seeds"]
    return claim(claim_text, paper_evidence, scale * rho, scale * lo, scale * hi, n, kind,
                 tolerance=tolerance, unit=unit, digits=digits)


def verdict_bundle(table: pd.DataFrame) -> dict:
    """The bundle `show` publishes for the verdict line: {"line", "counts", "claims":
    [{"claim", "verdict", "text"}, ...]} under
    kdlib.headline.VERDICT_MIMETYPE, plus text/plain and text/markdown."""
    from kdlib.headline import VERDICT_MIMETYPE

    line = verdict_line(table)
    n = counts(table)
    rows = [{"claim": str(r["claim"]), "verdict": str(r["verdict"]),
             "text": verdict_line(table.iloc[[i]])} for i, (_, r) in enumerate(table.iterrows())]
    summary = ", ".join(f"{k} {v}" for k, v in n.items())
    text = f"Verdicts ({summary}): {line}" if line else "Verdicts: no claims"
    return {VERDICT_MIMETYPE: {"line": line, "counts": n, "claims": rows}, "text/plain": text,
            "text/markdown": f"**Verdicts** ({summary}): {line}\n" if line
            else "**Verdicts:** no claims\n"}


def show(table: pd.DataFrame) -> None:
    """Display a claims table and its verdict line (`verdict_line`), the line marked so
    that the report runner puts it into the notebook's row of the index. Outside IPython
    both are printed."""
    _check_table(table)
    bundle = verdict_bundle(table)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        get_ipython = lambda: None  # noqa: E731
    if get_ipython() is None:
        print(table.to_string(index=False))
        print(bundle["text/plain"])
        return
    display(table)
    display(bundle, raw=True)
