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
# # 06 · Feature-based KD (FitNet) and the teacher's calibration
#
# **Question.** When the student also matches a middle feature map of the teacher (FitNet
# hints), does its accuracy still follow the calibration of the teacher's tempered output?
#
# **The paper's claim** (Fan et al., ICML 2024, section 3.3 and appendix A.1, Figure 7;
# CIFAR-100): "for feature-based KD methods, teacher's calibration is also correlated to KD
# performance", i.e. FitNet behaves like vanilla KD, whose accuracy falls as the teacher's
# ECE at tau rises (Table 6: Spearman of teacher ECE vs KD accuracy -91.82%, -76.36%,
# -99.10% for three teachers), while the ranking-based DIST is insensitive (0.46%, 1.82%,
# -50.00%). Figure 7 prints no numbers and its pairs are not named in the text.
#
# **What we do.** FitNet as in `kdlib.distillers.FitNet`: KD on the outputs at tau plus
# `hint_weight` x MSE between the student's middle stage (through a learned 1x1-conv
# regressor) and the teacher's; alpha = 1 (no cross-entropy), as in the paper. Only the
# output term sees tau, so sweeping tau changes how calibrated the targets are while the
# hint stays the same. KD and DIST students at the same temperatures and seeds (trained
# together, stacked) are the comparison. Every student of a seed starts from the same
# initialization and sees the same batches.

# %% tags=["parameters"]
SCALE = "default"
INTERACTIVE = True

# %%
import pandas as pd

from kdlib import presets, report
from kdlib.experiments import feature_kd as fk
from kdlib.plots import features as fplots
from kdlib.recipe import recipe_from_spec

pd.set_option("display.precision", 2)
cfg = presets.get(fk.NAME, SCALE)
print(f"scale {SCALE}: data {cfg['data']}")
print(f"teacher {cfg['teacher']} (recipe {recipe_from_spec(cfg['teacher_recipe'])})")
print(f"student {cfg['student']} (recipe {recipe_from_spec(cfg['student_recipe'])})")
print(f"FitNet hint on stage {cfg['hint_stage']}, weight {cfg['hint_weight']}; "
      f"temperatures {cfg['temperatures']}; seeds {cfg['seeds']}; "
      f"compared with {cfg['compare_losses']}")

# %% [markdown]
# ## Results
# FitNet students are trained one by one (their regressors differ), KD/DIST stacked per
# seed; everything is stored in `runs/<scale>/feature_kd.sqlite`, so a re-run only reads.
# Table: the teacher's test ECE at tau and each loss's student test accuracy, percent, mean
# and standard deviation over seeds (last epoch; no selection on the test set).

# %%
df = fk.run(cfg, SCALE, progress=False)
print(f"teacher test accuracy {100 * df['teacher_accuracy'].iloc[0]:.2f}%; "
      f"{len(df)} students")
table = fk.accuracy_table(df)
table

# %%
fig = fplots.accuracy_vs_teacher_ece(df)

# %% [markdown]
# ## Correlation of teacher ECE and student accuracy
# Spearman rank correlation (percent, as the paper prints) between the teacher's ECE at
# tau and the seed-averaged accuracy across temperatures, with a 95% bootstrap interval
# over seeds; then the same within each seed. With 4 temperatures the only possible values
# are multiples of 20%. Below: the paper's Table 6/9 values for KD and DIST (no FitNet
# numbers are printed).

# %%
corr = fk.correlation_table(df, n_boot=cfg["n_boot"])
corr

# %%
fk.per_seed_spearman(df)

# %%
fk.paper_correlations()

# %% [markdown]
# ## What this shows
#
# At default scale (digits, ResNet20 -> ResNet8, 15-epoch students, 3 seeds; the numbers
# when this was written) the result does **not** reproduce the claim. The teacher's ECE at
# tau climbs from 0.7% (tau = 1) to 63% (tau = 8), yet FitNet's accuracy stays within
# 0.7 points (97.6-98.3%, seed std ~0.3-0.5) with no trend: Spearman 0% (95% interval
# -40% to 80%); vanilla KD is just as flat (+20%, -40% to 40%). DIST is the loss that moves:
# 96.6% at tau = 8 against 97.9-99.0% elsewhere (Spearman -80%, -100% to -40%). The
# paper's own Table 6 shows DIST at its worst at tau = 8 too (66.97% vs ~68.4-68.9% for
# ResNet56), so that drop is probably the tau^2-scaled DIST objective at a high tau rather
# than calibration.
#
# Two caveats limit what digits can say. The teacher is at 98.7% and the students at ~98%,
# so there is little room for any teacher to do harm; and on digits "teacher ECE" and
# "temperature" have identical ranks (the teacher is best calibrated at tau = 1), so no
# correlation here can separate calibration from temperature. The paper-scale preset
# (CIFAR-100, ResNet56 -> ResNet14, its 11 temperatures, 240 epochs) is the direct test.

# %%
report.headline(**{
    f"Spearman ECE vs acc, {loss} (%)": round(float(corr.loc[loss, "spearman"]), 1)
    for loss in corr.index if pd.notna(corr.loc[loss, "spearman"])
} or {"students trained": len(df)})
