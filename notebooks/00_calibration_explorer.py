# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Calibration explorer
#
# **Question.** How well calibrated are our teachers, and what does the softmax temperature
# do to their calibration?
#
# **The paper's claim** (Fan et al., ICML 2024, eq. 4 and Table 6): what a student learns
# from under KL-based KD is the teacher's *tempered* distribution, so the teacher's
# calibration at the distillation temperature tau matters. Their CIFAR-100 ResNet-56 has
# ECE 12.04% at tau = 1 (over-confident), 1.79% at tau = 1.5 and 61.65% at tau = 8
# (under-confident: as tau grows every confidence falls toward 1/C while accuracy stays put).
#
# This notebook looks at a few teachers trained on the same data: the reliability diagram at
# tau = 1 (accuracy per confidence bin against the diagonal; the shaded gap is what ECE sums,
# weighted by the bin's share of samples), ECE and NLL as functions of the temperature, the
# NLL-fitted temperature (temperature scaling, Guo et al. 2017) and the metrics there.
# ECE uses 15 equal-width bins ((m-1)/M, m/M]. The fitted T is fitted on the test logits it
# is evaluated on (in hindsight); the "2-fold" column fits on one half and measures the other.

# %% tags=["parameters"]
SCALE = "default"
INTERACTIVE = True

# %%
from kdlib import presets
from kdlib.experiments import calibration_explorer as ce
from kdlib.headline import headline
from kdlib.plots import calibration as cplots

cfg = presets.get(ce.NAME, SCALE)
print(f"scale {SCALE}: data {cfg['data']}, seed {cfg['seed']}, {cfg['n_bins']} bins")
for t in cfg["teachers"]:
    print(f"  teacher {t['name']!r}: {t['arch']}, recipe {ce.make_recipe(t['recipe'], t['arch'])}")

# %% [markdown]
# ## Teachers
# Trained once and cached (`get_teacher`); the summaries go through a resumable sweep. All
# later cells recompute from the cached test logits.

# %%
summary = ce.run(cfg, SCALE, progress=False)
logits = ce.teachers_logits(cfg)
print(f"test samples: {int(summary['n_test'].iloc[0])}; "
      f"training seconds: {dict(zip(summary['name'], summary['train_seconds'].round(1)))}")
ce.summary_table(summary).transpose()

# %% [markdown]
# ## Reliability at tau = 1
# Bars: accuracy per confidence bin; dashed: perfect calibration; hatched: the gap to the
# bin's mean confidence (bars below the diagonal = over-confident). Below: samples per bin
# (log scale).

# %%
at_one = {name: 1.0 for name in logits}
at_one_bins = {name: ce.metrics_at_temperature(z, y, 1.0, cfg["n_bins"])["bins"]
               for name, (z, y) in logits.items()}
fig = cplots.reliability_grid(at_one_bins)
ce.metrics_table(logits, at_one, cfg["n_bins"])

# %% [markdown]
# ## Reliability at the fitted temperature

# %%
fitted = dict(zip(summary["name"], summary["fitted_t"]))
fitted_bins = {f"{name}, T = {t:.2f}": ce.metrics_at_temperature(*logits[name], t,
                                                                  cfg["n_bins"])["bins"]
               for name, t in fitted.items()}
fig = cplots.reliability_grid(fitted_bins)
ce.metrics_table(logits, fitted, cfg["n_bins"])

# %% [markdown]
# ## ECE and NLL against temperature
# Left: ECE on a log temperature axis (triangle: the ECE-minimizing T on the grid; dotted:
# T = 1). Right: NLL, its minimum is the fitted T (star, dashed line).

# %%
fig = cplots.temperature_curves(ce.curves(summary))
ce.summary_table(summary)[["fitted T", "NLL@1", "NLL@T", "argmin ECE T", "min ECE %",
                           "ECE@1 %", "ECE@T %", "ECE@T 2-fold %"]]

# %% [markdown]
# ## Beside the paper (Table 6, CIFAR-100 teachers)
# ECE in percent at the paper's temperatures: the paper's three CIFAR-100 teachers, then ours.
# At large tau the ECE approaches accuracy - 1/C (C = 100 there, 10 on digits).

# %%
ce.paper_ece_comparison(logits, cfg["n_bins"])

# %% [markdown]
# ## Interactive explorer
# Teacher chooser (every cached teacher of this scale, from any notebook, with its test
# accuracy), log-scale temperature slider, number of bins, equal-width / equal-mass bins: the
# reliability diagram, the readout and the dot on the ECE curve follow. *export* writes the
# current diagram (PNG) and readout (CSV) next to this notebook. Only when `INTERACTIVE` is
# true (the report runner sets it false).

# %%
if INTERACTIVE:
    from IPython.display import display

    from kdlib.widgets import CalibrationExplorer

    explorer = CalibrationExplorer.from_cache(SCALE, n_bins=cfg["n_bins"])
    display(explorer.widget())

# %% [markdown]
# ## What this shows
# How to read the figures and the summary table above (their numbers are computed in this
# run, at whatever scale it was run):
#
# * Each teacher's reliability diagram at tau = 1 places it in a calibration regime: bars
#   above the diagonal mean under-confident, below it over-confident; the table's fitted T
#   says the same in one number (T < 1 sharpens an under-confident teacher, T > 1 softens an
#   over-confident one).
# * Temperature scaling lowers every teacher's ECE, down to roughly the noise floor of the
#   test-set size; the "2-fold" column (fitted on one half, measured on the other) shows that
#   floor. Minimizing NLL is not minimizing ECE, so ECE at the fitted T can be above ECE at
#   T = 1. MCE is set by the emptiest bins (see the histograms) and says little on small test
#   sets.
# * At large T every teacher's ECE climbs toward accuracy - 1/C, because all confidences fall
#   toward 1/C while the accuracy does not change. That is the shape of the paper's Table 6
#   for its CIFAR-100 teachers, which are over-confident at tau = 1 (ECE 8.7-14%) and best
#   calibrated near tau = 1.5: the distillation temperature decides how calibrated the
#   teacher's targets are at least as much as the teacher does.
#
# The headline figures are for the teacher named below.

# %%
print(f"headline teacher: {cfg['headline_teacher']}")
headline(**ce.headline_figures(summary, cfg["headline_teacher"]))
