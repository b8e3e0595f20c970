"""Execute the notebooks and write HTML reports: the runner behind ``kdlib report``.

Notebooks are jupytext percent-format ``.py`` files with exactly one cell tagged
``parameters`` (plain assignments, including ``SCALE`` and ``INTERACTIVE``). The runner
first checks every selected notebook (parameters cell, ``-p`` overrides, output folder)
and runs nothing if any check fails. It then executes each with papermill in a fresh
kernel of the current interpreter (cwd = the notebook's folder, ``SCALE=<scale>``,
``INTERACTIVE=False`` and any overrides injected), up to ``jobs`` notebooks at once
(``--jobs``; kdlib.report_jobs: "auto" = min(CPU cores, notebooks) at the smoke and
default scales, 1 at the paper scale), and writes into the output folder:

    <stem>.ipynb, <stem>.html     the report, replaced only by a complete new one
    <stem>.failed.ipynb/.html     a failed, timed-out or stopped run's partial report,
                                  beside the last good one (removed by the next success)
    <stem>.failed.kernel.log      the kernel process's own log of that run, if any
    <stem>.key.png                thumbnail of the notebook's kdlib.headline.key_figure
    <stem>.results/               the CSV/JSONL files of kdlib.outputs (KDLIB_RESULTS_DIR
                                  points the kernel at a staging folder; replaced whole)
    index.html, summary.json      every notebook (kdlib.report_index), rewritten after
                                  each notebook and when the run stops

``dry_run=True`` / ``select=TEXT`` (``--dry-run`` / ``--select``) inject DRY_RUN=True /
SELECT=TEXT; every selected notebook must declare them. While a notebook runs, a line
shows its cell (i of n, heading, first line) and its tqdm bars (kdlib.report_progress):
one line per running notebook, a block rewritten in place on a terminal, else printed at
each cell change and at most every KDLIB_PROGRESS_INTERVAL_S seconds (default 10). The
HTML reports load nothing from the network (nbconvert's lab template without its CDN
scripts).

Each notebook runs under a time limit (NOTEBOOK_TIMEOUT_S per scale, or
``notebook_timeout``). SIGINT and SIGTERM stop the run cleanly: no notebook starts after
it, every running kernel is shut down, their partial reports kept, the index written and
`StopRequested` raised (``kdlib report`` exits with 128 + the signal number).

Notebooks running at once share the teacher cache (an fcntl lock per teacher: one trains
it, the others wait and load it), the student store (atomic files keyed by everything
that determines a student: at worst two notebooks both train one and write it in turn)
and nothing else (a sweep store per experiment). Each runs in a worker thread
of the runner; papermill's ``cwd=`` (a process-wide chdir) is not used, the kernel is
started in the notebook's folder instead.

The notebook-facing `headline` helpers live in kdlib.headline and are re-exported here.
Heavy imports (papermill, nbconvert, jupytext) happen inside the functions.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from numbers import Integral, Real
from pathlib import Path
from typing import Any, TextIO

from kdlib.headline import (
    HEADLINE_MIMETYPE,
    MAX_STRING_FIGURE,
    collect_datasets,
    collect_headlines,
    collect_key_figure,
    collect_skipped,
    collect_verdicts,
    format_value,
    headline,
    headline_bundle,
)
from kdlib.outputs import RESULTS_ENV, list_results
from kdlib.presets import SCALES
from kdlib.report_index import NotebookResult, now, render_index, write_file, write_index
from kdlib.report_kernel import (
    KERNEL_MPLBACKEND,
    Limits,
    Stopper,
    StopRequested,
    kernel_manager_class,
    kill_kernels,
    signal_name,
)
from kdlib.report_progress import KERNEL_INFO_ENV, PROGRESS_ENV, ProgressLine

RUNNER_PARAMETERS = ("SCALE", "INTERACTIVE")
# Parameters the runner injects only when asked, with the flag that asks: a notebook run
# with the flag must declare the parameter (``DRY_RUN = False``, ``SELECT = ""``).
FLAG_PARAMETERS = {"DRY_RUN": "--dry-run", "SELECT": "--select"}
NOTEBOOK_PATTERN = "[0-9][0-9]_*.py"
# Default time limit of one notebook, in seconds, per scale. Smoke notebooks take seconds
# and default ones minutes (the slowest about 3 min on 2 CPU cores), so 10 min and 1 h only
# stop hung ones. Paper-scale notebooks take GPU hours to days; 7 days still stops a hung
# one, and their sweeps resume from the stored cells when run again.
NOTEBOOK_TIMEOUT_S = {"smoke": 600, "default": 3600, "paper": 7 * 24 * 3600}
FAILED_SUFFIX = ".failed"
RESULTS_SUFFIX = ".results"
THUMBNAIL_SUFFIX = ".key.png"
THUMBNAIL_WIDTH = 360
PROGRESS_EXTENSION = "kdlib.report_progress"
# Seconds the runner waits, after SIGINT/SIGTERM, for the notebooks whose kernels it killed
# to write their partial reports.
STOP_GRACE_S = 120.0

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


# --------------------------------------------------------------------------- validation


def resolve_notebook_timeout(notebook_timeout, scale: str) -> float | None:
    """Seconds one notebook may run: ``"scale"`` -> NOTEBOOK_TIMEOUT_S[scale]; None -> no
    limit; a number > 0 -> itself. ValueError for anything else."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if isinstance(notebook_timeout, str) and notebook_timeout == "scale":
        return float(NOTEBOOK_TIMEOUT_S[scale])
    if notebook_timeout is None:
        return None
    if (isinstance(notebook_timeout, bool) or not isinstance(notebook_timeout, Real)
            or not notebook_timeout > 0 or notebook_timeout != notebook_timeout):
        raise ValueError("notebook_timeout must be 'scale', None (no limit) or a number of "
                         f"seconds > 0, got {notebook_timeout!r}")
    return float(notebook_timeout)


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The output folder as an absolute path; ValueError if it, or a folder above it, is
    an existing file. Creates nothing."""
    if not isinstance(out_dir, str | os.PathLike) or not str(out_dir):
        raise ValueError(f"out_dir must be a folder path, got {out_dir!r}")
    out = Path(out_dir).resolve()
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                where = "" if path == out else f" ({str(path)!r} above it is a file)"
                raise ValueError(f"output folder {str(out_dir)!r} is not a folder{where}; "
                                 "give a folder (created if missing)")
            break
    return out


def flag_parameters(dry_run: bool = False, select: str | None = None) -> dict:
    """The parameters ``--dry-run`` and ``--select`` inject: {"DRY_RUN": True} and
    {"SELECT": text}; {} for neither. `select` is one line of text (the notebook parses it)."""
    if not isinstance(dry_run, bool):
        raise ValueError(f"dry_run must be True or False, got {dry_run!r}")
    out: dict[str, Any] = {"DRY_RUN": True} if dry_run else {}
    if select is not None:
        if not isinstance(select, str) or "\n" in select or not select.strip():
            raise ValueError("select must be a non-empty one-line string such as "
                             f"'table=6 seed=0', got {select!r}")
        out["SELECT"] = select.strip()
    return out


def check_run(sources, out_dir="reports", scale: str = "default", parameters=None,
              cell_timeout=None, notebook_timeout="scale", dry_run: bool = False,
              select: str | None = None) -> list[Path]:
    """Check a whole run before anything executes; returns the sources as Paths.

    Checks the scale, the limits, the output folder, that `parameters` sets none of
    RUNNER_PARAMETERS or FLAG_PARAMETERS, and that every notebook reads, has one
    parameters cell declaring every name in `parameters` (and DRY_RUN / SELECT when
    `dry_run` / `select` ask for them), and has a stem no other selected notebook has.
    Raises one ValueError naming every problem.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    if cell_timeout is not None and (
        isinstance(cell_timeout, bool) or not isinstance(cell_timeout, Integral)
        or cell_timeout < 1
    ):
        raise ValueError(f"cell_timeout must be None or an integer >= 1 (s), got {cell_timeout!r}")
    resolve_notebook_timeout(notebook_timeout, scale)
    parameters = dict(parameters or {})
    clash = [p for p in RUNNER_PARAMETERS if p in parameters]
    if clash:
        raise ValueError(f"parameters {clash} are set by the runner; use scale= / --scale")
    flagged = [p for p in FLAG_PARAMETERS if p in parameters]
    if flagged:
        raise ValueError(f"parameters {flagged} are set by the runner's flags: use "
                         + " / ".join(FLAG_PARAMETERS[p] for p in flagged)
                         + " (dry_run= / select=)")
    flags = flag_parameters(dry_run, select)
    progress_interval_s()
    if isinstance(sources, str | os.PathLike):
        sources = [sources]
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("no notebooks to run")
    check_out_dir(out_dir)
    import jupytext

    params = {"SCALE": scale, "INTERACTIVE": False, **parameters}
    problems, stems = [], {}
    for src in sources:
        if src.stem in stems:
            problems.append(f"{src}: same name as {stems[src.stem]} (their reports would "
                            "overwrite each other)")
            continue
        stems[src.stem] = src
        try:
            declared = declared_parameters(jupytext.read(src))
            missing = [p for p in flags if p not in declared]
            if missing:
                raise ValueError(
                    " and ".join(f"{FLAG_PARAMETERS[p]} needs a parameter {p} in its "
                                 "parameters cell" for p in missing)
                    + f"; it declares {declared}")
            check_parameters(declared, params)
        except Exception as err:  # unreadable file, bad parameters cell, undeclared -p
            problems.append(f"{src.stem}: {err}")
    if problems:
        raise ValueError("nothing was run: " + "; ".join(problems))
    return sources


# --------------------------------------------------------------------------- one notebook


def shorten(source: str, max_lines: int = 8, max_width: int = 120) -> str:
    """First `max_lines` lines of `source`, each cut to `max_width` characters."""
    lines = source.strip("\n").splitlines()
    out = [ln if len(ln) <= max_width else ln[: max_width - 3] + "..." for ln in lines]
    if len(out) > max_lines:
        out = out[:max_lines] + [f"... ({len(lines) - max_lines} more lines)"]
    return "\n".join(out)


def _failed_cell(nb) -> dict | None:
    """Source, execution count and error of the cell where execution stopped: the first
    code cell with an error (or still marked running), else the last one started."""
    started = None
    for cell in nb.get("cells", []) if nb is not None else []:
        if cell.get("cell_type") != "code":
            continue
        meta = cell.get("metadata", {}).get("papermill", {})
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        info = {"cell": cell.get("execution_count"), "source": shorten(cell["source"])}
        if errors or meta.get("exception") or meta.get("status") == "running":
            if errors:
                info.update(ename=errors[0].get("ename"), evalue=errors[0].get("evalue"))
            return info
        if meta.get("start_time"):
            started = info
    return started


# nbconvert's lab template minus everything it fetches from a CDN (require.js, MathJax,
# mermaid, widget manager): the report opens from the file system without a network.
# The notebooks hold no LaTeX or widgets, so nothing is lost.
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _render_html(nb) -> str:
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True,
                            extra_loaders=[jinja2.DictLoader({"kdlib_offline.html.j2":
                                                              OFFLINE_TEMPLATE})],
                            template_file="kdlib_offline.html.j2")
    body, _ = exporter.from_notebook_node(nb)
    return body


def write_thumbnail(png: bytes, path, width: int = THUMBNAIL_WIDTH) -> Path:
    """Write `png` scaled down to `width` pixels wide (never up) as a PNG at `path`."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        img = img.convert("RGBA") if img.mode not in ("RGB", "RGBA") else img.copy()
    if img.width > width:
        img = img.resize((width, max(1, round(img.height * width / img.width))),
                         Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return write_file(path, buf.getvalue())


def _partial_banner(result: NotebookResult) -> str:
    """Markdown put first in a partial report, saying why it is partial."""
    err = result.error or {}
    where = f" in cell In [{err['cell']}]" if err.get("cell") is not None else ""
    text = {
        "timeout": f"the notebook ran past its time limit and was stopped{where}",
        "stopped": f"the run was stopped{where}",
    }.get(result.status, f"the notebook failed{where}")
    lines = [f"**Partial report: {text}.**", "", f"`{err.get('ename')}: {err.get('evalue')}`"]
    if result.last_ok:
        kept = result.last_ok.get("html") or result.last_ok.get("ipynb")
        lines += ["", f"The last good report, `{kept}`, is kept beside this one."]
    return "\n".join(lines)


def _finish(result: NotebookResult, executed, out_dir: Path, stem: str, log: TextIO) -> None:
    """Write the executed notebook: the report itself when ok, else ``<stem>.failed.*``
    beside the last good one."""
    import nbformat

    final = {"ipynb": out_dir / f"{stem}.ipynb", "html": out_dir / f"{stem}.html"}
    failed = {k: out_dir / f"{stem}{FAILED_SUFFIX}.{k}" for k in final}
    ok = result.status == "ok"
    if not ok:
        kept = {k: p.name for k, p in final.items() if p.exists()}
        result.last_ok = kept or None
        banner = nbformat.v4.new_markdown_cell(
            _partial_banner(result), metadata={"tags": ["kdlib-partial-report"]})
        executed.cells.insert(0, banner)
    target = final if ok else failed
    text = nbformat.writes(executed)
    try:
        page = _render_html(executed)
    except Exception as err:  # the notebook is still written
        print(f"  could not render {target['html'].name}: {type(err).__name__}: {err}",
              file=log)
        page = None
    write_file(target["ipynb"], text)
    result.ipynb = target["ipynb"].name
    if page is not None:
        write_file(target["html"], page)
        result.html = target["html"].name
    else:  # never leave an HTML page of another run beside this notebook
        target["html"].unlink(missing_ok=True)
    thumb = out_dir / f"{stem}{'' if ok else FAILED_SUFFIX}{THUMBNAIL_SUFFIX}"
    key = collect_key_figure(executed)
    thumb.unlink(missing_ok=True)
    if key is not None:
        try:
            write_thumbnail(key["png"], thumb)
            result.key_figure = {"thumbnail": thumb.name, "anchor": key["anchor"],
                                 "title": key["title"]}
        except Exception as err:  # a broken image must not lose the report
            print(f"  could not write {thumb.name}: {type(err).__name__}: {err}", file=log)
    if ok:  # a superseded failure's files would only mislead
        for path in (*failed.values(), out_dir / f"{stem}{FAILED_SUFFIX}.kernel.log",
                     out_dir / f"{stem}{FAILED_SUFFIX}{THUMBNAIL_SUFFIX}",
                     out_dir / f"{stem}.kernel.log"):
            path.unlink(missing_ok=True)


def progress_interval_s() -> float:
    """Seconds between progress lines in a log (not a terminal): KDLIB_PROGRESS_INTERVAL_S,
    default 10; a cell change always prints a line."""
    text = os.environ.get("KDLIB_PROGRESS_INTERVAL_S", "").strip()
    try:
        value = float(text) if text else 10.0
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise ValueError(f"KDLIB_PROGRESS_INTERVAL_S must be a number of seconds > 0, "
                         f"got {text!r}")
    return value


def _collect_marks(result: NotebookResult, executed) -> None:
    """Headline figures, verdict lines, skipped tables and data sets of the notebook."""
    result.headline = collect_headlines(executed)
    result.verdicts = collect_verdicts(executed)
    result.skipped = collect_skipped(executed)
    result.datasets = collect_datasets(executed)


def _move_results(staging: Path, out_dir: Path, stem: str, ok: bool) -> list[str]:
    """Move the results the notebook saved into ``<stem>.results/`` (ok) or
    ``<stem>.failed.results/``; returns their paths relative to `out_dir` (the folder
    replaces the previous one whole; nothing saved: no folder)."""
    import shutil

    target = out_dir / f"{stem}{RESULTS_SUFFIX}" if ok else \
        out_dir / f"{stem}{FAILED_SUFFIX}{RESULTS_SUFFIX}"
    names = list_results(staging)
    if ok:  # a superseded failure's results would only mislead
        shutil.rmtree(out_dir / f"{stem}{FAILED_SUFFIX}{RESULTS_SUFFIX}", ignore_errors=True)
    if not names:
        shutil.rmtree(staging, ignore_errors=True)
        if ok:
            shutil.rmtree(target, ignore_errors=True)
        return []
    old = out_dir / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return [f"{target.name}/{n}" for n in names]


def _kernel_info(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _execute(source: Path, out_dir: Path, scale: str, parameters: dict,
             cell_timeout: int | None, notebook_timeout_s: float | None, log: TextIO,
             stopper: Stopper, tag: str | None = None, t0: float | None = None,
             managers: list | None = None, interruptible: bool = True,
             extra_env: dict | None = None) -> NotebookResult:
    """Run one notebook. `interruptible`: `stopper`'s signal raises StopRequested in here
    (the main thread); False (a worker thread): the caller kills the kernels in
    `managers` and a run cut short while `stopper.signum` is set counts as stopped.
    `extra_env`: more environment variables for the kernel."""
    import contextlib
    import logging
    import shutil

    import jupytext
    import nbformat
    import papermill

    # papermill re-parses the parameters cell to infer types and warns about lines it
    # cannot read (comments with quotes); the runner has checked the cell itself
    logging.getLogger("papermill.translators").setLevel(logging.ERROR)
    stem = source.stem
    tag = tag or stem
    params = {"SCALE": scale, "INTERACTIVE": False, **parameters}
    result = NotebookResult(name=stem, source=str(source), status="failed", duration_s=0.0,
                            parameters=params, notebook_timeout_s=notebook_timeout_s)
    start = time.perf_counter()
    t0 = start if t0 is None else t0
    try:
        nb = jupytext.read(source)
        check_parameters(declared_parameters(nb), params)
    except Exception as err:  # reported per notebook; no file is touched
        result.error = {"cell": None, "source": None, "ename": type(err).__name__,
                        "evalue": str(err)}
        result.finished = now()
        print(f"{tag}: failed ({type(err).__name__}: {err})", file=log, flush=True)
        return result

    out_dir.mkdir(parents=True, exist_ok=True)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    running = out_dir / f".{stem}.running.ipynb"
    kernel_log = out_dir / f".{stem}.kernel.log"
    staging = out_dir / f".{stem}.running{RESULTS_SUFFIX}"
    bars = out_dir / f".{stem}.progress"
    info = out_dir / f".{stem}.kernel-info.json"
    for path in (running, bars, info):  # left by a run that was killed outright
        path.unlink(missing_ok=True)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    env = {**dict(extra_env or {}), RESULTS_ENV: str(staging), PROGRESS_ENV: str(bars),
           KERNEL_INFO_ENV: str(info)}
    n_cells = sum(c.get("cell_type") == "code" and bool(c.get("source", "").strip())
                  for c in nb.cells) + 1  # + papermill's injected parameters cell
    progress = ProgressLine(log, tag, n_cells, bars,
                            interval_s=progress_interval_s())
    limits = Limits(cell_timeout, notebook_timeout_s)
    managers = [] if managers is None else managers
    region = stopper.executing() if interruptible else contextlib.nullcontext()
    interrupt, entered = None, False
    try:
        with open(kernel_log, "w", encoding="utf-8") as klog, region:
            entered = True
            if not interruptible and stopper.signum is not None:
                raise StopRequested(stopper.signum)
            progress.start()
            papermill.execute_notebook(
                nb,
                str(running),
                parameters=params,
                kernel_name="python3",
                language="python",
                cwd=None,  # the kernel starts in source.parent (kernel_manager_class)
                timeout_func=limits,
                progress_bar=False,
                log_output=False,
                on_cell_start=progress.on_cell_start,
                kernel_manager_class=kernel_manager_class(
                    klog, managers, env=env, extensions=[PROGRESS_EXTENSION],
                    cwd=source.parent),
            )
        result.status = "ok"
    except papermill.PapermillExecutionError as err:
        result.error = {"cell": err.exec_count, "source": shorten(err.source),
                        "ename": err.ename, "evalue": err.evalue}
    except (StopRequested, KeyboardInterrupt) as err:
        interrupt = err
        name = signal_name(err.signum) if isinstance(err, StopRequested) else "SIGINT"
        result.status = "stopped"
        result.error = _stopped_error(name, time.perf_counter() - start)
    except Exception as err:  # timeouts, dead kernels, ...
        if stopper.signum is not None:  # its kernel was killed by the runner's stop
            result.status = "stopped"
            result.error = _stopped_error(signal_name(stopper.signum),
                                          time.perf_counter() - start)
        elif isinstance(err, TimeoutError) and limits.binding == "notebook" and limits.expired():
            result.status = "timeout"
            result.error = {"cell": None, "source": None, "ename": "NotebookTimeout",
                            "evalue": f"ran past its time limit of {notebook_timeout_s:g} s "
                                      "(--notebook-timeout) and was stopped"}
        else:
            first_line = (str(err).strip().splitlines() or [""])[0]
            result.error = {"cell": None, "source": None, "ename": type(err).__name__,
                            "evalue": first_line}
    finally:
        kill_kernels(managers)
        result.duration_s = round(time.perf_counter() - start, 3)
        elapsed = f" (elapsed {time.perf_counter() - t0:.1f} s)" if t0 != start else ""
        progress.finish(f"{tag}: {result.status} in {result.duration_s:.1f} s{elapsed}")

    failed_log = out_dir / f"{stem}{FAILED_SUFFIX}.kernel.log"
    if result.status != "ok" and kernel_log.exists() and kernel_log.stat().st_size > 0:
        os.replace(kernel_log, failed_log)
        result.kernel_log = failed_log.name
    else:
        kernel_log.unlink(missing_ok=True)
    result.kernel = _kernel_info(info)
    bars.unlink(missing_ok=True)
    info.unlink(missing_ok=True)
    executed = None
    if running.exists():
        try:
            executed = nbformat.read(running, as_version=4)
        except Exception as err:  # cut short while papermill wrote it
            print(f"  could not read the partial notebook: {type(err).__name__}: {err}",
                  file=log)
    if executed is None and result.status != "ok" and entered:
        executed = nb  # the source as given, so that the failure is still on record
    if executed is not None:
        if result.error is not None and result.error["source"] is None:
            cell = _failed_cell(executed)
            if cell is not None:
                result.error.update(cell=cell["cell"], source=cell["source"])
        executed.metadata.setdefault("papermill", {})["input_path"] = str(source)
        _collect_marks(result, executed)
        _finish(result, executed, out_dir, stem, log)
    if staging.exists():
        result.results = _move_results(staging, out_dir, stem, result.status == "ok")
    running.unlink(missing_ok=True)
    result.finished = now()
    if isinstance(interrupt, KeyboardInterrupt):  # not under run_reports: pass Ctrl-C on
        raise interrupt
    return result


def _stopped_error(signal: str, seconds: float) -> dict:
    return {"cell": None, "source": None, "ename": "Stopped",
            "evalue": f"stopped by {signal} after {seconds:.1f} s; the kernel was shut down"}


def run_notebook(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    scale: str = "default",
    parameters: dict | None = None,
    cell_timeout: int | None = None,
    log: TextIO | None = None,
    notebook_timeout="scale",
    dry_run: bool = False,
    select: str | None = None,
) -> NotebookResult:
    """Execute one notebook source into `out_dir` and render its HTML; never raises for a
    failing notebook (the result says ``failed``/``timeout`` and carries the error).

    `notebook_timeout`: seconds the notebook's cells may run in all, from the first
    cell's start ("scale": NOTEBOOK_TIMEOUT_S of `scale`; None: no limit). The report
    ``<stem>.ipynb``/``.html`` is replaced only when the notebook succeeds; otherwise
    ``<stem>.failed.*`` is written beside it. A KeyboardInterrupt shuts the kernel down,
    keeps the partial report and is re-raised. `dry_run` / `select` inject DRY_RUN=True /
    SELECT=select (the notebook must declare them).
    """
    timeout_s = resolve_notebook_timeout(notebook_timeout, scale)
    if cell_timeout is not None and (
        isinstance(cell_timeout, bool) or not isinstance(cell_timeout, Integral)
        or cell_timeout < 1
    ):
        raise ValueError(f"cell_timeout must be None or an integer >= 1 (s), got {cell_timeout!r}")
    out = check_out_dir(out_dir)
    log = sys.stderr if log is None else log
    parameters = dict(parameters or {})
    flagged = [p for p in FLAG_PARAMETERS if p in parameters]
    if flagged:
        raise ValueError(f"parameters {flagged} are set by dry_run= / select=")
    parameters.update(flag_parameters(dry_run, select))
    return _execute(Path(source).resolve(), out, scale, parameters, cell_timeout,
                    timeout_s, log, Stopper())


# --------------------------------------------------------------------------- many notebooks


def git_commit(folder=None) -> str | None:
    """The short commit of the git work tree holding `folder` (default: kdlib's source),
    with " (modified)" when tracked files differ from it; None outside git."""
    import subprocess

    folder = Path(folder or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "")


def run_info(dry_run: bool = False, select: str | None = None) -> dict:
    """What the index says about the run as a whole: kdlib version and git commit, the
    dry-run flag and the selection."""
    from kdlib import __version__

    return {"dry_run": bool(dry_run), "select": select, "kdlib_version": __version__,
            "git_commit": git_commit()}



def _print_failure(result: NotebookResult, out_dir: Path, log: TextIO) -> None:
    """The failure's details under its final line, in one write (notebooks running at
    the same time do not cut into it)."""
    err = result.error or {}
    where = f"cell In [{err['cell']}]" if err.get("cell") is not None else "cell"
    lines = []
    if err.get("source"):
        lines.append(f"  {'failing' if result.status == 'failed' else 'running'} {where}:")
        lines += [f"    {line}" for line in err["source"].splitlines()]
    lines.append(f"  {err.get('ename')}: {err.get('evalue')}")
    if result.html:
        lines.append(f"  partial report: {out_dir / result.html}")
    if result.last_ok:
        kept = result.last_ok.get("html") or result.last_ok.get("ipynb")
        lines.append(f"  last good report kept: {out_dir / kept}")
    if result.kernel_log:
        lines.append(f"  kernel log: {out_dir / result.kernel_log}")
    print("\n".join(lines), file=log, flush=True)


def run_reports(
    sources,
    out_dir: str | os.PathLike = "reports",
    scale: str = "default",
    parameters: dict | None = None,
    cell_timeout: int | None = None,
    log: TextIO | None = None,
    notebook_timeout="scale",
    dry_run: bool = False,
    select: str | None = None,
    jobs="auto",
) -> list[NotebookResult]:
    """Run every notebook in `sources`, up to `jobs` at once, each in its own kernel;
    index.html and summary.json are written after each one finishes (rows in notebook
    order whatever the finishing order). Returns this run's results in `sources` order.

    `jobs`: an integer >= 1 or "auto" (kdlib.report_jobs.resolve_jobs: min(CPU cores,
    notebooks) at the smoke and default scales, 1 at the paper scale). With more than one
    job each kernel gets OMP/MKL threads = cores // jobs unless the environment sets them.
    Everything is checked first (`check_run`, ValueError): nothing runs and no file is
    touched if any notebook would fail its checks. A failing notebook does not stop the
    others. SIGINT/SIGTERM (main thread) stop the run cleanly: no new notebook starts,
    every running kernel is shut down and its partial report kept, the index is written
    with the run marked stopped, and StopRequested (signum, results) is raised. Progress
    and failures go to `log` (default stderr): one line per running notebook. Entries of
    an earlier run at the same scale in `out_dir` for notebooks not run now are kept in
    the index. summary.json's "run" records "jobs", "elapsed_s" (the run's wall time) and
    "notebooks_s" (this run's notebook durations added up).
    """
    import queue
    import threading

    from kdlib.report_jobs import kernel_thread_env, resolve_jobs
    from kdlib.report_progress import ProgressBoard

    sources = check_run(sources, out_dir, scale, parameters, cell_timeout, notebook_timeout,
                        dry_run=dry_run, select=select)
    sources = [s.resolve() for s in sources]
    n_jobs = resolve_jobs(jobs, scale, len(sources), dry_run=dry_run)
    timeout_s = resolve_notebook_timeout(notebook_timeout, scale)
    parameters = {**dict(parameters or {}), **flag_parameters(dry_run, select)}
    about = {**run_info(dry_run, select), "jobs": n_jobs}
    board = ProgressBoard(sys.stderr if log is None else log)
    out = check_out_dir(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    thread_env = kernel_thread_env(n_jobs)
    slots: list[NotebookResult | None] = [None] * len(sources)
    finished: queue.Queue = queue.Queue()
    running: dict[int, list] = {}  # index -> the kernel managers of that notebook
    stopper = Stopper()
    stopper.install()
    t0 = time.perf_counter()
    what = f"scale={scale}" + (", dry run" if dry_run else "") + (
        f", select {select!r}" if select else "") + f", {n_jobs} at a time"
    print(f"kdlib report: {len(sources)} notebook(s) ({what}) into {out}", file=board,
          flush=True)

    def work(i: int, src: Path, managers: list) -> None:
        res = None
        try:
            res = _execute(src, out, scale, parameters, cell_timeout, timeout_s,
                           board, stopper, tag=f"[{i + 1}/{len(sources)}] {src.stem}", t0=t0,
                           managers=managers, interruptible=False, extra_env=thread_env)
            if res.status != "ok":
                _print_failure(res, out, board)
        except BaseException as err:  # noqa: BLE001 - a runner bug must not hang the run
            res = NotebookResult(
                name=src.stem, source=str(src), status="failed", duration_s=0.0,
                parameters={"SCALE": scale, "INTERACTIVE": False, **parameters},
                error={"cell": None, "source": None, "ename": type(err).__name__,
                       "evalue": f"the runner failed: {err}"}, finished=now(),
                notebook_timeout_s=timeout_s)
            print(f"[{i + 1}/{len(sources)}] {src.stem}: failed in the runner "
                  f"({type(err).__name__}: {err})", file=board, flush=True)
        finally:
            finished.put((i, res))

    def run_state(state: str, **extra) -> dict:
        done = [r for r in slots if r is not None]
        return {"state": state, "done": len(done), "selected": len(sources), **about,
                "elapsed_s": round(time.perf_counter() - t0, 1),
                "notebooks_s": round(sum(r.duration_s for r in done), 1), **extra}

    pending = list(range(len(sources)))
    stop_t = None
    try:  # once stopped, only the running notebooks are waited for, not the pending ones
        while running or (pending and stopper.signum is None):
            while pending and len(running) < n_jobs and stopper.signum is None:
                i = pending.pop(0)
                running[i] = []
                threading.Thread(target=work, args=(i, sources[i], running[i]),
                                 name=f"kdlib-report-{sources[i].stem}", daemon=True).start()
            if stopper.signum is not None:  # the kernels die; their threads then finish
                stop_t = time.perf_counter() if stop_t is None else stop_t
                for managers in running.values():
                    kill_kernels(list(managers), wait_s=2.0)
                if time.perf_counter() - stop_t > STOP_GRACE_S:
                    for i in list(running):  # a thread that never came back
                        running.pop(i)
                        slots[i] = NotebookResult(
                            name=sources[i].stem, source=str(sources[i]), status="stopped",
                            duration_s=0.0, finished=now(), notebook_timeout_s=timeout_s,
                            error=_stopped_error(signal_name(stopper.signum),
                                                 time.perf_counter() - t0))
                    break
            try:
                i, res = finished.get(timeout=0.2)
            except queue.Empty:
                continue
            running.pop(i, None)
            slots[i] = res
            if pending or running:
                write_index([r for r in slots if r is not None], out, scale,
                            run_state("running"))
        results = [r for r in slots if r is not None]
        if stopper.signum is not None:
            name = signal_name(stopper.signum)
            not_run = [s.stem for s, r in zip(sources, slots) if r is None]
            write_index(results, out, scale, run_state("stopped", signal=name,
                                                      not_run=not_run))
            print(f"stopped by {name} after {len(results)} of {len(sources)} notebook(s) "
                  f"started; index: {out / 'index.html'}", file=board, flush=True)
            raise StopRequested(stopper.signum, results)
        state = run_state("finished")
        write_index(results, out, scale, state)
    finally:
        stopper.restore()
        for managers in running.values():  # the runner itself failed: leave no kernel
            kill_kernels(list(managers), wait_s=2.0)
    n_failed = sum(r.status != "ok" for r in results)
    print(f"{len(results)} notebook(s): {len(results) - n_failed} ok, {n_failed} failed "
          f"in {state['elapsed_s']:.1f} s ({n_jobs} at a time; the notebooks' durations add "
          f"up to {state['notebooks_s']:.1f} s); index: {out / 'index.html'}", file=board,
          flush=True)
    return results


__all__ = [
    "FAILED_SUFFIX",
    "HEADLINE_MIMETYPE",
    "KERNEL_MPLBACKEND",
    "MAX_STRING_FIGURE",
    "NOTEBOOK_TIMEOUT_S",
    "NotebookResult",
    "StopRequested",
    "check_out_dir",
    "check_parameters",
    "check_run",
    "collect_headlines",
    "declared_parameters",
    "find_notebooks",
    "format_value",
    "headline",
    "headline_bundle",
    "parse_parameter",
    "render_index",
    "resolve_notebook_timeout",
    "run_notebook",
    "run_reports",
    "write_index",
]
