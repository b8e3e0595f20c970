"""Headline figures and the other marks a notebook leaves for the report index.

    from kdlib.headline import headline, percent, points, number
    headline(accuracy=percent(0.9712, 0.9680, 0.9740),   # "97.12% [96.80, 97.40]"
             gain=points(0.0253, 0.011, 0.039),           # "+2.53 points [1.10, 3.90]"
             spearman=number(-0.6812))                    # "-0.681"
    key_figure(fig)               # the notebook's key figure (thumbnail in the index)
    skipped(3, "Tiny-ImageNet missing: fetch tiny-imagenet-200.zip into data/")
    datasets(["CIFAR-10"])        # the data sets this notebook used (listed in the index)

Every helper displays a bundle with a kdlib mimetype part (JSON) beside its text/markdown
rendering; the report runner reads them back from the executed notebook (`collect_*`).
Outside IPython the text rendering is printed instead. The three figure helpers fix one
convention: accuracies and ECE (fractions in [0, 1]) as percent with two decimals,
differences of two fractions in percentage points, anything else with 3 significant
digits; plain floats given to `headline` are rendered as `number` would. This module
imports nothing heavy, so notebooks can call it without the runner.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

HEADLINE_MIMETYPE = "application/vnd.kdlib.headline+json"
HEADLINE_ORDER_MIMETYPE = "application/vnd.kdlib.headline-order+json"  # names, in order
KEY_FIGURE_MIMETYPE = "application/vnd.kdlib.key-figure+json"
SKIPPED_MIMETYPE = "application/vnd.kdlib.skipped+json"
DATASETS_MIMETYPE = "application/vnd.kdlib.datasets+json"
VERDICT_MIMETYPE = "application/vnd.kdlib.verdict+json"
MAX_STRING_FIGURE = 80
UNITS = ("percent", "points", "number")
DEFAULT_DIGITS = 3

_MISSING = object()

# --------------------------------------------------------------------------- numbers


def _real(value, name: str) -> float:
    if not isinstance(value, (str, Real)) and hasattr(value, "item"):
        try:  # numpy scalars and 0-d arrays, one-element torch tensors
            value = value.item()
        except (ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a real number, got an array with more than "
                            f"one element ({err})") from err
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def significant(value: float, digits: int = DEFAULT_DIGITS) -> str:
    """`value` with `digits` significant digits, fixed-point for 1e-4 <= |value| < 1e6
    (``0.00925``, ``-0.681``, ``1230``), else scientific (``1.23e+07``)."""
    value = float(value)
    if value == 0:
        return "0" if digits == 1 else "0." + "0" * (digits - 1)
    rounded = float(f"{value:.{digits - 1}e}")
    exponent = math.floor(math.log10(abs(rounded)))
    if not -4 <= exponent < 6:
        return f"{rounded:.{digits - 1}e}"
    return f"{rounded:.{max(digits - 1 - exponent, 0)}f}"


def _decimals(value: float, digits: int) -> int:
    """Decimals `significant` shows for `value` in fixed-point form."""
    if value == 0:
        return digits - 1
    rounded = float(f"{value:.{digits - 1}e}")
    return max(digits - 1 - math.floor(math.log10(abs(rounded))), 0)


@dataclass(frozen=True)
class Figure:
    """One headline figure with its unit and optional interval [low, high].

    unit "percent": value, low, high are fractions (accuracy, ECE; value in [0, 1]),
    shown as percent with two decimals; "points": a difference of two fractions (value in
    [-1, 1]), shown in percentage points with a sign; "number": anything else, shown with
    `digits` significant digits, its interval with as many decimals; a value under a tenth
    of its interval's larger end (in magnitude) takes that end's decimals instead
    ("0.009 [-0.565, 0.473]", not "0.00911 [-0.56492, 0.47273]").
    """

    value: float
    unit: str
    low: float | None = None
    high: float | None = None
    digits: int = DEFAULT_DIGITS

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        value = _real(self.value, "value")
        if self.unit == "percent" and not 0.0 <= value <= 1.0:
            raise ValueError(f"percent() takes a fraction in [0, 1] (0.9712 for 97.12%), "
                             f"got {value}")
        if self.unit == "points" and not -1.0 <= value <= 1.0:
            raise ValueError(f"points() takes a difference of two fractions, in [-1, 1] "
                             f"(0.0253 for +2.53 points), got {value}")
        if (self.low is None) != (self.high is None):
            raise ValueError("give both low and high, or neither")
        low = high = None
        if self.low is not None:
            low, high = _real(self.low, "low"), _real(self.high, "high")
            if low > high:
                raise ValueError(f"low must be <= high, got [{low}, {high}]")
        if isinstance(self.digits, bool) or not isinstance(self.digits, Integral) \
                or not 1 <= self.digits <= 10:
            raise ValueError(f"digits must be an integer in [1, 10], got {self.digits!r}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "digits", int(self.digits))

    def text(self) -> str:
        """The rendering: '97.12% [96.80, 97.40]', '+2.53 points [1.10, 3.90]', '0.681'."""
        if self.unit == "percent":
            main, fmt = f"{100 * self.value:.2f}%", lambda x: f"{100 * x:.2f}"
        elif self.unit == "points":
            v = round(100 * self.value, 2)
            main = f"{'-' if v < 0 else '+'}{abs(v):.2f} points"
            fmt = lambda x: f"{round(100 * x, 2) + 0.0:.2f}"  # noqa: E731 (+0.0: no '-0.00')
        else:
            main = significant(self.value, self.digits)
            if "e" in main:
                fmt = lambda x: significant(x, self.digits)  # noqa: E731
            else:
                d = _decimals(self.value, self.digits)
                big = 0.0 if self.low is None else max(abs(self.low), abs(self.high))
                if abs(self.value) < 0.1 * big:  # a value near 0: its interval's decimals
                    d = _decimals(big, self.digits)
                    main = f"{round(self.value, d) + 0.0:.{d}f}"
                fmt = lambda x: f"{round(x, d) + 0.0:.{d}f}"  # noqa: E731
        if self.low is None:
            return main
        return f"{main} [{fmt(self.low)}, {fmt(self.high)}]"

    def to_json(self) -> dict:
        """{"value", "unit", "low", "high"} (plus "digits" when not 3)."""
        out = {"value": self.value, "unit": self.unit, "low": self.low, "high": self.high}
        if self.digits != DEFAULT_DIGITS:
            out["digits"] = self.digits
        return out

    @classmethod
    def from_json(cls, data: dict) -> Figure:
        """The inverse of `to_json`."""
        return cls(data["value"], data["unit"], data.get("low"), data.get("high"),
                   data.get("digits", DEFAULT_DIGITS))

    def __str__(self) -> str:
        return self.text()


def percent(fraction, low=None, high=None) -> Figure:
    """An accuracy or ECE (a fraction in [0, 1]) shown as percent with two decimals:
    ``percent(0.9712)`` -> "97.12%", ``percent(0.9712, 0.968, 0.974)`` -> "97.12% [96.80, 97.40]".
    """
    return Figure(fraction, "percent", low, high)


def points(difference, low=None, high=None) -> Figure:
    """A difference of two fractions (in [-1, 1]) shown in percentage points with a sign:
    ``points(0.0253, 0.011, 0.039)`` -> "+2.53 points [1.10, 3.90]"."""
    return Figure(difference, "points", low, high)


def number(value, low=None, high=None, digits: int = DEFAULT_DIGITS) -> Figure:
    """Any other figure (Spearman, temperature, KL) with `digits` significant digits:
    ``number(-0.68123, -0.85, -0.28)`` -> "-0.681 [-0.850, -0.280]"."""
    return Figure(value, "number", low, high, digits)


def format_value(value: Any) -> str:
    """Short text for a stored headline value: a Figure (or its JSON dict) as `Figure.text`,
    floats with 3 significant digits, ints and strings as they are."""
    if isinstance(value, Figure):
        return value.text()
    if isinstance(value, dict) and value.get("unit") in UNITS and "value" in value:
        try:
            return Figure.from_json(value).text()
        except (TypeError, ValueError, KeyError):
            return json.dumps(value)
    if isinstance(value, float):
        return significant(value) if math.isfinite(value) else str(value)
    return str(value)


# --------------------------------------------------------------------------- headline


def _headline_value(name: str, value: Any) -> int | float | str | dict:
    if isinstance(value, Figure):
        return value.to_json()
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
        f"headline figure {name!r} must be a number, a short string or a percent()/"
        f"points()/number() figure, got {type(value).__name__}"
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
    return {HEADLINE_MIMETYPE: clean, HEADLINE_ORDER_MIMETYPE: list(clean),
            "text/plain": plain, "text/markdown": markdown}


def _publish(bundle: dict) -> None:
    """Display `bundle` raw in IPython; print its text/plain part elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        get_ipython = lambda: None  # noqa: E731
    if get_ipython() is None:
        print(bundle["text/plain"])
        return
    display(bundle, raw=True)


def headline(name=None, value=_MISSING, /, **figures) -> None:
    """Show headline figures and mark them for the report index.

    ``headline(accuracy=percent(0.97), gain=points(0.021, 0.004, 0.038))`` or
    ``headline("ECE (teacher)", percent(0.12))``. Values: `percent`/`points`/`number`
    figures, finite numbers (numpy / one-element tensors accepted; floats shown with 3
    significant digits) or single-line strings of at most 80 characters.
    """
    _publish(headline_bundle(name, value, **figures))


# --------------------------------------------------------------------------- other marks


def _short_text(value, name: str, max_len: int = 300) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    value = " ".join(value.split())
    if not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise ValueError(f"{name} must be at most {max_len} characters, got {len(value)}")
    return value


def _table_name(table) -> str:
    if isinstance(table, bool):
        raise TypeError("table must be a table number or name such as 3 or 'Table 3', "
                        "got a bool")
    if isinstance(table, Integral):
        return f"Table {int(table)}"
    table = _short_text(table, "table", 60)
    return f"Table {table}" if table[0].isdigit() else table


def skipped_bundle(table, reason: str) -> dict:
    """The bundle `skipped` publishes: {"table": "Table 3", "reason": ...} + markdown."""
    name, reason = _table_name(table), _short_text(reason, "reason")
    text = f"{name} skipped: {reason}"
    return {SKIPPED_MIMETYPE: {"table": name, "reason": reason}, "text/plain": text,
            "text/markdown": f"**{name} skipped:** {reason}\n"}


def skipped(table, reason: str) -> None:
    """Say that a table was not computed and why (e.g. its data set is missing; name the
    file to fetch). `table`: a number (3 -> "Table 3") or a name ("Figure 4"). The report
    index and summary.json list every skipped table."""
    _publish(skipped_bundle(table, reason))


def datasets_bundle(names) -> dict:
    """The bundle `datasets` publishes: {"datasets": [...]} + markdown."""
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(f"names must be a list of data set names, got {type(names).__name__}")
    clean = []
    for n in names:
        n = _short_text(n, "data set name", 80)
        if n not in clean:
            clean.append(n)
    if not clean:
        raise ValueError("datasets needs at least one name, e.g. datasets(['CIFAR-10'])")
    text = "Data sets: " + ", ".join(clean)
    return {DATASETS_MIMETYPE: {"datasets": clean}, "text/plain": text,
            "text/markdown": text + "\n"}


def datasets(names) -> None:
    """Record the data sets this notebook used (e.g. ["CIFAR-100", "Tiny-ImageNet"]); the
    report index lists them per notebook and for the whole run."""
    _publish(datasets_bundle(names))


KEY_FIGURE_ANCHOR = "kdlib-key-figure"
_key_count = [0]


def key_figure_bundle(png: bytes, title: str = "", anchor: str = KEY_FIGURE_ANCHOR) -> dict:
    """The bundle `key_figure` publishes: image/png (base64) and the marker
    {"anchor": ..., "title": ...} under KEY_FIGURE_MIMETYPE."""
    if not isinstance(png, bytes | bytearray) or not bytes(png).startswith(b"\x89PNG"):
        raise TypeError("png must be the bytes of a PNG image")
    if not isinstance(title, str):
        raise TypeError(f"title must be a string, got {type(title).__name__}")
    if not isinstance(anchor, str) or not re.fullmatch(r"[A-Za-z][\w-]*", anchor):
        raise ValueError(f"anchor must be an HTML id (letters, digits, _ and -), got {anchor!r}")
    return {"image/png": base64.b64encode(bytes(png)).decode("ascii"),
            KEY_FIGURE_MIMETYPE: {"anchor": anchor, "title": title},
            "text/plain": f"<key figure{': ' + title if title else ''}>"}


def key_figure(fig, title: str = "", close: bool = True) -> None:
    """Show a matplotlib figure as the notebook's key figure (PNG) and mark it: the report
    runner writes a thumbnail ``<notebook>.key.png`` beside the report and the index shows
    it, linked to the figure in the report. `close` closes the figure afterwards, so that
    the inline backend does not show it a second time. The last key figure shown wins."""
    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(close, bool):
        raise TypeError(f"close must be True or False, got {close!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    _key_count[0] += 1
    anchor = f"{KEY_FIGURE_ANCHOR}-{_key_count[0]}"
    bundle = key_figure_bundle(buf.getvalue(), title, anchor)
    if close:
        import matplotlib.pyplot as plt

        plt.close(fig)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover
        get_ipython = lambda: None  # noqa: E731
    if get_ipython() is None:
        print(bundle["text/plain"])
        return
    display({"text/html": f'<a id="{anchor}"></a>', "text/plain": ""}, raw=True)
    display(bundle, raw=True)


# --------------------------------------------------------------------------- collecting


def _marks(nb, mimetype: str):
    """Every `mimetype` part in an executed notebook's outputs, in order."""
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if mimetype in data:
                value = data[mimetype]
                if isinstance(value, str):  # some writers store JSON mimetypes as text
                    value = json.loads(value)
                yield value, data


def collect_headlines(nb) -> dict[str, Any]:
    """All headline figures in an executed notebook's outputs, in order (later wins).
    Values are plain numbers/strings or Figure JSON dicts ({"value", "unit", "low",
    "high"}); `format_value` renders both."""
    figures: dict[str, Any] = {}
    for value, data in _marks(nb, HEADLINE_MIMETYPE):
        order = data.get(HEADLINE_ORDER_MIMETYPE)  # the JSON dict may come back sorted
        if isinstance(order, str):
            order = json.loads(order)
        if isinstance(order, list) and set(order) == set(value):
            value = {k: value[k] for k in order}
        for k, v in value.items():
            figures.pop(k, None)  # a figure given again moves to its new place
            figures[k] = v
    return figures


def collect_skipped(nb) -> list[dict]:
    """[{"table", "reason"}, ...] of every `skipped` mark, in order (duplicates dropped)."""
    out: list[dict] = []
    for value, _ in _marks(nb, SKIPPED_MIMETYPE):
        entry = {"table": str(value.get("table")), "reason": str(value.get("reason"))}
        if entry not in out:
            out.append(entry)
    return out


def collect_datasets(nb) -> list[str]:
    """The data set names of every `datasets` mark, in order of first mention."""
    out: list[str] = []
    for value, _ in _marks(nb, DATASETS_MIMETYPE):
        for name in value.get("datasets", []):
            if str(name) not in out:
                out.append(str(name))
    return out


def collect_verdicts(nb) -> list[dict]:
    """Every `kdlib.claims.show` verdict, in order: {"line": the verdict line, "claims":
    [{"claim", "verdict", "text"}, ...]} (one per claim of the table)."""
    out = []
    for v, _ in _marks(nb, VERDICT_MIMETYPE):
        claims = [{"claim": str(c.get("claim", "")), "verdict": str(c.get("verdict", "")),
                   "text": str(c.get("text", ""))} for c in v.get("claims", [])
                  if isinstance(c, dict)]
        out.append({"line": str(v.get("line", "")), "claims": claims})
    return out


def collect_key_figure(nb) -> dict | None:
    """The last key figure: {"anchor", "title", "png": bytes}, or None."""
    found = None
    for value, data in _marks(nb, KEY_FIGURE_MIMETYPE):
        png = data.get("image/png")
        if isinstance(png, list):
            png = "".join(png)
        if png:
            found = {"anchor": str(value.get("anchor", "")), "title": str(value.get("title", "")),
                     "png": base64.b64decode(png)}
    return found


__all__ = [
    "DATASETS_MIMETYPE", "DEFAULT_DIGITS", "Figure", "HEADLINE_MIMETYPE",
    "HEADLINE_ORDER_MIMETYPE", "KEY_FIGURE_ANCHOR",
    "KEY_FIGURE_MIMETYPE", "MAX_STRING_FIGURE", "SKIPPED_MIMETYPE", "UNITS", "VERDICT_MIMETYPE",
    "collect_datasets", "collect_headlines", "collect_key_figure", "collect_skipped",
    "collect_verdicts", "datasets", "datasets_bundle", "format_value", "headline",
    "headline_bundle", "key_figure", "key_figure_bundle", "number", "percent", "points",
    "significant", "skipped", "skipped_bundle",
]
