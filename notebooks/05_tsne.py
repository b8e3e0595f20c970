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
# # 05 · What a miscalibrated teacher does to the student's feature space
#
# **Question.** Do students distilled from a poorly calibrated teacher build a worse
# embedding: classes less separable, more test points stuck among other classes?
#
# **The paper's claim** (Fan et al., ICML 2024, section 3.4, Figure 5; teacher WRN-28-3,
# student ResNet14, CIFAR-10): in a t-SNE of the students' features, the student of the
# poorly calibrated teacher has "slightly larger" inter-class distances, but "a certain
# number of undistinguished samples" among several classes, "so many [they] can be
# considered as an additional 11th category": the student "is unable to construct a robust
# embedding". The figure carries no numbers; the temperatures used are not stated.
#
# **What we do.** One teacher; its test ECE at each temperature of the paper's grid
# (1 ... 8); the temperature of lowest ECE ("calibrated") and of highest ECE
# ("miscalibrated"). Per seed, two students (vanilla KD, alpha = 1) start from the same
# initialization and see the same batches; only tau differs. Beside the t-SNE picture we
# measure the students' penultimate test features directly (t-SNE distorts distances):
# leave-one-out 5-NN accuracy, silhouette, the number of test points whose 5 nearest
# neighbours mostly belong to other classes ("confused"; ringed in the picture), and the
# ratio of centroid distances to within-class spread.

# %% tags=["parameters"]
SCALE = "default"
INTERACTIVE = True

# %%
import pandas as pd

from kdlib import presets
from kdlib.experiments import tsne_features as tf
from kdlib.headline import headline
from kdlib.plots import features as fplots
from kdlib.recipe import recipe_from_spec

pd.set_option("display.precision", 3)
cfg = presets.get(tf.NAME, SCALE)
print(f"scale {SCALE}: data {cfg['data']}")
print(f"teacher {cfg['teacher']} (recipe {recipe_from_spec(cfg['teacher_recipe'])})")
print(f"student {cfg['student']} (recipe {recipe_from_spec(cfg['student_recipe'])}), "
      f"loss {cfg['loss']}, seeds {cfg['seeds']}, k = {cfg['k']}")

# %% [markdown]
# ## The teacher's calibration across temperatures
# ECE (15 bins) of softmax(teacher logits / tau) on the test set; the circles mark the two
# temperatures the students are distilled at.

# %%
curve = tf.teacher_curve(cfg)
taus = tf.pick_temperatures(curve)
fig = fplots.teacher_ece_curve(curve, taus)
print(f"teacher test accuracy {100 * curve.attrs['accuracy']:.2f}%; chosen: {taus}")
print("teacher's own features:", {k: round(v, 3) for k, v in curve.attrs["features"].items()})
(curve.assign(ece_percent=100 * curve["ece"]).drop(columns="ece")
 .set_index("temperature").T)

# %% [markdown]
# ## Students: feature-space metrics (mean and std over seeds)
# Percent for accuracy, ECE, k-NN accuracy and the confused fraction; `n_confused` counts
# test points; silhouette in [-1, 1]; separation ratio = mean centroid distance / mean
# distance to the own centroid.

# %%
df, embeddings = tf.run(cfg, SCALE, taus, progress=False)
summary = tf.summary_table(df)
summary.round(3).T

# %% [markdown]
# Paired per seed (miscalibrated minus calibrated; fractions, counts for `n_confused`):

# %%
tf.paired_differences(df).round(4)

# %% [markdown]
# ## t-SNE of the students' penultimate test features (Figure 5)
# Colours and markers: classes. Black rings: the "confused" points (their 5 nearest
# neighbours in the *feature space*, not the picture, are mostly of other classes).

# %%
seed = sorted(embeddings)[0]
emb = embeddings[seed]
per_seed = df[df["seed"] == seed].set_index("role")
panels = {}
for role in tf.ROLES:
    r = per_seed.loc[role]
    title = (f"{role}: tau = {r['temperature']:g}, teacher ECE {100 * r['teacher_ece_at_tau']:.1f}%"
             f"\nacc {100 * r['accuracy']:.1f}%, 5-NN {100 * r['knn_accuracy']:.1f}%, "
             f"confused {int(r['n_confused'])}")
    panels[title] = (emb[role], emb["labels"], emb[f"{role}_confused"])
fig = fplots.tsne_panels(panels)
per_seed[["temperature", "teacher_ece_at_tau", "accuracy", "knn_accuracy", "silhouette",
          "n_confused", "separation_ratio"]]

# %% [markdown]
# ## The paper beside ours
# Figure 5 has no numbers; the closest printed ones are Table 6 (CIFAR-100, student
# ResNet14): KD accuracy (%) at each teacher's lowest- and highest-ECE temperature.

# %%
paper = tf.paper_extremes()
ours = pd.DataFrame([{
    "teacher": cfg["teacher"] + " (ours)", "student": cfg["student"],
    "calibrated_tau": summary.loc["calibrated", "temperature"],
    "calibrated_teacher_ece": summary.loc["calibrated", "teacher_ece_at_tau_mean"],
    "calibrated_kd_accuracy": summary.loc["calibrated", "accuracy_mean"],
    "miscalibrated_tau": summary.loc["miscalibrated", "temperature"],
    "miscalibrated_teacher_ece": summary.loc["miscalibrated", "teacher_ece_at_tau_mean"],
    "miscalibrated_kd_accuracy": summary.loc["miscalibrated", "accuracy_mean"]}])
pd.concat([paper.drop(columns=[c for c in paper if c.endswith("dist_accuracy")]), ours],
          ignore_index=True)

# %% [markdown]
# ## Claims table: the paper's claims, tested on this run
# Computed by `tsne_features.claims` from the students above. The two students of a seed
# share their initialization and batch order, so each claim is a paired difference:
# miscalibrated-teacher student minus calibrated-teacher student, per seed, then the mean
# with a 95% t-interval over seeds (`n` = seeds). Claimed (Figure 5, Table 6): the classes
# lie further apart (separation ratio, silhouette: difference > 0, their own units) while
# test accuracy and 5-NN accuracy in feature space are lower (difference < 0, percentage
# points). In this design the miscalibrated teacher is also the high-temperature one, so
# the table cannot separate calibration from temperature.
# The verdict rule (`kdlib.claims.verdict`): a claim *holds* when the whole interval lies
# on the claimed side of 0, *does not hold* when it lies wholly on the other side, and is
# *inconclusive* when it contains or touches 0 or rests on fewer than 3 seeds (`n`).

# %%
from kdlib import claims as cl

table = tf.claims(df)
print(cl.verdict_line(table))
table

# %%
d = summary
headline(**{
    "5-NN acc calibrated (%)": round(d.loc["calibrated", "knn_accuracy_mean"], 2),
    "5-NN acc miscalibrated (%)": round(d.loc["miscalibrated", "knn_accuracy_mean"], 2),
    "confused calibrated": round(d.loc["calibrated", "n_confused_mean"], 1),
    "confused miscalibrated": round(d.loc["miscalibrated", "n_confused_mean"], 1),
})
