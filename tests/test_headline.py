"""kdlib.headline: the figure convention (percent / points / number), the marks a notebook
leaves for the report index, and collecting them back from an executed notebook."""

from __future__ import annotations

import base64
import json

import nbformat
import numpy as np
import pytest

from kdlib import claims as cl
from kdlib import headline as hl


@pytest.mark.parametrize(("figure", "text"), [
    (hl.percent(0.9712), "97.12%"),
    (hl.percent(0.9712, 0.968, 0.974), "97.12% [96.80, 97.40]"),
    (hl.percent(1.0), "100.00%"),
    (hl.percent(0.00925402), "0.93%"),
    (hl.percent(np.float32(0.5)), "50.00%"),
    (hl.points(0.0253, 0.011, 0.039), "+2.53 points [1.10, 3.90]"),
    (hl.points(-0.012, -0.03, 0.0), "-1.20 points [-3.00, 0.00]"),
    (hl.points(0.0), "+0.00 points"),
    (hl.points(-0.00001), "+0.00 points"),  # rounds to zero: no "-0.00"
    (hl.number(-0.68123, -0.85, -0.28), "-0.681 [-0.850, -0.280]"),
    (hl.number(0.8, 0.0, 1.0), "0.800 [0.000, 1.000]"),
    (hl.number(0.0182, 0.0, 0.0818), "0.0182 [0.0000, 0.0818]"),
    # a value near zero takes its interval's decimals: no spurious digits
    (hl.number(0.00911, -0.56492, 0.47273), "0.009 [-0.565, 0.473]"),
    (hl.number(0.0, -0.5, 0.5), "0.000 [-0.500, 0.500]"),
    (hl.number(-0.0004, -0.0009, 0.0001), "-0.000400 [-0.000900, 0.000100]"),
    (hl.number(1234.5, 1000.0, 1500.0), "1230 [1000, 1500]"),
    (hl.number(0.00925402), "0.00925"),
    (hl.number(2.53333), "2.53"),
    (hl.number(1234.5), "1230"),
    (hl.number(0.9996), "1.00"),
    (hl.number(1.5e7), "1.50e+07"),
    (hl.number(3.14159, digits=5), "3.1416"),
    (hl.number(0.0), "0.00"),
])
def test_figure_text(figure, text):
    assert figure.text() == text == str(figure) == hl.format_value(figure)
    assert hl.format_value(figure.to_json()) == text  # what the index reads back


def test_plain_values_use_three_significant_digits():
    assert [hl.format_value(v) for v in (0.00925402, 2.53333, 0.5, 3, "1/2")] == [
        "0.00925", "2.53", "0.500", "3", "1/2"]


def test_figure_json_round_trip():
    f = hl.number(0.5, 0.1, 0.9, digits=2)
    assert f.to_json() == {"value": 0.5, "unit": "number", "low": 0.1, "high": 0.9,
                           "digits": 2}
    assert hl.percent(0.25).to_json() == {"value": 0.25, "unit": "percent", "low": None,
                                          "high": None}
    assert hl.Figure.from_json(json.loads(json.dumps(f.to_json()))) == f


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: hl.percent(97.1), ValueError, r"fraction in \[0, 1\]"),
    (lambda: hl.percent(-0.1), ValueError, r"fraction in \[0, 1\]"),
    (lambda: hl.points(2.5), ValueError, r"in \[-1, 1\]"),
    (lambda: hl.percent(0.5, 0.4), ValueError, "both low and high"),
    (lambda: hl.percent(0.5, 0.6, 0.4), ValueError, "low must be <= high"),
    (lambda: hl.number(float("nan")), ValueError, "finite"),
    (lambda: hl.number("1"), TypeError, "real number"),
    (lambda: hl.number(True), TypeError, "real number"),
    (lambda: hl.number(np.zeros(2)), TypeError, "more than one element"),
    (lambda: hl.number(1.0, digits=0), ValueError, "digits"),
])
def test_figure_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_headline_bundle_mixes_figures_and_plain_values():
    b = hl.headline_bundle(acc=hl.percent(0.9712, 0.968, 0.974), gain=hl.points(0.0253),
                           spearman=-0.68123, n=3)
    assert b[hl.HEADLINE_MIMETYPE] == {
        "acc": {"value": 0.9712, "unit": "percent", "low": 0.968, "high": 0.974},
        "gain": {"value": 0.0253, "unit": "points", "low": None, "high": None},
        "spearman": -0.68123, "n": 3}
    assert b["text/plain"].splitlines() == [
        "acc: 97.12% [96.80, 97.40]", "gain: +2.53 points", "spearman: -0.681", "n: 3"]
    assert "| acc | 97.12% [96.80, 97.40] |" in b["text/markdown"]


def _executed(*bundles_per_cell) -> nbformat.NotebookNode:
    """A notebook whose code cells have the given display bundles as outputs, written and
    read back as nbformat does (JSON dicts come back with sorted keys)."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# t"))
    for bundles in bundles_per_cell:
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.v4.new_output("display_data", data=b) for b in bundles]
        cell.outputs.append(nbformat.v4.new_output("stream", text="noise"))
        nb.cells.append(cell)
    return nbformat.reads(nbformat.writes(nb), as_version=4)


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_collect_marks_from_an_executed_notebook():
    table = cl.claims_table([
        cl.claim("KD falls with teacher ECE", "Fig. 2", -68, -85, -28, 5, "less", unit="%"),
        cl.claim("DIST insensitive", "Fig. 2", -77, -89, -57, 5, "insensitive",
                 tolerance=30, unit="%")])
    nb = _executed(
        [hl.headline_bundle(zeta=1, alpha=hl.percent(0.5)), hl.skipped_bundle(3, "no data")],
        [hl.key_figure_bundle(PNG, "first", "kdlib-key-figure-1"),
         hl.datasets_bundle(["CIFAR-10", "CIFAR-100"])],
        [hl.headline_bundle(zeta=2), hl.skipped_bundle("Figure 4", "no  data\nat all"),
         hl.skipped_bundle(3, "no data"), hl.datasets_bundle(["CIFAR-10", "digits"]),
         hl.key_figure_bundle(PNG, "second", "kdlib-key-figure-2"), cl.verdict_bundle(table)],
    )
    # order as given (not the sorted order of the stored JSON); a later value moves last
    assert list(hl.collect_headlines(nb).items()) == [
        ("alpha", {"value": 0.5, "unit": "percent", "low": None, "high": None}), ("zeta", 2)]
    assert hl.collect_skipped(nb) == [{"table": "Table 3", "reason": "no data"},
                                      {"table": "Figure 4", "reason": "no data at all"}]
    assert hl.collect_datasets(nb) == ["CIFAR-10", "CIFAR-100", "digits"]
    key = hl.collect_key_figure(nb)
    assert key == {"anchor": "kdlib-key-figure-2", "title": "second", "png": PNG}
    (verdict,) = hl.collect_verdicts(nb)
    assert verdict["line"] == ("KD falls with teacher ECE: holds, -68.00% [-85, -28]; "
                               "DIST insensitive: does not hold, -77.00% [-89, -57]")
    assert verdict["claims"] == [
        {"claim": "KD falls with teacher ECE", "verdict": "holds",
         "text": "KD falls with teacher ECE: holds, -68.00% [-85, -28]"},
        {"claim": "DIST insensitive", "verdict": "does not hold",
         "text": "DIST insensitive: does not hold, -77.00% [-89, -57]"}]
    empty = _executed([])
    assert (hl.collect_key_figure(empty), hl.collect_verdicts(empty),
            hl.collect_skipped(empty), hl.collect_datasets(empty)) == (None, [], [], [])


def test_mark_validation():
    with pytest.raises(ValueError, match="non-empty"):
        hl.skipped_bundle(3, "  ")
    with pytest.raises(TypeError, match="table number or name"):
        hl.skipped_bundle(True, "x")
    with pytest.raises(TypeError, match="list of data set names"):
        hl.datasets_bundle("CIFAR-10")
    with pytest.raises(ValueError, match="at least one name"):
        hl.datasets_bundle([])
    with pytest.raises(TypeError, match="PNG"):
        hl.key_figure_bundle(b"GIF89a", "x")
    with pytest.raises(ValueError, match="HTML id"):
        hl.key_figure_bundle(PNG, "x", anchor="a b")
    with pytest.raises(TypeError, match="matplotlib Figure"):
        hl.key_figure("not a figure")


def test_marks_print_outside_ipython(capsys):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hl.skipped(3, "Tiny-ImageNet missing: fetch tiny-imagenet-200.zip")
    hl.datasets(["CIFAR-10"])
    fig, _ = plt.subplots()
    hl.key_figure(fig, "acc vs ECE")
    assert not plt.fignum_exists(fig.number)  # closed: the inline backend shows it once
    assert capsys.readouterr().out.splitlines() == [
        "Table 3 skipped: Tiny-ImageNet missing: fetch tiny-imagenet-200.zip",
        "Data sets: CIFAR-10", "<key figure: acc vs ECE>"]
