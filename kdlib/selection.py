"""Select part of an experiment's work: one table, one pair (or chain, group), some seeds.

A selection is a short string, the notebooks' ``SELECT`` parameter::

    "table=6 pair=resnet56->resnet14 seed=0"
    "pair=wrn_*  seed=0,1"                      # glob patterns, comma-separated values

Keys (each at most once; values separated by commas):
    table   the experiment's tables/figures as it registers them (``presets.register(...,
            tables={"6": ["pairs"], "figure4": ["calibration_teachers"]})``): the config keys
            of the other tables are set to None, which the experiment reads as "not run".
    pair    names of the items of the experiment's named lists (any top-level list of dicts
            with a "name": pairs, chains, groups, teachers ...); fnmatch patterns allowed.
            ``chain``, ``group`` and ``item`` are aliases of ``pair``.
    seed    integers; every "seeds" list in the config (top level and inside items) keeps
            only these.

A selection that matches nothing is a ValueError naming what exists. This module is
dependency-free (the command line imports it).
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Mapping

KEYS = ("table", "pair", "seed")
ALIASES = {"chain": "pair", "group": "pair", "item": "pair"}


def parse_selection(text) -> dict[str, list[str]]:
    """``"table=6 seed=0,1"`` -> ``{"table": ["6"], "seed": ["0", "1"]}``; "" or None -> {}."""
    if text is None:
        return {}
    if not isinstance(text, str):
        raise TypeError(f"a selection must be a string such as 'table=6 seed=0', "
                        f"got {type(text).__name__}")
    out: dict[str, list[str]] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        key = ALIASES.get(key.strip().lower(), key.strip().lower())
        if not sep or not value:
            raise ValueError(f"selection term {token!r} must read key=value "
                             f"(keys: {', '.join(KEYS)}; aliases {sorted(ALIASES)})")
        if key not in KEYS:
            raise ValueError(f"unknown selection key {key!r} in {token!r}; "
                             f"allowed: {', '.join(KEYS)} (aliases {sorted(ALIASES)})")
        if key in out:
            raise ValueError(f"selection key {key!r} given twice; list values with commas "
                             f"({key}=a,b)")
        values = [v for v in value.split(",") if v]
        if not values:
            raise ValueError(f"selection term {token!r} has no value")
        out[key] = values
    if "seed" in out:
        bad = [v for v in out["seed"] if not v.isdigit()]
        if bad:
            raise ValueError(f"seeds must be non-negative integers, got {bad}")
    return out


def named_lists(cfg: Mapping) -> dict[str, list[str]]:
    """{config key: item names} for every top-level list of dicts that carry a "name"."""
    return {key: [item["name"] for item in value]
            for key, value in cfg.items()
            if isinstance(value, list) and value
            and all(isinstance(item, Mapping) and "name" in item for item in value)}


def _filter_seeds(node, seeds: set[int], found: set[int]):
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "seeds" and isinstance(value, list):
                found.update(int(s) for s in value)
                value = [s for s in value if int(s) in seeds]
            else:
                value = _filter_seeds(value, seeds, found)
            out[key] = value
        return out
    if isinstance(node, list):
        return [_filter_seeds(item, seeds, found) for item in node]
    return node


def _drop_seedless(cfg: dict) -> dict:
    """Items whose own "seeds" list became empty are dropped from their list."""
    for key in named_lists(cfg):
        cfg[key] = [item for item in cfg[key] if item.get("seeds", [0]) != []]
    return cfg


def apply_selection(cfg: Mapping, selection, tables: Mapping | None = None) -> dict:
    """A copy of `cfg` restricted to `selection` (a string or a parse_selection dict).

    tables: {table name: [config keys]} of the experiment (None: it declares none).
    Raises ValueError when a term matches nothing, naming the tables, items or seeds
    that exist.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg must be a dict of parameters, got {type(cfg).__name__}")
    sel = parse_selection(selection) if not isinstance(selection, Mapping) else dict(selection)
    out = copy.deepcopy(dict(cfg))
    if not sel:
        return out
    if "table" in sel:
        tables = dict(tables or {})
        if not tables:
            raise ValueError("this experiment declares no tables to select; "
                             "select with pair= or seed= instead")
        unknown = [t for t in sel["table"] if t not in tables]
        if unknown:
            raise ValueError(f"no table {unknown} in this experiment; tables: {sorted(tables)}")
        keep = {k for t in sel["table"] for k in tables[t]}
        for keys in tables.values():
            for k in keys:
                if k not in keep:
                    out[k] = None
    if "pair" in sel:
        lists = named_lists(out)
        if not lists:
            raise ValueError("this selection leaves no named items (pairs, chains, groups) "
                             "to choose from")
        patterns = sel["pair"]
        for key in lists:
            out[key] = [item for item in out[key]
                        if any(fnmatch.fnmatchcase(item["name"], p) for p in patterns)]
        if not any(out[key] for key in lists):
            names = sorted({n for v in lists.values() for n in v})
            raise ValueError(f"pair {patterns} matches none of {names}")
    if "seed" in sel:
        seeds = {int(s) for s in sel["seed"]}
        found: set[int] = set()
        out = _filter_seeds(out, seeds, found)
        if found and not seeds & found:
            raise ValueError(f"seed {sorted(seeds)} is not among the seeds {sorted(found)}")
        if not found:
            raise ValueError("this experiment has no seeds to select")
        out = _drop_seedless(out)
    return out


__all__ = ["ALIASES", "KEYS", "apply_selection", "named_lists", "parse_selection"]
