"""kdlib: knowledge distillation and calibration, a study of Fan et al. (ICML 2024).

Modules (import the one you need; nothing heavy happens at import time):
    calibration  ECE, MCE, reliability bins, Brier, NLL, temperature scaling
    losses       KD, DIST, soft cross-entropy, FitNet hints
    models       CIFAR ResNets, WRN-d-k, MobileNetV2, MLPs (`build_model`)
    gmm          Gaussian-mixture task with its exact posterior
    data         data sets (digits, GMM, CIFAR, Tiny-ImageNet), on-device batching
    train        Recipe, train, distill, teacher cache
    sweep        resumable SQLite-backed sweeps
    report       executes the notebooks and writes HTML reports
"""

__version__ = "0.1.0"
