"""Interactive explorers (ipywidgets) built on cached results; nothing here runs a model.

    explorer = CalibrationExplorer({"resnet20": (test_logits, test_labels), ...})
    explorer.widget()          # the last expression of a notebook cell shows it

    explorer = CalibrationExplorer.from_cache("smoke")   # every cached teacher of a scale

`CalibrationExplorer.state(...)` is the pure computation behind the view (tested without a
display); `widget()` builds ipywidgets controls whose callbacks only recompute from the
cached logits and redraw a PNG into an Image widget (no frontend or ipympl needed).
`export()` (the "export" button) writes the current diagram as PNG and the readout as CSV.
"""

from __future__ import annotations

import csv
import html
import io
import re
from pathlib import Path

import numpy as np
import torch

from kdlib._validate import as_tensor, check_choice, check_int, check_positive
from kdlib.atomic import atomic_write
from kdlib.experiments.calibration_explorer import (
    BINNINGS,
    ECE_BINS,
    ece_curve,
    metrics_at_temperature,
    temperature_grid,
)

T_MIN, T_MAX = 0.25, 10.0
BINS_MIN, BINS_MAX = 5, 50


class CalibrationExplorer:
    """Reliability diagram and metrics of several teachers at any temperature.

    teachers: {name: (logits N x C, labels N)} (numpy arrays, tensors or lists), or
        {name: a function returning that pair} for teachers loaded on first use; the logits
        are kept on the CPU as float32 and never recomputed.
    accuracies: {name: test accuracy (fraction)} shown in the chooser (computed from the
        logits for teachers given as pairs). export_dir: where `export` writes (default:
        the working directory, i.e. next to the notebook).
    temperatures: the grid of the ECE-vs-temperature curves (default: 61 log-spaced values in
        [0.25, 10] plus 1.0). n_bins, binning: the initial view.

    The equal-width ECE curve of every teacher given as a pair is computed once here
    (`calibration.ece_vs_temperature`); other curves are computed on first use and cached.
    """

    def __init__(self, teachers: dict, *, accuracies: dict | None = None, export_dir=None,
                 temperatures=None, n_bins: int = ECE_BINS, binning: str = "equal_width"):
        if not isinstance(teachers, dict) or not teachers:
            raise ValueError("teachers must be a non-empty dict {name: (logits, labels)}")
        if accuracies is not None and not isinstance(accuracies, dict):
            raise TypeError(f"accuracies must be a dict {{name: fraction}}, got "
                            f"{type(accuracies).__name__}")
        self.teachers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._loaders: dict = {}
        self.accuracies: dict[str, float] = {}
        for name, pair in teachers.items():
            if not isinstance(name, str):
                raise TypeError(f"teacher names must be strings, got {name!r}")
            if callable(pair):
                self._loaders[name] = pair
            else:
                self.teachers[name] = self._check_pair(name, pair)
                z, y = self.teachers[name]
                self.accuracies[name] = float((z.argmax(1) == y).double().mean())
        for name, acc in (accuracies or {}).items():
            if name not in teachers:
                raise ValueError(f"accuracies names unknown teacher {name!r}")
            self.accuracies[name] = float(acc)
        self.names = list(teachers)
        self.export_dir = Path.cwd() if export_dir is None else Path(export_dir)
        grid = temperature_grid(T_MIN, T_MAX, 61) if temperatures is None else temperatures
        self.temperatures = np.asarray(
            [check_positive(t, "temperature") for t in np.asarray(grid).tolist()],
            dtype=np.float64)
        self.default_bins = check_int(n_bins, "n_bins", minimum=1)
        self.default_binning = check_choice(binning, "binning", BINNINGS)
        self._curves: dict[tuple[str, int, str], np.ndarray] = {}
        for name in self.teachers:
            self.curve(name, self.default_bins, "equal_width")
        self._widgets: dict = {}
        self.last_state: dict | None = None

    @staticmethod
    def _check_pair(name, pair):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"teachers[{name!r}] must be a (logits, labels) pair")
        z = as_tensor(pair[0], f"teachers[{name!r}] logits").detach().cpu().float()
        y = as_tensor(pair[1], f"teachers[{name!r}] labels").detach().cpu()
        if z.ndim != 2 or y.ndim != 1 or z.shape[0] != y.shape[0]:
            raise ValueError(
                f"teachers[{name!r}] needs logits N x C and labels N, got shapes "
                f"{tuple(z.shape)} and {tuple(y.shape)}"
            )
        return z, y.long()

    @classmethod
    def from_cache(cls, scale: str, **kwargs) -> CalibrationExplorer:
        """An explorer over every cached teacher of `scale` (`calibration_explorer.
        cached_teachers`: nothing is trained), each loaded when first chosen."""
        from kdlib.experiments.calibration_explorer import cached_teacher_logits, cached_teachers

        entries = cached_teachers(scale)
        if not entries:
            raise ValueError(f"no cached teacher of scale {scale!r}; run the notebook's "
                             "teacher cells first")
        loaders = {e["name"]: (lambda e=e: cached_teacher_logits(e)) for e in entries}
        return cls(loaders, accuracies={e["name"]: e["accuracy"] for e in entries}, **kwargs)

    def label(self, name: str) -> str:
        """The chooser's text for a teacher: its name and test accuracy."""
        acc = self.accuracies.get(name)
        return name if acc is None else f"{name} (acc {100 * acc:.1f}%)"

    # ------------------------------------------------------------------ computation

    def _check_teacher(self, teacher) -> str:
        if teacher not in self.names:
            raise ValueError(f"unknown teacher {teacher!r}; choose one of {self.names}")
        if teacher not in self.teachers:  # loaded on first use
            self.teachers[teacher] = self._check_pair(teacher, self._loaders[teacher]())
        return teacher

    def curve(self, teacher: str, n_bins: int, binning: str) -> np.ndarray:
        """ECE (fractions) on `self.temperatures` for a teacher and bin setting (cached)."""
        teacher = self._check_teacher(teacher)
        n_bins = check_int(n_bins, "n_bins", minimum=1)
        binning = check_choice(binning, "binning", BINNINGS)
        key = (teacher, n_bins, binning)
        if key not in self._curves:
            z, y = self.teachers[teacher]
            self._curves[key] = ece_curve(z, y, self.temperatures, n_bins, binning)
        return self._curves[key]

    def state(self, teacher: str, temperature: float, n_bins: int,
              binning: str = "equal_width") -> dict:
        """Everything the view shows, from the cached logits only.

        Returns {"teacher", "temperature", "n_bins", "binning", "accuracy", "ece", "mce",
        "nll", "brier" (floats; ECE/MCE fractions, NLL nats), "bins" (BinnedCalibration),
        "temperatures", "ece_curve" (the curve for this bin setting)}.
        """
        teacher = self._check_teacher(teacher)
        temperature = check_positive(temperature, "temperature")
        n_bins = check_int(n_bins, "n_bins", minimum=1)
        binning = check_choice(binning, "binning", BINNINGS)
        z, y = self.teachers[teacher]
        metrics = metrics_at_temperature(z, y, temperature, n_bins, binning)
        return {"teacher": teacher, "temperature": temperature, "n_bins": n_bins,
                "binning": binning, **metrics, "temperatures": self.temperatures,
                "ece_curve": self.curve(teacher, n_bins, binning)}

    @staticmethod
    def readout(state: dict) -> str:
        """One line of text with the state's metrics (percent for ECE, MCE, accuracy)."""
        return (f"{state['teacher']} | T = {state['temperature']:.3g} | "
                f"{state['n_bins']} {state['binning'].replace('_', '-')} bins | "
                f"acc {100 * state['accuracy']:.2f}% | ECE {100 * state['ece']:.2f}% | "
                f"MCE {100 * state['mce']:.2f}% | NLL {state['nll']:.4f} | "
                f"Brier {state['brier']:.4f}")

    @staticmethod
    def figure(state: dict):
        """The view of a state as a matplotlib Figure."""
        from kdlib.plots.calibration import explorer_figure

        annotation = (f"ECE {100 * state['ece']:5.2f}%\nMCE {100 * state['mce']:5.2f}%\n"
                      f"NLL {state['nll']:.3f}")
        return explorer_figure(
            state["bins"], state["temperatures"], state["ece_curve"],
            marker=(state["temperature"], state["ece"]),
            title=f"{state['teacher']}, T = {state['temperature']:.3g}",
            annotation=annotation)

    @classmethod
    def render_png(cls, state: dict, dpi: int = 80) -> bytes:
        """PNG bytes of `figure(state)`."""
        fig = cls.figure(state)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    # ------------------------------------------------------------------ widgets

    def widget(self):
        """Build (once) and return the ipywidgets box: teacher Dropdown, log-scale temperature
        slider, bins slider, binning toggle, readout and the rendered view."""
        if "box" in self._widgets:
            return self._widgets["box"]
        import ipywidgets as w

        controls = {
            "teacher": w.Dropdown(options=[(self.label(n), n) for n in self.names],
                                  description="teacher",
                                  layout=w.Layout(width="max-content")),
            "temperature": w.FloatLogSlider(value=1.0, base=10, min=np.log10(T_MIN),
                                            max=np.log10(T_MAX), step=0.01,
                                            description="T", readout_format=".3g",
                                            continuous_update=False),
            "n_bins": w.IntSlider(value=min(max(self.default_bins, BINS_MIN), BINS_MAX),
                                  min=BINS_MIN, max=BINS_MAX, description="bins",
                                  continuous_update=False),
            "binning": w.ToggleButtons(options=[("equal width", "equal_width"),
                                                ("equal mass", "equal_mass")],
                                       value=self.default_binning, description="binning"),
        }
        readout = w.HTML()
        image = w.Image(format="png")
        export = w.Button(description="export", icon="download",
                          tooltip="write the diagram (PNG) and the readout (CSV) here")
        exported = w.HTML()
        for control in controls.values():
            control.observe(lambda _change: self.update(), names="value")
        export.on_click(lambda _button: self._on_export())
        self._widgets = {**controls, "readout": readout, "image": image, "export": export,
                         "exported": exported}
        self._widgets["box"] = w.VBox([
            controls["teacher"],
            w.HBox([controls["binning"], controls["temperature"], controls["n_bins"]]),
            readout, w.HBox([export, exported]), image,
        ])
        self.update()
        return self._widgets["box"]

    @property
    def controls(self) -> dict:
        """The widgets by name (teacher, temperature, n_bins, binning, readout, image, export,
        exported, box); empty until widget() is called."""
        return dict(self._widgets)

    def update(self) -> dict:
        """Recompute the state from the controls' values and refresh readout and image."""
        wd = self._widgets
        state = self.state(wd["teacher"].value, wd["temperature"].value, wd["n_bins"].value,
                           wd["binning"].value)
        wd["readout"].value = f"<code>{html.escape(self.readout(state))}</code>"
        wd["image"].value = self.render_png(state)
        self.last_state = state
        return state

    # ------------------------------------------------------------------ export

    CSV_FIELDS = ("teacher", "temperature", "n_bins", "binning", "accuracy", "ece", "mce",
                  "nll", "brier")

    @classmethod
    def export_stem(cls, state: dict) -> str:
        """File stem of an export: calibration_<teacher>_T<temperature>_<bins><binning>."""
        teacher = re.sub(r"[^A-Za-z0-9]+", "-", state["teacher"]).strip("-") or "teacher"
        return (f"calibration_{teacher}_T{state['temperature']:.3g}_"
                f"{state['n_bins']}{state['binning'].replace('_', '-')}")

    def export(self, state: dict | None = None, directory=None) -> tuple[Path, Path]:
        """Write `state` (default: the current view) as <stem>.png (the diagram, 100 dpi) and
        <stem>.csv (a header and one row: CSV_FIELDS; ECE/MCE/accuracy fractions, NLL nats)
        into `directory` (default: export_dir). Returns (png path, csv path)."""
        state = self.last_state if state is None else state
        if not isinstance(state, dict) or not set(self.CSV_FIELDS) <= set(state):
            raise ValueError("nothing to export: pass a state() or build the widget first")
        folder = Path(self.export_dir if directory is None else directory)
        if not folder.is_dir():
            raise ValueError(f"export folder {folder} does not exist")
        stem = self.export_stem(state)
        png = atomic_write(folder / f"{stem}.png", self.render_png(state, dpi=100))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.CSV_FIELDS)
        writer.writerow([repr(state[k]) if isinstance(state[k], float) else state[k]
                         for k in self.CSV_FIELDS])
        return png, atomic_write(folder / f"{stem}.csv", buf.getvalue())

    def _on_export(self) -> None:
        try:
            png, table = self.export()
            text = f"wrote {png.name} and {table.name}"
        except (OSError, ValueError) as err:
            text = f"export failed: {err}"
        self._widgets["exported"].value = html.escape(text)


class SweepExplorer:
    """The temperature sweep (notebook 02) at one (pair, loss, tau), from stored results only.

    frame: one row per student, as `temperature_sweep.students_frame` gives it (columns pair,
        loss, temperature, seed, accuracy, teacher_ece_at_tau; fractions). Nothing is trained:
        every view is a lookup and a mean over seeds.
    """

    COLUMNS = ("pair", "loss", "temperature", "seed", "accuracy", "teacher_ece_at_tau")

    def __init__(self, frame):
        import pandas as pd

        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
        missing = [c for c in self.COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks columns {missing}; it needs {list(self.COLUMNS)}")
        if frame.empty:
            raise ValueError("frame is empty: the sweep store holds no finished cell")
        self.frame = frame[list(self.COLUMNS)].copy()
        self.pairs = list(dict.fromkeys(self.frame["pair"]))
        self.means = (self.frame.groupby(["pair", "loss", "temperature"])
                      .agg(accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
                           n_seeds=("seed", "nunique"),
                           teacher_ece=("teacher_ece_at_tau", "mean"))
                      .reset_index())
        self._widgets: dict = {}
        self.last_state: dict | None = None

    @classmethod
    def from_store(cls, store) -> SweepExplorer:
        """From a temperature-sweep store (runs/<scale>/temperature_sweep.sqlite), read only."""
        from kdlib import sweep
        from kdlib.experiments import temperature_sweep as ts

        if not Path(store).is_file():
            raise ValueError(f"no sweep store at {store}; run notebook 02 first")
        return cls(ts.students_frame(sweep.load(store, namespace=ts.NAME)))

    def losses(self, pair: str) -> list[str]:
        return list(dict.fromkeys(self.frame.loc[self.frame["pair"] == pair, "loss"]))

    def temperatures(self, pair: str) -> list[float]:
        return sorted(set(self.frame.loc[self.frame["pair"] == pair, "temperature"]))

    def state(self, pair: str, loss: str, temperature: float) -> dict:
        """{"pair", "loss", "temperature", "teacher_ece" (seed mean, fraction), "accuracy"
        (seed mean), "accuracy_std" (std over seeds, NaN for one seed), "n_seeds",
        "points" (the seed means of this pair, both losses: DataFrame for the scatter)}."""
        if pair not in self.pairs:
            raise ValueError(f"unknown pair {pair!r}; choose one of {self.pairs}")
        loss = check_choice(loss, "loss", tuple(self.losses(pair)))
        temperature = check_positive(temperature, "temperature")
        temps = self.temperatures(pair)
        if not any(np.isclose(temperature, t) for t in temps):
            raise ValueError(f"temperature {temperature} was not swept for {pair!r}; "
                             f"have {temps}")
        points = self.means[self.means["pair"] == pair]
        row = points[(points["loss"] == loss) & np.isclose(points["temperature"], temperature)]
        row = row.iloc[0]
        return {"pair": pair, "loss": loss, "temperature": float(row["temperature"]),
                "teacher_ece": float(row["teacher_ece"]), "accuracy": float(row["accuracy"]),
                "accuracy_std": float(row["accuracy_std"]), "n_seeds": int(row["n_seeds"]),
                "points": points.reset_index(drop=True)}

    @staticmethod
    def readout(state: dict) -> str:
        """One line: teacher ECE at tau and student accuracy (seed mean +- std, percent)."""
        std = state["accuracy_std"]
        spread = f" +- {100 * std:.2f}" if np.isfinite(std) else ""
        return (f"{state['pair']} | {state['loss'].upper()} | tau = {state['temperature']:g} | "
                f"teacher ECE {100 * state['teacher_ece']:.2f}% | student acc "
                f"{100 * state['accuracy']:.2f}{spread}% ({state['n_seeds']} seeds)")

    @staticmethod
    def render_png(state: dict, dpi: int = 80) -> bytes:
        """The Figure 6 scatter of the pair (seed means, both losses) with the current point
        ringed and its seed spread as an error bar; PNG bytes."""
        from matplotlib.figure import Figure  # no pyplot: nothing global changes

        fig = Figure(figsize=(5.5, 3.8))
        ax = fig.subplots()
        colors = {"kd": "tab:red", "dist": "tab:blue"}
        for loss, g in state["points"].groupby("loss", sort=False):
            ax.scatter(100 * g["teacher_ece"], 100 * g["accuracy"], label=loss.upper(),
                       color=colors.get(loss, "k"), alpha=0.5 if loss != state["loss"] else 1)
        std = state["accuracy_std"]
        ax.errorbar([100 * state["teacher_ece"]], [100 * state["accuracy"]],
                    yerr=[100 * std] if np.isfinite(std) else None, fmt="o", ms=12,
                    mfc="none", mec="k", ecolor="k", capsize=4,
                    label=f"tau = {state['temperature']:g}")
        ax.set_xlabel("teacher ECE at tau (%)")
        ax.set_ylabel("student test accuracy (%)")
        ax.set_title(state["pair"], fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        return buf.getvalue()

    def widget(self):
        """Build (once) and return the box: pair Dropdown, loss toggle, tau slider over the
        pair's swept temperatures, readout and the scatter."""
        if "box" in self._widgets:
            return self._widgets["box"]
        import ipywidgets as w

        pair = self.pairs[0]
        controls = {
            "pair": w.Dropdown(options=self.pairs, value=pair, description="pair",
                               layout=w.Layout(width="max-content")),
            "loss": w.ToggleButtons(options=self.losses(pair), description="loss"),
            "temperature": w.SelectionSlider(options=self.temperatures(pair),
                                             description="tau", continuous_update=False),
        }
        readout, image = w.HTML(), w.Image(format="png")
        self._widgets = {**controls, "readout": readout, "image": image}
        controls["pair"].observe(lambda _c: self._pair_changed(), names="value")
        for name in ("loss", "temperature"):
            controls[name].observe(lambda _c: self.update(), names="value")
        self._widgets["box"] = w.VBox([controls["pair"],
                                       w.HBox([controls["loss"], controls["temperature"]]),
                                       readout, image])
        self.update()
        return self._widgets["box"]

    @property
    def controls(self) -> dict:
        """The widgets by name (pair, loss, temperature, readout, image, box)."""
        return dict(self._widgets)

    def _pair_changed(self) -> None:
        wd = self._widgets
        pair = wd["pair"].value
        self._updating = True
        try:
            temps, losses = self.temperatures(pair), self.losses(pair)
            t_old, loss_old = wd["temperature"].value, wd["loss"].value
            wd["loss"].options = losses
            wd["loss"].value = loss_old if loss_old in losses else losses[0]
            wd["temperature"].options = temps
            wd["temperature"].value = min(temps, key=lambda t: abs(np.log(t / t_old)))
        finally:
            self._updating = False
        self.update()

    def update(self) -> dict | None:
        """Recompute from the controls and refresh readout and image."""
        if getattr(self, "_updating", False):
            return None
        wd = self._widgets
        state = self.state(wd["pair"].value, wd["loss"].value, wd["temperature"].value)
        wd["readout"].value = f"<code>{html.escape(self.readout(state))}</code>"
        wd["image"].value = self.render_png(state)
        self.last_state = state
        return state
