"""Execute the notebooks and write HTML reports, plus `headline` for notebooks to call.

Notebooks are jupytext percent-format ``.py`` files with exactly one cell tagged
``parameters`` (plain assignments, including ``SCALE`` and ``INTERACTIVE``). The runner
executes each with papermill in a fresh kernel of the current interpreter (cwd = the
notebook's folder, ``SCALE=<scale>``, ``INTERACTIVE=False`` and any overrides injected)
and writes into the output folder:

    <stem>.ipynb     the executed notebook (partial if a cell failed)
    <stem>.html      the rendered report (images embedded)
    index.html       every notebook: status, duration (s), headline figures, links
    summary.json     the same as JSON

Headline figures are what a notebook passes to `headline`; the runner collects them from
the executed outputs by their mimetype, HEADLINE_MIMETYPE.

Heavy imports (papermill, nbconvert, jupytext) happen inside the runner functions, so
``from kdlib.report import headline`` stays cheap.
"""

from __future__ import annotations

import ast
import datetime
import html
import json
import math
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TextIO

from kdlib.presets import SCALES

HEADLINE_MIMETYPE = "application/vnd.kdlib.headline+json"
RUNNER_PARAMETERS = ("SCALE", "INTERACTIVE")
NOTEBOOK_PATTERN = "[0-9][0-9]_*.py"
# Inline figures (Agg-based, no GUI). Plain "Agg" would stop ipykernel from showing figures.
KERNEL_MPLBACKEND = "module://matplotlib_inline.backend_inline"
MAX_STRING_FIGURE = 80

_MISSING = object()


# --------------------------------------------------------------------------- headline


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


# --------------------------------------------------------------------------- selection


def find_notebooks(selectors=(), notebooks_dir: str | os.PathLike = "notebooks") -> list[Path]:
    """Resolve notebook selectors to source paths.

    A selector is a path to a ``.py`` file, a stem in `notebooks_dir`
    (``00_calibration_explorer``) or its number (``00`` or ``0``). No selectors: every
    ``NN_*.py`` in `notebooks_dir`, sorted. Duplicates are dropped, order kept.
    """
    notebooks_dir = Path(notebooks_dir)
    available = sorted(notebooks_dir.glob(NOTEBOOK_PATTERN)) if notebooks_dir.is_dir() else []
    if isinstance(selectors, (str, os.PathLike)):
        selectors = [selectors]
    if not selectors:
        if not available:
            raise ValueError(f"no notebooks matching {notebooks_dir / NOTEBOOK_PATTERN}")
        return available
    names = [p.stem for p in available]
    chosen: list[Path] = []
    for sel in selectors:
        sel = str(sel)
        path = Path(sel)
        if path.suffix == ".py" and path.is_file():
            found = [path]
        elif (notebooks_dir / f"{sel}.py").is_file():
            found = [notebooks_dir / f"{sel}.py"]
        elif (notebooks_dir / sel).is_file() and sel.endswith(".py"):
            found = [notebooks_dir / sel]
        elif sel.isdigit():
            found = [p for p in available if int(p.stem.split("_", 1)[0]) == int(sel)]
            if len(found) > 1:
                raise ValueError(
                    f"notebook number {sel!r} is ambiguous: {[p.stem for p in found]}"
                )
        else:
            found = []
        if not found:
            raise ValueError(
                f"no notebook {sel!r} (give a .py path, a stem or a number); "
                f"notebooks in {notebooks_dir}: {names}"
            )
        if found[0].resolve() not in {p.resolve() for p in chosen}:
            chosen.append(found[0])
    return chosen


# --------------------------------------------------------------------------- parameters


def parse_parameter(text: str) -> tuple[str, Any]:
    """``"NAME=VALUE"`` to (name, value); VALUE as a Python literal, else as a string."""
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"parameter must look like NAME=VALUE, got {text!r}")
    name, raw = text.split("=", 1)
    name = name.strip()
    if not name.isidentifier():
        raise ValueError(f"parameter name must be a Python identifier, got {name!r}")
    raw = raw.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        value = raw
    return name, value


def declared_parameters(nb) -> list[str]:
    """Names assigned in the notebook's single ``parameters`` cell, in order.

    Raises ValueError if there is no such cell, more than one, or the cell holds anything
    but assignments to plain names (comments are fine).
    """
    cells = [
        c
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code" and "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise ValueError(
            f"notebook must have exactly one cell tagged 'parameters' "
            f"(# %% tags=[\"parameters\"]), found {len(cells)}"
        )
    source = cells[0]["source"]
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ValueError(f"parameters cell is not valid Python: {err}") from err
    names: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets = [stmt.target]
        else:
            targets = None
        if not targets or not all(isinstance(t, ast.Name) for t in targets):
            raise ValueError(
                "parameters cell must hold only assignments NAME = literal; "
                f"line {stmt.lineno} is {ast.get_source_segment(source, stmt)!r}"
            )
        for t in targets:
            if t.id not in names:
                names.append(t.id)
    return names


def check_parameters(declared, parameters) -> None:
    """ValueError naming every parameter in `parameters` that is not in `declared`."""
    unknown = [p for p in parameters if p not in declared]
    if unknown:
        raise ValueError(
            f"parameter(s) {unknown} not declared in the notebook's parameters cell; "
            f"declared: {list(declared)}"
        )


# --------------------------------------------------------------------------- results


@dataclass
class NotebookResult:
    """Outcome of one notebook. Paths are relative to the output folder (None: not written)."""

    name: str
    source: str
    status: str  # "ok" or "failed"
    duration_s: float
    parameters: dict = field(default_factory=dict)
    headline: dict = field(default_factory=dict)
    ipynb: str | None = None
    html: str | None = None
    error: dict | None = None  # {"cell", "source", "ename", "evalue"}
    kernel_log: str | None = None  # the kernel process's own log, kept when it failed
    finished: str = ""


def _atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shorten(source: str, max_lines: int = 8, max_width: int = 120) -> str:
    """First `max_lines` lines of `source`, each cut to `max_width` characters."""
    lines = source.strip("\n").splitlines()
    out = [ln if len(ln) <= max_width else ln[: max_width - 3] + "..." for ln in lines]
    if len(out) > max_lines:
        out = out[:max_lines] + [f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(out)


def _failed_cell(nb) -> dict | None:
    """Source, execution count and error of the cell where execution stopped."""
    for cell in nb.get("cells", []) if nb is not None else []:
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("papermill", {})
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors or meta.get("exception") or meta.get("status") == "running":
            info = {"cell": cell.get("execution_count"), "source": shorten(cell["source"])}
            if errors:
                info.update(ename=errors[0].get("ename"), evalue=errors[0].get("evalue"))
            return info
    return None


# --------------------------------------------------------------------------- kernel


def _kernel_manager_class(kernel_log: TextIO | None = None):
    """An AsyncKernelManager class that always launches ipykernel in *this* interpreter.

    Registered kernelspecs are not consulted: this works in a fresh venv without a
    ``python3`` kernelspec and cannot pick up another environment's. MPLBACKEND is set
    for the kernel (inline figures, no GUI), the kernel process's own stdout/stderr (its
    log, not cell output) go to `kernel_log` when given, and CurveZMQ transport
    encryption is used when the installed jupyter_client and pyzmq support it.
    """
    import zmq
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    encrypt = "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has(
        "curve"
    )

    class ThisInterpreterKernelSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            spec = get_kernel_dict()
            spec["env"] = {"MPLBACKEND": KERNEL_MPLBACKEND}
            return KernelSpec(resource_dir=RESOURCES, **spec)

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return ThisInterpreterKernelSpecs(data_dir=self.data_dir)

        if encrypt:

            @default("transport_encryption")
            def _transport_encryption_default(self):
                return "auto"

        async def start_kernel(self, **kw):
            if kernel_log is not None:
                kw.setdefault("stdout", kernel_log)
                kw.setdefault("stderr", kernel_log)
            return await super().start_kernel(**kw)

    return ThisInterpreterKernelManager


# --------------------------------------------------------------------------- runner


def _render_html(nb) -> str:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    return body


def run_notebook(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    scale: str = "default",
    parameters: dict | None = None,
    cell_timeout: int | None = None,
    log: TextIO | None = None,
) -> NotebookResult:
    """Execute one notebook source into `out_dir` and render its HTML; never raises for a
    failing notebook (the result says ``failed`` and carries the error)."""
    import jupytext
    import nbformat
    import papermill

    log = sys.stderr if log is None else log
    source = Path(source).resolve()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = source.stem
    params = {"SCALE": scale, "INTERACTIVE": False, **(parameters or {})}
    result = NotebookResult(name=stem, source=str(source), status="failed", duration_s=0.0,
                            parameters=params)
    final_ipynb, final_html = out_dir / f"{stem}.ipynb", out_dir / f"{stem}.html"
    running = out_dir / f".{stem}.running.ipynb"
    for stale in (final_ipynb, final_html, running, out_dir / f"{stem}.kernel.log"):
        stale.unlink(missing_ok=True)

    start = time.perf_counter()
    try:
        nb = jupytext.read(source)
        check_parameters(declared_parameters(nb), params)
    except Exception as err:  # reported per notebook
        result.error = {"cell": None, "source": None, "ename": type(err).__name__,
                        "evalue": str(err)}
        result.finished = _now()
        return result

    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    kernel_log = out_dir / f".{stem}.kernel.log"
    try:
        with open(kernel_log, "w", encoding="utf-8") as klog:
            papermill.execute_notebook(
                nb,
                str(running),
                parameters=params,
                kernel_name="python3",
                language="python",
                cwd=str(source.parent),
                execution_timeout=cell_timeout,
                progress_bar=bool(getattr(log, "isatty", lambda: False)()),
                log_output=False,
                kernel_manager_class=_kernel_manager_class(klog),
            )
        result.status = "ok"
    except papermill.PapermillExecutionError as err:
        result.error = {"cell": err.exec_count, "source": shorten(err.source),
                        "ename": err.ename, "evalue": err.evalue}
    except Exception as err:  # timeouts, dead kernels, ...
        first_line = (str(err).strip().splitlines() or [""])[0]
        result.error = {"cell": None, "source": None, "ename": type(err).__name__,
                        "evalue": first_line}
    result.duration_s = round(time.perf_counter() - start, 3)

    if result.status != "ok" and kernel_log.exists() and kernel_log.stat().st_size > 0:
        os.replace(kernel_log, out_dir / f"{stem}.kernel.log")
        result.kernel_log = f"{stem}.kernel.log"
    else:
        kernel_log.unlink(missing_ok=True)
    if running.exists():
        executed = nbformat.read(running, as_version=4)
        if result.error is not None and result.error["source"] is None:
            cell = _failed_cell(executed)
            if cell is not None:
                result.error.update(cell=cell["cell"], source=cell["source"])
        executed.metadata.setdefault("papermill", {})["input_path"] = str(source)
        result.headline = collect_headlines(executed)
        _atomic_write(final_ipynb, nbformat.writes(executed))
        running.unlink()
        result.ipynb = final_ipynb.name
        try:
            _atomic_write(final_html, _render_html(executed))
            result.html = final_html.name
        except Exception as err:
            print(f"  could not render {final_html.name}: {type(err).__name__}: {err}",
                  file=log)
    result.finished = _now()
    return result


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _print_failure(result: NotebookResult, out_dir: Path, log: TextIO) -> None:
    err = result.error or {}
    where = f"cell In [{err['cell']}]" if err.get("cell") is not None else "cell"
    if err.get("source"):
        print(f"  failing {where}:", file=log)
        for line in err["source"].splitlines():
            print(f"    {line}", file=log)
    print(f"  {err.get('ename')}: {err.get('evalue')}", file=log)
    if result.html:
        print(f"  partial report: {out_dir / result.html}", file=log)
    if result.kernel_log:
        print(f"  kernel log: {out_dir / result.kernel_log}", file=log)


def run_reports(
    sources,
    out_dir: str | os.PathLike = "reports",
    scale: str = "default",
    parameters: dict | None = None,
    cell_timeout: int | None = None,
    log: TextIO | None = None,
) -> list[NotebookResult]:
    """Run every notebook in `sources` in order, then write index.html and summary.json.

    A failing notebook does not stop the others. Progress and failures go to `log`
    (default stderr). Entries of an earlier run at the same scale in `out_dir` for
    notebooks not run now are kept in the index. Returns this run's results.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if cell_timeout is not None and (
        isinstance(cell_timeout, bool) or not isinstance(cell_timeout, Integral)
        or cell_timeout < 1
    ):
        raise ValueError(f"cell_timeout must be None or an integer >= 1 (s), got {cell_timeout!r}")
    parameters = dict(parameters or {})
    clash = [p for p in RUNNER_PARAMETERS if p in parameters]
    if clash:
        raise ValueError(f"parameters {clash} are set by the runner; use scale= / --scale")
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("no notebooks to run")
    log = sys.stderr if log is None else log
    out = Path(out_dir).resolve()
    results: list[NotebookResult] = []
    t0 = time.perf_counter()
    for i, src in enumerate(sources, 1):
        tag = f"[{i}/{len(sources)}] {src.stem}"
        print(f"{tag}: running (scale={scale}) ...", file=log, flush=True)
        res = run_notebook(src, out, scale, parameters, cell_timeout, log)
        print(f"{tag}: {res.status} in {res.duration_s:.1f} s "
              f"(elapsed {time.perf_counter() - t0:.1f} s)", file=log, flush=True)
        if res.status != "ok":
            _print_failure(res, out, log)
        results.append(res)
    write_index(results, out, scale)
    n_failed = sum(r.status != "ok" for r in results)
    print(f"{len(results)} notebook(s): {len(results) - n_failed} ok, {n_failed} failed "
          f"in {time.perf_counter() - t0:.1f} s; index: {out / 'index.html'}", file=log,
          flush=True)
    return results


# --------------------------------------------------------------------------- index


def write_index(results, out_dir: str | os.PathLike, scale: str) -> list[dict]:
    """Write summary.json and index.html for `results`, merged with the entries of an
    earlier summary.json at the same scale for other notebooks. Returns the entries."""
    out = Path(out_dir)
    entries = {r.name: asdict(r) for r in results}
    summary_path = out / "summary.json"
    if summary_path.exists():
        try:
            old = json.loads(summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if isinstance(old, dict) and old.get("scale") == scale:
            for entry in old.get("notebooks", []):
                if isinstance(entry, dict) and {"name", "status", "duration_s"} <= set(entry):
                    entries.setdefault(entry["name"], entry)
    rows = [entries[k] for k in sorted(entries)]
    summary = {"scale": scale, "generated": _now(), "notebooks": rows}
    _atomic_write(summary_path, json.dumps(summary, indent=2, default=repr) + "\n")
    _atomic_write(out / "index.html", render_index(rows, scale))
    return rows


_INDEX_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #176317; font-weight: bold; }
.failed { color: #b00020; font-weight: bold; }
td.num { text-align: right; }
ul { margin: 0; padding-left: 1.2em; }
pre { margin: 0; white-space: pre-wrap; }
"""


def render_index(entries, scale: str) -> str:
    """The index page: one row per notebook entry (dicts as in summary.json)."""
    esc = html.escape
    rows = []
    for e in entries:
        name = esc(e["name"])
        link = f'<a href="{esc(e["html"])}">{name}</a>' if e.get("html") else name
        if e.get("ipynb"):
            link += f' <small>(<a href="{esc(e["ipynb"])}">ipynb</a>)</small>'
        figures = "".join(
            f"<li>{esc(str(k))}: <b>{esc(format_value(v))}</b></li>"
            for k, v in (e.get("headline") or {}).items()
        )
        err = e.get("error")
        error = ""
        if err:
            where = f"In [{err['cell']}]: " if err.get("cell") is not None else ""
            message = f"{where}{err.get('ename')}: {err.get('evalue')}"
            error = f"<pre>{esc(message)}</pre>"
        status = esc(e["status"])
        rows.append(
            f"<tr><td>{link}</td><td class=\"{status}\">{status}</td>"
            f"<td class=\"num\">{e['duration_s']:.1f}</td>"
            f"<td>{'<ul>' + figures + '</ul>' if figures else ''}</td><td>{error}</td></tr>"
        )
    n_ok = sum(e["status"] == "ok" for e in entries)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>kdlib report ({esc(scale)})</title><style>{_INDEX_CSS}</style></head><body>\n"
        f"<h1>kdlib report: scale {esc(scale)}</h1>\n"
        f"<p>{n_ok} of {len(entries)} notebooks ok. Generated {esc(_now())}.</p>\n"
        "<table><thead><tr><th>notebook</th><th>status</th><th>duration (s)</th>"
        "<th>headline figures</th><th>error</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n</body></html>\n"
    )


__all__ = [
    "HEADLINE_MIMETYPE",
    "NotebookResult",
    "check_parameters",
    "collect_headlines",
    "declared_parameters",
    "find_notebooks",
    "format_value",
    "headline",
    "headline_bundle",
    "parse_parameter",
    "render_index",
    "run_notebook",
    "run_reports",
    "write_index",
]
