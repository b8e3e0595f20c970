"""Scale presets: one parameter dict per experiment and scale.

Notebooks pick their settings with ``cfg = presets.get("gmm_optimal_teacher", SCALE)``;
the experiment's own kdlib module registers the three dicts with `register`.

Scales (the same three for every experiment):
    smoke    seconds per notebook: tiny data and epochs, checks that the code runs
             (``make test``); its numbers mean nothing.
    default  minutes on a laptop CPU: large enough to show the paper's trends.
    paper    the paper's settings (models, epochs, seeds): GPU hours.

This module stays dependency-free (no torch) so that the command line can import it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

SCALES = ("smoke", "default", "paper")

_REGISTRY: dict[str, dict[str, dict]] = {}
_TABLES: dict[str, dict[str, list[str]]] = {}
_DRY_RUN_HOOKS: dict[str, Callable[[dict], dict] | None] = {}


def register(
    experiment: str, scale_to_params: Mapping[str, Mapping], *, replace: bool = False,
    tables: Mapping[str, list] | None = None, dry_run: Callable[[dict], dict] | None = None,
) -> None:
    """Register the presets of `experiment`: ``{scale: {param: value}}`` for every scale.

    tables: ``{table name: [parameter names]}``, what ``select="table=NAME"`` keeps (the
    parameters of the other tables are set to None; see `kdlib.selection`).
    dry_run: ``fn(cfg) -> cfg`` applied after the generic cut of `kdlib.dry_run` when
    ``get(..., dry_run=True)``, for values tied to the epoch count.

    Every scale in SCALES must be present (and no other), and all scales must define the
    same parameter names, so that a notebook reads the same keys at every scale.
    Registering the same experiment again with equal presets is a no-op; with different
    presets it is an error unless ``replace=True``. The dicts are deep-copied.
    """
    if not isinstance(experiment, str) or not experiment.strip():
        raise TypeError(f"experiment must be a non-empty string, got {experiment!r}")
    if not isinstance(scale_to_params, Mapping):
        raise TypeError(
            f"scale_to_params must be a dict {{scale: {{param: value}}}}, "
            f"got {type(scale_to_params).__name__}"
        )
    missing = [s for s in SCALES if s not in scale_to_params]
    unknown = [s for s in scale_to_params if s not in SCALES]
    if missing or unknown:
        raise ValueError(
            f"presets for {experiment!r} must define exactly the scales {list(SCALES)}; "
            f"missing {missing}, unknown {unknown}"
        )
    for scale in SCALES:
        params = scale_to_params[scale]
        if not isinstance(params, Mapping):
            raise TypeError(
                f"presets[{experiment!r}][{scale!r}] must be a dict of parameters, "
                f"got {type(params).__name__}"
            )
        bad = [k for k in params if not isinstance(k, str)]
        if bad:
            raise TypeError(
                f"presets[{experiment!r}][{scale!r}] parameter names must be strings, got {bad}"
            )
    reference = set(scale_to_params[SCALES[0]])
    for scale in SCALES[1:]:
        keys = set(scale_to_params[scale])
        if keys != reference:
            raise ValueError(
                f"presets for {experiment!r}: scale {scale!r} and {SCALES[0]!r} must define "
                f"the same parameters; only in {scale!r}: {sorted(keys - reference)}, "
                f"only in {SCALES[0]!r}: {sorted(reference - keys)}"
            )
    new = {scale: copy.deepcopy(dict(scale_to_params[scale])) for scale in SCALES}
    old = _REGISTRY.get(experiment)
    if old is not None and old != new and not replace:
        raise ValueError(
            f"experiment {experiment!r} is already registered with different presets; "
            "pass replace=True to overwrite"
        )
    if tables is not None:
        _check_tables(experiment, tables, reference)
    if dry_run is not None and not callable(dry_run):
        raise TypeError(f"dry_run must be a function cfg -> cfg, got {type(dry_run).__name__}")
    _REGISTRY[experiment] = new
    _TABLES[experiment] = {str(k): list(v) for k, v in (tables or {}).items()}
    _DRY_RUN_HOOKS[experiment] = dry_run


def _check_tables(experiment: str, tables, parameters: set) -> None:
    if not isinstance(tables, Mapping):
        raise TypeError(f"tables must be a dict {{table: [parameter names]}}, "
                        f"got {type(tables).__name__}")
    for name, keys in tables.items():
        if isinstance(keys, str) or not isinstance(keys, (list, tuple)):
            raise TypeError(f"tables[{name!r}] must be a list of parameter names, got {keys!r}")
        unknown = [k for k in keys if k not in parameters]
        if unknown:
            raise ValueError(f"tables[{name!r}] of {experiment!r} names parameters {unknown} "
                             f"that its presets do not define ({sorted(parameters)})")


def get(experiment: str, scale: str, *, select: str | None = None,
        dry_run: bool = False) -> dict:
    """A fresh copy of the parameters of `experiment` at `scale` (one of SCALES).

    select: a selection string (``"table=6 pair=resnet56->resnet14 seed=0"``, see
    `kdlib.selection`); "" or None selects everything.
    dry_run: cut every training to a few steps (`kdlib.dry_run`); the returned dict then
    has ``cfg["dry_run"] = True``, which experiments read to keep their results apart.
    """
    if experiment not in _REGISTRY:
        raise ValueError(
            f"unknown experiment {experiment!r}; registered experiments: {experiments()} "
            "(presets are registered when the experiment's kdlib module is imported)"
        )
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if not isinstance(dry_run, bool):
        raise TypeError(f"dry_run must be True or False, got {dry_run!r}")
    from kdlib import dry_run as dry
    from kdlib.selection import apply_selection

    cfg = copy.deepcopy(_REGISTRY[experiment][scale])
    if select:
        cfg = apply_selection(cfg, select, _TABLES.get(experiment))
    if dry_run:
        cfg = dry.cut(cfg)
        hook = _DRY_RUN_HOOKS.get(experiment)
        if hook is not None:
            cfg = hook(cfg)
        cfg["dry_run"] = True
    return cfg


def tables(experiment: str) -> dict[str, list[str]]:
    """``{table name: [parameter names]}`` as `experiment` registered them ({} if none)."""
    if experiment not in _REGISTRY:
        raise ValueError(f"unknown experiment {experiment!r}; registered experiments: "
                         f"{experiments()}")
    return copy.deepcopy(_TABLES.get(experiment, {}))


def experiments() -> list[str]:
    """Names of the registered experiments, sorted."""
    return sorted(_REGISTRY)


def unregister(experiment: str) -> None:
    """Remove `experiment` from the registry (for tests); unknown names are an error."""
    if experiment not in _REGISTRY:
        raise ValueError(
            f"unknown experiment {experiment!r}; registered experiments: {experiments()}"
        )
    del _REGISTRY[experiment]
    _TABLES.pop(experiment, None)
    _DRY_RUN_HOOKS.pop(experiment, None)
