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
# # 08 · Online distillation from teacher checkpoints
#
# **Claim (Harutyunyan et al., ICLR 2023, "Supervision complexity").** A student generalizes
# better when the teacher's supervision is simple enough for it to follow; a fully trained
# teacher's predictions can be too complex. *Online distillation* — the student taught at each
# stage by the teacher checkpoint of the matching stage of the teacher's own training, i.e.
# increasingly complex supervision — beats distilling from the final teacher. Early stopping
# the teacher (ESKD) is another way to simplify the supervision.
#
# **Fan et al. (ICML 2024)** read early stopping through calibration: an early-stopped teacher
# is better calibrated and therefore teaches better under KD (their Table 4). Question here:
# does online distillation help on our data, and is its benefit visible through the
# calibration (ECE at tau) of the teachers the student actually saw?
#
# Setup: one teacher trained once with a checkpoint every few epochs. Three teacher *modes*,
# each trained through the same stages (same learning-rate schedule sliced per stage, same
# batch seeds) so that only the teacher differs:
# `online` (stage s taught by the checkpoint saved at the end of stage s), `final` (the final
# teacher throughout) and `early` (an early checkpoint throughout). KD and DIST, each at the
# preset's temperatures, several seeds; the students of one (seed, mode) train stacked.
# Caveat of the staged engine: SGD momentum restarts at each stage boundary (for every mode).

# %% tags=["parameters"]
SCALE = "default"
INTERACTIVE = True

# %%
import pandas as pd
from IPython.display import display

from kdlib import presets
from kdlib.experiments import online_distillation as od
from kdlib.headline import headline
from kdlib.paper import paper_table
from kdlib.plots import beyond

pd.set_option("display.precision", 4)
pd.set_option("display.width", 160)
cfg = presets.get(od.NAME, SCALE)
print(f"scale={SCALE}: teacher {cfg['teacher']} -> student {cfg['student']} on "
      f"{cfg['data']['name']}, modes {cfg['modes']}, early stop at epoch {cfg['early_epoch']}, "
      f"losses {cfg['losses']}, temperatures {cfg['temperatures']}, seeds {cfg['seeds']}")

# %% [markdown]
# ## The teacher along its training
# Test accuracy and ECE at each temperature of every saved checkpoint (the last one is the
# final teacher).

# %%
traj = od.teacher_trajectory(cfg["data"], cfg["teacher"], cfg["teacher_recipe"],
                             cfg["teacher_seed"], cfg["trajectory_temperatures"])
fig = beyond.teacher_trajectory(traj, cfg["early_epoch"])
traj.pivot_table(index="epoch", columns="temperature", values="ece_at_tau").join(
    traj.groupby("epoch")["accuracy"].first())

# %% [markdown]
# ## Run (or resume) the sweep

# %%
records = od.run(cfg, SCALE, progress=INTERACTIVE)  # no progress widgets in reports
df = od.results_frame(records)
summary = od.summary_table(df)
print(f"{len(df)} students, {df['seed'].nunique()} seeds")
display(summary)

# %% [markdown]
# ## Student accuracy per teacher mode
# `gain_vs_final`: accuracy minus that of the final-teacher student of the same loss,
# temperature and seed (paired), mean and sd over seeds. `teacher_ece_at_tau`: the mean ECE at
# tau of the teachers the student saw over its stages.

# %%
fig = beyond.online_accuracy(summary)
summary[["loss", "temperature", "mode", "accuracy", "accuracy_sd", "gain_vs_final", "gain_sd",
         "teacher_ece_at_tau"]]

# %% [markdown]
# ## Stage by stage
# Top: the student's test accuracy at the end of each stage. Bottom: the ECE at tau of the
# teacher that taught that stage.

# %%
stages = od.stages_frame(df)
fig = beyond.online_stages(stages)
stages.groupby(["loss", "temperature", "mode", "stop_epoch"])[
    ["accuracy", "teacher_ece_at_tau"]].mean().unstack("mode").round(4)

# %% [markdown]
# ## The paper's early-stopping numbers (Table 4, CIFAR-100, percent)
# ESKD: a checkpoint before the end of training against the final teacher.

# %%
paper_table("table4")

# %%
if INTERACTIVE:
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def _show(loss=cfg["losses"][0], temperature=cfg["temperatures"][0]):
        sel = stages[(stages["loss"] == loss) & (stages["temperature"] == temperature)]
        beyond.online_stages(sel)
        plt.show()

    widgets.interact(_show, loss=cfg["losses"], temperature=cfg["temperatures"])

# %% [markdown]
# ## Headline figures

# %%
from kdlib.experiments.fidelity_exaggeration import headline_number

s = summary.set_index(["loss", "temperature", "mode"])
t = max(cfg["temperatures"])
heads = {f"online gain vs final, {loss} T={t:g}":
         headline_number(s.loc[(loss, t, "online"), "gain_vs_final"], 4)
         for loss in cfg["losses"]}
final_t1 = traj[(traj["epoch"] == traj["epoch"].max()) & (traj["temperature"] == 1.0)]
heads["final teacher ECE at T=1"] = headline_number(final_t1["ece_at_tau"].iloc[0], 4)
headline(**heads)

# %% [markdown]
# ## Claims table: the claims, tested on this run
# Computed by `online_distillation.claims` from the students above. Every teacher mode goes
# through the same staged loop with the same initialization and batches per seed, so each
# claim is a paired difference: the online (or early-stopped) teacher's student minus the
# final teacher's student of the same loss, temperature and seed, in percentage points,
# then the mean with a 95% t-interval over seeds (`n` = seeds). Claimed > 0: online
# distillation beats distilling from the final teacher (Harutyunyan et al.), and so does
# the early-stopped teacher (the paper's Table 4). On an easy task the teacher's accuracy
# and calibration improve together along its training, so a difference here cannot be
# put down to calibration alone (see the trajectory above).
# The verdict rule (`kdlib.claims.verdict`): a claim *holds* when the whole interval lies
# above 0, *does not hold* when it lies wholly below, and is *inconclusive* when it
# contains or touches 0 or rests on fewer than 3 seeds (`n`).

# %%
from kdlib import claims as cl

table = od.claims(df)
print(cl.verdict_line(table))
table
