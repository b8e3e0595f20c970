import csv
import math

import numpy as np
import pytest
import torch

from kdlib import calibration
from kdlib.widgets import CalibrationExplorer


def teachers():
    g = torch.Generator().manual_seed(0)
    z = 4.0 * torch.randn(120, 4, generator=g)
    y = torch.where(torch.rand(120, generator=g) < 0.8, z.argmax(1),
                    torch.randint(0, 4, (120,), generator=g))
    return {"sharp": (z, y), "soft": (0.3 * z, y)}


TEMPS = [0.5, 1.0, 2.0, 4.0]


def test_state_is_pure_and_matches_calibration():
    ex = CalibrationExplorer(teachers(), temperatures=TEMPS, n_bins=10)
    z, y = ex.teachers["sharp"]
    s = ex.state("sharp", 2.0, 10, "equal_width")
    p = calibration.tempered_softmax(z, 2.0)
    assert s["ece"] == pytest.approx(calibration.ece(p, y, 10))
    assert s["mce"] == pytest.approx(calibration.mce(p, y, 10))
    assert s["nll"] == pytest.approx(calibration.nll(p, y))
    assert s["brier"] == pytest.approx(calibration.brier_score(p, y))
    assert s["accuracy"] == pytest.approx(float((z.argmax(1) == y).float().mean()))
    assert s["bins"].n_bins == 10 and s["bins"].count.sum() == 120
    # the marker lies on the curve at grid temperatures
    assert s["ece_curve"][TEMPS.index(2.0)] == pytest.approx(s["ece"])
    m = ex.state("sharp", 2.0, 7, "equal_mass")
    assert m["ece"] == pytest.approx(calibration.adaptive_ece(p, y, 7))
    assert m["ece_curve"][2] == pytest.approx(m["ece"])
    assert sorted(m["bins"].count.tolist()) == [17] * 6 + [18]
    # "soft" = sharp logits * 0.3: at T = 0.3 it is the sharp teacher at T = 1
    a, b = ex.state("soft", 0.3, 10), ex.state("sharp", 1.0, 10)
    assert a["ece"] == pytest.approx(b["ece"], abs=1e-6)
    assert ex.state("sharp", 2.0, 10)["ece"] == s["ece"]


def test_curves_are_computed_once_and_cached():
    ex = CalibrationExplorer(teachers(), temperatures=TEMPS, n_bins=15)
    assert set(ex._curves) == {("sharp", 15, "equal_width"), ("soft", 15, "equal_width")}
    z, y = ex.teachers["soft"]
    np.testing.assert_allclose(ex.curve("soft", 15, "equal_width"),
                               calibration.ece_vs_temperature(z, y, TEMPS, 15))
    first = ex.curve("soft", 20, "equal_mass")
    assert ex.curve("soft", 20, "equal_mass") is first


def test_readout_text():
    ex = CalibrationExplorer(teachers(), temperatures=TEMPS)
    s = {"teacher": "t<1>", "temperature": 1.5, "n_bins": 15, "binning": "equal_mass",
         "accuracy": 0.9, "ece": 0.0123, "mce": 0.2, "nll": 0.31234, "brier": 0.1}
    assert ex.readout(s) == ("t<1> | T = 1.5 | 15 equal-mass bins | acc 90.00% | "
                             "ECE 1.23% | MCE 20.00% | NLL 0.3123 | Brier 0.1000")


def test_widget_callbacks_update_readout_and_image():
    ex = CalibrationExplorer(teachers(), temperatures=TEMPS, n_bins=15)
    box = ex.widget()
    assert ex.widget() is box  # built once
    w = ex.controls
    acc = {n: float((z.argmax(1) == y).float().mean()) for n, (z, y) in teachers().items()}
    assert list(w["teacher"].options) == [
        (f"{n} (acc {100 * acc[n]:.1f}%)", n) for n in ("sharp", "soft")]
    assert (w["temperature"].min, w["temperature"].max) == pytest.approx(
        (math.log10(0.25), 1.0))
    assert (w["n_bins"].min, w["n_bins"].max, w["n_bins"].value) == (5, 50, 15)
    start = w["readout"].value
    assert "sharp" in start and "T = 1 " in start and w["image"].value[:4] == b"\x89PNG"
    ece_t1 = ex.last_state["ece"]
    first_png = w["image"].value

    w["temperature"].value = 2.0
    assert w["image"].value != first_png and w["image"].value[:4] == b"\x89PNG"
    assert ex.last_state["temperature"] == pytest.approx(2.0)
    assert "T = 2 " in w["readout"].value and w["readout"].value != start
    assert ex.last_state["ece"] != ece_t1

    w["n_bins"].value = 7
    w["binning"].value = "equal_mass"
    z, y = ex.teachers["sharp"]
    expected = calibration.adaptive_ece(calibration.tempered_softmax(z, 2.0), y, 7)
    assert ex.last_state["ece"] == pytest.approx(expected)
    assert f"ECE {100 * expected:.2f}%" in w["readout"].value
    assert "7 equal-mass bins" in w["readout"].value

    w["teacher"].value = "soft"
    assert ex.last_state["teacher"] == "soft" and "soft" in w["readout"].value


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty dict"):
        CalibrationExplorer({})
    with pytest.raises(TypeError, match="pair"):
        CalibrationExplorer({"a": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="shapes"):
        CalibrationExplorer({"a": (torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))})
    ex = CalibrationExplorer(teachers(), temperatures=TEMPS)
    with pytest.raises(ValueError, match="unknown teacher"):
        ex.state("nope", 1.0, 15)
    with pytest.raises(ValueError, match="temperature"):
        ex.state("sharp", -1.0, 15)
    with pytest.raises(ValueError, match="binning"):
        ex.state("sharp", 1.0, 15, "quantile")


def test_lazy_teachers_load_on_first_use_with_given_accuracy():
    calls = []
    pair = teachers()["soft"]

    def load():
        calls.append(1)
        return pair

    ex = CalibrationExplorer({"sharp": teachers()["sharp"], "lazy": load},
                             accuracies={"lazy": 0.5}, temperatures=TEMPS)
    assert calls == [] and ex.label("lazy") == "lazy (acc 50.0%)"
    s = ex.state("lazy", 2.0, 10)
    assert calls == [1]
    p = calibration.tempered_softmax(pair[0], 2.0)
    assert s["ece"] == pytest.approx(calibration.ece(p, pair[1], 10))
    ex.state("lazy", 1.0, 10)
    assert calls == [1]  # loaded once
    with pytest.raises(ValueError, match="unknown teacher"):
        CalibrationExplorer({"a": teachers()["sharp"]}, accuracies={"b": 0.1})


def test_export_writes_the_current_diagram_and_readout(tmp_path):
    ex = CalibrationExplorer(teachers(), temperatures=TEMPS, export_dir=tmp_path)
    with pytest.raises(ValueError, match="nothing to export"):
        ex.export()
    ex.widget()
    w = ex.controls
    w["temperature"].value = 2.0
    w["binning"].value = "equal_mass"
    w["export"].click()
    assert w["exported"].value.startswith("wrote calibration_sharp_T2_15equal-mass.png")
    png = tmp_path / "calibration_sharp_T2_15equal-mass.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    rows = list(csv.DictReader(open(tmp_path / "calibration_sharp_T2_15equal-mass.csv")))
    assert len(rows) == 1
    z, y = ex.teachers["sharp"]
    p = calibration.tempered_softmax(z, 2.0)
    assert float(rows[0]["ece"]) == ex.last_state["ece"]  # written exactly (repr)
    assert float(rows[0]["ece"]) == pytest.approx(calibration.adaptive_ece(p, y, 15), rel=1e-12)
    assert float(rows[0]["nll"]) == pytest.approx(calibration.nll(p, y), rel=1e-12)
    assert (rows[0]["teacher"], rows[0]["binning"], rows[0]["n_bins"]) == (
        "sharp", "equal_mass", "15")
    ex.export_dir = tmp_path / "missing"
    w["export"].click()
    assert w["exported"].value.startswith("export failed") and "does not exist" in (
        w["exported"].value)


# ----------------------------------------------------------------- sweep explorer


def fake_students(name, seed, temperatures):
    """A stored sweep cell in the shape of temperature_sweep.run_students (no training):
    teacher ECE = tau / 10, KD accuracy 0.9 - tau/100 + seed/1000, DIST 0.8 + seed/1000."""
    rows = [{"loss": loss, "temperature": t, "teacher_ece_at_tau": t / 10,
             "accuracy": (0.9 - t / 100 if loss == "kd" else 0.8) + seed / 1000, "ece": 0.1}
            for loss in ("kd", "dist") for t in temperatures]
    return {"teacher_metrics": {"accuracy": 0.95}, "teacher_params": 10, "student_params": 5,
            "n_test": 100, "students": rows}


def small_store(path):
    from kdlib import sweep
    from kdlib.experiments import temperature_sweep as ts

    grid = [{"name": n, "seed": s, "temperatures": temps}
            for n, temps in (("a->b", [1.0, 2.0, 4.0]), ("c->d", [1.0, 8.0]))
            for s in (0, 1, 2)]
    grid = [{**c, "teacher": "t", "student": "s"} for c in grid]
    sweep.run(lambda name, seed, temperatures, teacher, student: fake_students(
        name, seed, temperatures), grid, path, progress=False, namespace=ts.NAME)
    return path


def test_sweep_explorer_reads_the_store_and_follows_the_controls(tmp_path):
    from kdlib.widgets import SweepExplorer

    ex = SweepExplorer.from_store(small_store(tmp_path / "sweep.sqlite"))
    assert ex.pairs == ["a->b", "c->d"] and ex.temperatures("a->b") == [1.0, 2.0, 4.0]
    s = ex.state("a->b", "kd", 2.0)
    assert s["teacher_ece"] == pytest.approx(0.2)
    assert s["accuracy"] == pytest.approx(0.9 - 0.02 + 0.001)  # seeds 0, 1, 2
    assert s["accuracy_std"] == pytest.approx(0.001) and s["n_seeds"] == 3
    assert len(s["points"]) == 6  # 3 temperatures x 2 losses
    assert ex.readout(s) == ("a->b | KD | tau = 2 | teacher ECE 20.00% | student acc "
                             "88.10 +- 0.10% (3 seeds)")
    box = ex.widget()
    w = ex.controls
    assert box is ex.widget() and w["image"].value[:4] == b"\x89PNG"
    assert list(w["temperature"].options) == [1.0, 2.0, 4.0]
    first = w["image"].value
    w["temperature"].value = 4.0
    assert ex.last_state["teacher_ece"] == pytest.approx(0.4)
    assert "tau = 4 " in w["readout"].value and w["image"].value != first
    w["loss"].value = "dist"
    assert ex.last_state["accuracy"] == pytest.approx(0.801)
    w["pair"].value = "c->d"  # tau moves to the nearest swept value (log scale): 8
    assert list(w["temperature"].options) == [1.0, 8.0]
    assert (ex.last_state["pair"], ex.last_state["temperature"]) == ("c->d", 8.0)
    assert ex.last_state["loss"] == "dist" and "c-&gt;d | DIST" in w["readout"].value
    with pytest.raises(ValueError, match="was not swept"):
        ex.state("a->b", "kd", 3.0)
    with pytest.raises(ValueError, match="unknown pair"):
        ex.state("x", "kd", 1.0)
    with pytest.raises(ValueError, match="no sweep store"):
        SweepExplorer.from_store(tmp_path / "none.sqlite")
    with pytest.raises(ValueError, match="lacks columns"):
        import pandas as pd
        SweepExplorer(pd.DataFrame({"pair": ["a"]}))
