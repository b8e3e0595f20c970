"""kdlib.outputs: result frames (CSV) and records (JSONL) into KDLIB_RESULTS_DIR."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kdlib import outputs


@pytest.fixture()
def results(tmp_path, monkeypatch):
    folder = tmp_path / "nb.results"
    monkeypatch.setenv(outputs.RESULTS_ENV, str(folder))
    return folder


def test_save_frame_writes_csv_keeping_a_named_index(results):
    frame = pd.DataFrame({"loss": ["kd", "kd", "dist"], "seed": [0, 1, 0],
                          "accuracy_pct": [90.5, 91.0, 89.25]})
    assert outputs.save_frame("sweep", frame) == results / "sweep.csv"
    assert (results / "sweep.csv").read_text() == (
        "loss,seed,accuracy_pct\nkd,0,90.5\nkd,1,91.0\ndist,0,89.25\n")
    means = frame.groupby("loss")[["accuracy_pct"]].mean()
    outputs.save_frame("means", means)
    assert (results / "means.csv").read_text() == "loss,accuracy_pct\ndist,89.25\nkd,90.75\n"
    assert outputs.list_results(results) == ["means.csv", "sweep.csv"]


def test_save_records_writes_one_json_object_a_line(results):
    records = [{"seed": np.int64(0), "acc": np.float32(0.5), "ece": float("nan"),
                "logits": torch.tensor([1.0, 2.0]), "tag": "kd", "ok": True},
               {"seed": 1, "nested": {"t": [1, 2.5]}}]
    path = outputs.save_records("runs", records)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"seed": 0, "acc": 0.5, "ece": None, "logits": [1.0, 2.0], "tag": "kd", "ok": True},
        {"seed": 1, "nested": {"t": [1, 2.5]}}]
    outputs.save_records("runs", [])  # replaced whole
    assert path.read_text() == ""


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(outputs.RESULTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert outputs.save_frame("t", pd.DataFrame({"a": [1]})) is None
    assert outputs.save_records("r", [{"a": 1}]) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: outputs.save_frame("../x", pd.DataFrame()), ValueError, "letters, digits"),
    (lambda: outputs.save_frame("x.csv", pd.DataFrame()), ValueError, "no extension"),
    (lambda: outputs.save_frame("", pd.DataFrame()), ValueError, "letters, digits"),
    (lambda: outputs.save_frame(3, pd.DataFrame()), TypeError, "must be a string"),
    (lambda: outputs.save_frame("x", pd.Series([1])), TypeError, "to_frame"),
    (lambda: outputs.save_records("x", {"a": 1}), TypeError, "list of dicts"),
    (lambda: outputs.save_records("x", [1]), TypeError, r"records\[0\] must be a dict"),
    (lambda: outputs.save_records("x", [{1: 2}]), TypeError, "keys must be strings"),
    (lambda: outputs.save_records("x", [{"a": object()}]), TypeError, "JSON data"),
])
def test_validation(results, call, error, match):
    with pytest.raises(error, match=match):
        call()
    assert not results.exists() or list(results.iterdir()) == []
