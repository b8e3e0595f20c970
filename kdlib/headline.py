"""Headline figures: what a notebook shows as its key results and the report index lists.

    from kdlib.headline import headline
    headline(accuracy=0.97, ece=0.031)       # or headline("ECE (teacher)", 0.12)

`headline` displays a bundle whose HEADLINE_MIMETYPE part is a JSON dict of figures;
the report runner reads them back from the executed notebook with `collect_headlines`.
This module imports nothing heavy, so notebooks can call it without the runner.
"""

from __future__ import annotations

import json
import math
from numbers import Integral, Real
from typing import Any

HEADLINE_MIMETYPE = "application/vnd.kdlib.headline+json"
MAX_STRING_FIGURE = 80

_MISSING = object()


def format_value(value: Any) -> str:
    """Short text for a headline value: floats with 6 significant digits."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _headline_value(name: str, value: Any) -> int | float | str:
    if not isinstance(value, (str, Real)) and hasattr(value, "item"):
        try:  # numpy scalars and 0-d arrays, one-element torch tensors
            value = value.item()
        except (ValueError, RuntimeError) as err:
            raise TypeError(
                f"headline figure {name!r} must be a number or a short string, "
                f"got an array with more than one element ({err})"
            ) from err
    if isinstance(value, bool):
        raise TypeError(
            f"headline figure {name!r} must be a number or a short string, got a bool; "
            "pass str(value) or an int"
        )
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"headline figure {name!r} must be finite, got {value}")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_FIGURE or "\n" in value:
            raise ValueError(
                f"headline figure {name!r} must be a single-line string of at most "
                f"{MAX_STRING_FIGURE} characters, got {len(value)} characters"
            )
        return value
    raise TypeError(
        f"headline figure {name!r} must be a number or a short string, "
        f"got {type(value).__name__}"
    )


def headline_bundle(name=None, value=_MISSING, /, **figures) -> dict:
    """The display bundle `headline` publishes: {mimetype: data} with a JSON dict of
    figures under HEADLINE_MIMETYPE plus text/plain and text/markdown renderings."""
    merged: dict[str, Any] = {}
    if name is not None or value is not _MISSING:
        if not isinstance(name, str) or not name.strip():
            raise TypeError(f"headline name must be a non-empty string, got {name!r}")
        if value is _MISSING:
            raise TypeError(f"headline({name!r}) needs a value: headline(name, value)")
        if name in figures:
            raise ValueError(f"headline figure {name!r} given twice")
        merged[name] = value
    merged.update(figures)
    if not merged:
        raise ValueError("headline needs at least one figure: headline(accuracy=0.97)")
    clean = {str(k): _headline_value(str(k), v) for k, v in merged.items()}
    plain = "\n".join(f"{k}: {format_value(v)}" for k, v in clean.items())
    rows = "\n".join(
        f"| {k.replace('|', '/')} | {format_value(v).replace('|', '/')} |"
        for k, v in clean.items()
    )
    markdown = f"| headline figure | value |\n|---|---|\n{rows}\n"
    return {HEADLINE_MIMETYPE: clean, "text/plain": plain, "text/markdown": markdown}


def headline(name=None, value=_MISSING, /, **figures) -> None:
    """Show headline figures and mark them for the report index.

    ``headline(accuracy=0.97, ece=0.031)`` or ``headline("ECE (teacher)", 0.12)``.
    Values: finite numbers (numpy / one-element tensors accepted) or single-line strings
    of at most 80 characters. Outside IPython the text rendering is printed.
    """
    bundle = headline_bundle(name, value, **figures)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        get_ipython = lambda: None
    if get_ipython() is None:
        print(bundle["text/plain"])
        return
    display(bundle, raw=True)


def collect_headlines(nb) -> dict[str, Any]:
    """All headline figures in an executed notebook's outputs, in order (later wins)."""
    figures: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if HEADLINE_MIMETYPE in data:
                value = data[HEADLINE_MIMETYPE]
                if isinstance(value, str):  # some writers store JSON mimetypes as text
                    value = json.loads(value)
                figures.update(value)
    return figures


__all__ = [
    "HEADLINE_MIMETYPE",
    "MAX_STRING_FIGURE",
    "collect_headlines",
    "format_value",
    "headline",
    "headline_bundle",
]
