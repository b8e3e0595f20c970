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
# # 01 · An optimally calibrated teacher: the exact GMM posterior (paper Table 1)
#
# **Question.** Does a student learn better from a perfectly calibrated teacher than from
# one-hot labels?
#
# **The paper's claim** (Fan et al., ICML 2024, section 3.2, Table 1). On a 2-D Gaussian
# mixture the exact class posterior p(c|x) is a teacher with optimal calibration. The same
# model trained on it (soft cross-entropy = KL to the posterior up to a constant) generalizes
# better and more stably than when trained on one-hot labels: 10 classes 89.82% vs 89.13%
# (variance printed as 8% vs 179%, i.e. 0.08 vs 1.79 %^2), 100 classes 94.87% vs 94.00%
# (3% vs 180%), over 5 runs of 200 epochs at lr 0.03, 10,000 training and 3,000 test samples.
#
# **Here.** The presets `gmm10`/`gmm100` (uniform priors, full covariances, Bayes accuracy
# tuned near the paper's accuracies). An MLP (2 -> hidden -> C, ReLU; widths in the preset)
# trained with SGD (momentum 0.9, weight decay 5e-4, constant lr 0.03 as the paper states no
# schedule, batch 128). Inputs are standardized with the training split's mean and std (an
# affine map that leaves the task and its posterior unchanged; the paper does not say). On
# the raw inputs (coordinates up to about +-13) this lr and momentum leave the 100-class
# runs unstable at the last epoch (single runs of either arm ended far below the others);
# `standardize_inputs` in the preset switches it off. Run r of every arm
# starts from the same initialization and sees the same batch order (seed r), so arms are
# compared on paired runs. All runs and arms of a task train at once
# (`kdlib.stacked_mlp.train_mlps_stacked`, exact per-run equivalent of `kdlib.train.train`).
# Accuracies are from the last epoch; the Bayes accuracy on the same test points is the
# ceiling. The paper's "variance" row is the population variance of the five accuracies in
# %^2, printed x100 with a % sign.
#
# **Beyond the paper.** Tempered posteriors softmax(log p / tau) as targets: tau < 1
# sharpens (over-confident), tau > 1 softens (under-confident), tau -> 0 is the one-hot of
# the Bayes decision. Every tempered target keeps the Bayes argmax, so only its calibration
# (ECE against the training labels, 15 bins) changes, which isolates how the teacher's
# calibration moves the student on a task with a known posterior.

#
# **Recipe.** The paper's own for this table, where it states one: 200 epochs at lr 0.03,
# 10,000 / 3,000 points, 5 runs (paper scale); momentum 0.9, weight decay 5e-4, batch 128
# and the constant lr are kdlib's choices, as the paper states none. The default scale
# shortens training to 60 epochs (same data sizes and runs) to run on a laptop CPU.
# `SELECT = "table=1"` runs Table 1 without the tempered extension, `"pair=..."` is not
# used here (the tasks are a plain list), `"seed=..."` neither (runs are counted).

# %% tags=["parameters"]
SCALE = "default"
INTERACTIVE = True
SELECT = ""        # e.g. "table=1" (kdlib.selection; "tempered" = the extension)
DRY_RUN = False    # paper presets with every training cut to a few steps

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from kdlib import claims as cl
from kdlib import presets
from kdlib.experiments import gmm_optimal_teacher as exp
from kdlib.gmm import gmm_preset
from kdlib.headline import datasets, headline, key_figure, skipped
from kdlib.outputs import save_frame, save_records
from kdlib.paper import paper_table
from kdlib.plots import gmm as gmm_plots

pd.set_option("display.precision", 3)
cfg = presets.get(exp.NAME, SCALE, select=SELECT, dry_run=DRY_RUN)
skips = exp.skipped_tables(cfg)
for table, reason in skips:
    skipped(table, reason)
RUN = bool(cfg["tasks"])
TEMPERED = RUN and cfg["temperatures"] is not None
print(f"scale {SCALE}{' (dry run)' if DRY_RUN else ''}: tasks {cfg['tasks']}, "
      f"{cfg['n_train']} train / {cfg['n_test']} test, {cfg['runs']} runs, MLP hidden "
      f"{cfg['hidden']}, recipe {cfg['recipe']}, tempered arms tau = {cfg['temperatures']}, "
      f"standardized inputs: {cfg['standardize_inputs']}, torch threads "
      f"{cfg['torch_threads']}, workers {cfg['workers']}")
if RUN:
    datasets(cfg["tasks"])

# %% [markdown]
# ## Training
# One sweep cell per (task, arm group): "table1" = one-hot + posterior, "tempered" = the
# tau arms. Finished cells are loaded from the store, not retrained.

# %%
if RUN:
    results = exp.run_sweep(cfg, SCALE, progress=False)
    runs = exp.runs_frame(results)
    save_frame("runs", runs)
    save_records("runs", runs.to_dict("records"))
    paper = paper_table("table1")
    cells = pd.DataFrame([{"task": r["task"], "group": r["group"], "members": r["members"],
                           "train_seconds": r["train_seconds"]} for r in results])
    display(cells)

# %% [markdown]
# ## Table 1 beside the paper
# Test accuracy (%) of each run, the mean and the population variance (%^2). The paper's
# columns are its published numbers (its own GMM, which we do not have: compare the
# pattern, not the digits).

# %%
if RUN:
    aligned = exp.table1_aligned(runs)
    save_frame("table1_aligned", aligned)
    display(aligned.round(3))
    display(exp.table1_frame(runs, paper).round(3))
    summary = exp.arm_summary(runs)
    save_frame("arm_summary", summary)
    bayes = summary.groupby("classes")["bayes_accuracy_pct"].first()
    print("Bayes accuracy on our test sets (%):", bayes.round(2).to_dict())
    table1_summary = summary[summary["arm"].isin([exp.ONE_HOT, exp.POSTERIOR])]
    display(table1_summary[["classes", "arm", "accuracy_mean", "accuracy_var", "accuracy_std",
                            "accuracy_min", "accuracy_max", "gap_to_bayes", "student_ece_pct",
                            "bayes_agreement_pct"]].round(3))
    print("Posterior minus one-hot, paired by run (percentage points):")
    paired = exp.paired_difference(runs)
    save_frame("paired_difference", paired)
    display(paired.round(2))

# %%
if RUN:
    fig = gmm_plots.run_accuracies(runs, paper, bayes.to_dict())
    key_figure(fig, "Table 1: test accuracy per run, one-hot vs posterior")

# %% [markdown]
# ## Decision regions
# The input plane coloured by each model's argmax (run 1 of each arm), with the Gaussians'
# 2-sigma ellipses on top; right: the Bayes rule. The titles give the share of the plotted
# grid where a student decides as the Bayes rule does; the numbers below also give the
# share of test points.

# %%
for rec in results if RUN else []:
    if rec["group"] != "table1":
        continue
    g = exp.decision_grids(rec, cfg["grid_resolution"])
    task = gmm_preset(rec["task"])
    fig = gmm_plots.decision_regions(g["grids"], g["extent"], gmm=task,
                                     agreement=g["agreement"],
                                     title=f"{rec['task']}: decision regions")
    display(fig)
    plt.close(fig)
    test_agree = {r["arm"]: r["bayes_agreement"] for r in rec["per_run"] if r["run"] == 0}
    print(f"{rec['task']}: grid agreement with the Bayes rule "
          f"{ {k: round(100 * v, 2) for k, v in g['agreement'].items()} } %; "
          f"test-point agreement (run 1) { {k: round(100 * v, 2) for k, v in test_agree.items()} } %")

# %% [markdown]
# ## Beyond the paper: tempered posteriors
# Each target's ECE on the training set against the labels (posterior: ~0 up to sampling
# noise; tau -> 0: exactly 1 - its accuracy), its mean confidence, and the student's test
# accuracy (mean, population variance and std over runs). Spearman over the arms' run means
# (one-hot excluded: the labels' ECE against themselves is 0 by construction and says
# nothing), with a bootstrap interval over runs; the same against tau tells calibration
# (V-shaped in tau, lowest at tau = 1) apart from sharpness (monotone in tau).

# %%
if TEMPERED:
    tempered = summary[summary["arm"] != exp.ONE_HOT].sort_values(["classes", "temperature"])
    display(tempered[["classes", "arm", "temperature", "target_ece_pct",
                      "target_confidence_pct", "accuracy_mean", "accuracy_var",
                      "accuracy_std", "gap_to_bayes", "student_ece_pct"]].round(3))
    corr = exp.calibration_correlations(runs, n_boot=cfg["n_boot"])
    save_frame("calibration_correlations", corr)
    display(corr.round(3))
    fig = gmm_plots.accuracy_vs_target_ece(summary)
    display(fig)
    plt.close(fig)

# %% [markdown]
# ## Claims table: the paper's claims, tested on this run
# Computed by `gmm_optimal_teacher.claims` from the runs above, per task: the posterior
# minus the one-hot student's accuracy, paired by run (same initialization and batch
# order; points, Student-t 95% interval, `n` = runs), and the Spearman (percent) of target
# ECE vs student accuracy over the posterior arms (interval over runs). Every tempered
# target keeps the Bayes decisions and changes only its calibration, so the second row asks
# whether calibration itself moves the student; with few arms it is weak evidence.
# The verdict rule (`kdlib.claims.verdict`): a claim *holds* when the whole interval lies
# on the claimed side of 0, *does not hold* when it lies wholly on the other side, and is
# *inconclusive* when it contains 0 or rests on fewer than 3 independent points (`n`).

# %%
if RUN:
    headline(**exp.headline_figures(runs))
    claims_table = exp.claims(runs, n_boot=cfg["n_boot"])
else:
    headline("Table 1", "skipped")
    claims_table = cl.claims_table([])
save_frame("claims", claims_table)
cl.show(claims_table)
