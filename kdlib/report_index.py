"""The report index: one `NotebookResult` per notebook, written as summary.json + index.html.

`write_index` is the one place both files are written (atomically, after every notebook
and when a run stops); `render_index` turns the entries into the HTML page. Entries of an
earlier run at the same scale for notebooks not run now are kept.

summary.json::

    {"scale": "smoke", "generated": "<ISO time>",
     "run": {"state": "running" | "finished" | "stopped", "dry_run", "select",
             "kdlib_version", "git_commit", "jobs" (notebooks at once),
             "elapsed_s" (the run's wall time), "notebooks_s" (this run's notebook
             durations added up), ...},
     "notebooks": [<NotebookResult as a dict>, ...]}      # sorted by name

Each entry carries its headline figures, verdict lines, skipped tables, data sets, result
files (paths relative to the folder), key-figure thumbnail and the kernel's device and
torch thread count.
"""

from __future__ import annotations

import datetime
import html
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdlib.atomic import atomic_write
from kdlib.headline import format_value

STATUSES = ("ok", "failed", "timeout", "stopped")
RUN_STATES = ("running", "finished", "stopped")


@dataclass
class NotebookResult:
    """Outcome of one notebook. Paths are relative to the output folder (None: not written).

    status: "ok"; "failed" (a cell raised, or the kernel died); "timeout" (the notebook
    ran past its time limit); "stopped" (SIGINT/SIGTERM). For any status but "ok",
    `ipynb`/`html` are the partial report ``<name>.failed.*`` and `last_ok` names the
    previous good report ``<name>.ipynb``/``.html`` kept beside it, if there is one.
    """

    name: str
    source: str
    status: str
    duration_s: float
    parameters: dict = field(default_factory=dict)
    headline: dict = field(default_factory=dict)
    ipynb: str | None = None
    html: str | None = None
    error: dict | None = None  # {"cell", "source", "ename", "evalue"}
    kernel_log: str | None = None  # the kernel process's own log, kept when it failed
    last_ok: dict | None = None  # {"ipynb", "html"} of the previous good report
    notebook_timeout_s: float | None = None  # the limit it ran under (None: no limit)
    finished: str = ""
    verdicts: list = field(default_factory=list)  # verdict lines of kdlib.claims.show
    skipped: list = field(default_factory=list)  # [{"table", "reason"}] (headline.skipped)
    datasets: list = field(default_factory=list)  # data set names (headline.datasets)
    results: list = field(default_factory=list)  # "<name>.results/x.csv" (kdlib.outputs)
    key_figure: dict | None = None  # {"thumbnail", "anchor", "title"} (headline.key_figure)
    kernel: dict | None = None  # {"device", "torch_threads"} the kernel reported


def write_file(path, data: str | bytes) -> Path:
    """`kdlib.atomic.atomic_write` (which gives the mode a plain ``open`` would: reports are
    meant to be read by others)."""
    return atomic_write(path, data)


def now() -> str:
    """The local time as an ISO 8601 string with offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _old_entries(summary_path: Path, scale: str, dry_run: bool = False) -> list[dict]:
    try:
        old = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or old.get("scale") != scale:
        return []
    if bool((old.get("run") or {}).get("dry_run")) != dry_run:
        return []
    return [e for e in old.get("notebooks", [])
            if isinstance(e, dict) and {"name", "status", "duration_s"} <= set(e)]


def write_index(results, out_dir: str | os.PathLike, scale: str,
                run: dict | None = None) -> list[dict]:
    """Write summary.json and index.html for `results` (NotebookResult), merged with the
    entries of an earlier summary.json at the same scale for other notebooks.

    `run` describes the run as a whole (default ``{"state": "finished"}``): "state" is one
    of RUN_STATES; "done"/"selected" (counts), "signal" (name) and "not_run" (names) are
    shown when present. Returns the entries, sorted by name.
    """
    run = {"state": "finished"} if run is None else dict(run)
    if run.get("state") not in RUN_STATES:
        raise ValueError(f"run['state'] must be one of {list(RUN_STATES)}, "
                         f"got {run.get('state')!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir must be a folder, got the file {str(out)!r}")
    summary_path = out / "summary.json"
    entries = {r.name: asdict(r) for r in results}
    for entry in _old_entries(summary_path, scale, bool(run.get("dry_run"))):
        entries.setdefault(entry["name"], entry)
    rows = [entries[k] for k in sorted(entries)]
    generated = now()
    summary = {"scale": scale, "generated": generated, "run": run, "notebooks": rows}
    write_file(summary_path, json.dumps(summary, indent=2, default=repr) + "\n")
    write_file(out / "index.html", render_index(rows, scale, run, generated))
    return rows


_INDEX_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 15px;
       line-height: 1.4; margin: 1.2em auto; max-width: 1500px; padding: 0 1em;
       color: #1d1d1f; }
h1 { font-size: 1.5em; margin: 0 0 0.4em; }
.about { display: grid; grid-template-columns: max-content 1fr; gap: 0.15em 1em;
         margin: 0 0 1em; }
.about dt { color: #555; } .about dd { margin: 0; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border-top: 1px solid #ddd; padding: 0.5em 0.6em; text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { background: #f3f3f3; font-weight: 600; }
col.nb { width: 16%; } col.fig { width: 250px; } col.verdict { width: 28%; }
col.head { width: 22%; }
img.thumb { width: 236px; max-width: 100%; border: 1px solid #ddd; display: block; }
.ok { color: #176317; font-weight: bold; }
.failed, .timeout, .stopped { color: #b00020; font-weight: bold; }
.v-holds { color: #176317; font-weight: 600; }
.v-does-not-hold { color: #b00020; font-weight: 600; }
.v-inconclusive { color: #7a5d00; font-weight: 600; }
.run { padding: 0.4em 0.7em; background: #fff4d6; border: 1px solid #e0c060; }
.dry { background: #e8f0ff; border: 1px solid #9ab; padding: 0.1em 0.4em; }
.skipped { color: #7a5d00; }
.muted { color: #777; }
ul { margin: 0; padding-left: 1.1em; } li { margin: 0.1em 0; }
pre { margin: 0.3em 0 0; white-space: pre-wrap; font-size: 0.9em; }
small { color: #555; }
"""


def _run_line(run: dict) -> str:
    esc = html.escape
    state = run.get("state", "finished")
    if state == "finished":
        return ""
    if state == "running":
        text = "Run in progress"
        if "done" in run and "selected" in run:
            text += f": {run['done']} of {run['selected']} notebooks done"
    else:
        text = f"Run stopped by {run.get('signal', 'a signal')}"
        if run.get("not_run"):
            text += "; not run (earlier entries, if any, kept): " + ", ".join(run["not_run"])
    return f'<p class="run">{esc(text)}.</p>\n'


def clock(seconds: float) -> str:
    """Seconds as '45 s', '5 min 54 s' or '1 h 02 min'."""
    seconds = int(round(float(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _links(e: dict) -> str:
    esc = html.escape
    name = esc(e["name"]).replace("_", "_<wbr>")  # long names break after an underscore
    link = f'<a href="{esc(e["html"])}"><b>{name}</b></a>' if e.get("html") else f"<b>{name}</b>"
    if e.get("ipynb"):
        link += f' <small>(<a href="{esc(e["ipynb"])}">ipynb</a>)</small>'
    status = esc(e["status"])
    link += (f'<br><span class="{status}">{status}</span> '
             f'<small>in {esc(clock(e.get("duration_s") or 0))}</small>')
    last_ok = e.get("last_ok") or {}
    if last_ok.get("html") or last_ok.get("ipynb"):
        target = last_ok.get("html") or last_ok.get("ipynb")
        link += f'<br><small>last ok report: <a href="{esc(target)}">{esc(target)}</a></small>'
    return link


def _thumbnail(e: dict) -> str:
    esc = html.escape
    key = e.get("key_figure") or {}
    if not key.get("thumbnail"):
        return '<span class="muted">no key figure</span>'
    img = (f'<img class="thumb" src="{esc(key["thumbnail"])}" alt="key figure of '
           f'{esc(e["name"])}" loading="lazy">')
    if e.get("html"):
        href = e["html"] + (f"#{key['anchor']}" if key.get("anchor") else "")
        img = f'<a href="{esc(href)}" title="open the figure in the report">{img}</a>'
    title = f'<small>{esc(key["title"])}</small>' if key.get("title") else ""
    return img + title


def _verdicts(e: dict) -> str:
    esc = html.escape
    items = []
    for v in e.get("verdicts") or []:
        claims = v.get("claims") if isinstance(v, dict) else None
        if claims:
            for c in claims:
                verdict = c.get("verdict", "")
                text = c.get("text", "")
                prefix = f"{c.get('claim', '')}: {verdict}"
                rest = text[len(prefix):] if text.startswith(prefix) else ""
                items.append(f"<li>{esc(c.get('claim', ''))}: <span class=\"v-"
                             f"{esc(verdict.replace(' ', '-'))}\">{esc(verdict)}</span>"
                             f"{esc(rest)}</li>")
        else:
            line = v.get("line", "") if isinstance(v, dict) else str(v)
            if line:
                items.append(f"<li>{esc(line)}</li>")
    if not items:
        return '<span class="muted">no claims table</span>'
    return "<ul>" + "".join(items) + "</ul>"


def _figures(e: dict) -> str:
    esc = html.escape
    figures = "".join(
        f"<li>{esc(str(k))}: <b>{esc(format_value(v))}</b></li>"
        for k, v in (e.get("headline") or {}).items()
    )
    return "<ul>" + figures + "</ul>" if figures else ""


def _files(e: dict) -> str:
    esc = html.escape
    parts = []
    results = e.get("results") or []
    if results:
        parts.append("<ul>" + "".join(
            f'<li><a href="{esc(r)}">{esc(r.rsplit("/", 1)[-1])}</a></li>' for r in results)
            + "</ul>")
    for sk in e.get("skipped") or []:
        parts.append(f'<div class="skipped">{esc(str(sk.get("table")))} skipped: '
                     f'{esc(str(sk.get("reason")))}</div>')
    if e.get("datasets"):
        parts.append(f'<small>data: {esc(", ".join(map(str, e["datasets"])))}</small>')
    err = e.get("error")
    if err:
        where = f"In [{err['cell']}]: " if err.get("cell") is not None else ""
        parts.append(f"<pre>{esc(where + str(err.get('ename')) + ': ' + str(err.get('evalue')))}"
                     "</pre>")
    return "".join(parts)


def _unique(values) -> list:
    out = []
    for v in values:
        if v not in (None, "") and v not in out:
            out.append(v)
    return out


def _total_time(total: float, run: dict) -> str:
    """The run's wall time with the notebooks at once, and the durations added up (this
    run's when recorded, else every entry's)."""
    if run.get("elapsed_s") is None:
        return html.escape(f"{clock(total)} (the notebooks' durations added up)")
    jobs = run.get("jobs")
    at_once = f", {int(jobs)} notebook{'s' if int(jobs) != 1 else ''} at a time" if \
        isinstance(jobs, int) and not isinstance(jobs, bool) else ""
    added = run.get("notebooks_s", total)
    return html.escape(f"{clock(run['elapsed_s'])} (this run, wall clock{at_once}); the "
                       f"notebooks' durations add up to {clock(added)}")


def _about(entries, scale: str, run: dict, generated: str) -> str:
    esc = html.escape
    n_ok = sum(e["status"] == "ok" for e in entries)
    total = sum(float(e.get("duration_s") or 0) for e in entries)
    kernels = [e.get("kernel") or {} for e in entries]
    devices = _unique(k.get("device") for k in kernels)
    threads = _unique(k.get("torch_threads") for k in kernels)
    data = _unique(d for e in entries for d in (e.get("datasets") or []))
    skipped = sum(len(e.get("skipped") or []) for e in entries)
    scale_text = esc(scale) + (' <span class="dry">dry run</span>' if run.get("dry_run") else "")
    rows = [
        ("scale", scale_text),
        ("notebooks", f"{n_ok} of {len(entries)} ok"
                      + (f", {skipped} table(s) skipped" if skipped else "")),
        ("total time", _total_time(total, run)),
        ("device", esc(", ".join(devices)) if devices else '<span class="muted">not reported'
                                                            '</span>'),
        ("torch threads", esc(", ".join(map(str, threads))) if threads
         else '<span class="muted">not reported</span>'),
        ("kdlib", esc(f"{run.get('kdlib_version') or '?'}, commit "
                      f"{run.get('git_commit') or 'unknown'}")),
        ("data sets", esc(", ".join(data)) if data else '<span class="muted">not reported'
                                                       '</span>'),
    ]
    if run.get("select"):
        rows.append(("selection", f"<code>{esc(str(run['select']))}</code>"))
    rows.append(("generated", esc(generated)))
    return ('<dl class="about">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
            + "</dl>\n")


def render_index(entries, scale: str, run: dict | None = None,
                 generated: str | None = None) -> str:
    """The index page: a summary of the run, then one row per notebook entry (dicts as in
    summary.json) with its verdicts, key figure, headline figures and result files.
    Self-contained static HTML (no script, no network)."""
    esc = html.escape
    run = {"state": "finished"} if run is None else run
    generated = generated or now()
    rows = []
    for e in entries:
        rows.append(
            f"<tr><td>{_links(e)}</td><td>{_thumbnail(e)}</td><td>{_verdicts(e)}</td>"
            f"<td>{_figures(e)}</td><td>{_files(e)}</td></tr>"
        )
    title = f"kdlib report: scale {scale}" + (" (dry run)" if run.get("dry_run") else "")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{_INDEX_CSS}</style></head><body>\n"
        f"<h1>{esc(title)}</h1>\n"
        + _run_line(run)
        + _about(entries, scale, run, generated)
        + "<table><colgroup><col class=\"nb\"><col class=\"fig\"><col class=\"verdict\">"
        "<col class=\"head\"><col></colgroup>\n"
        "<thead><tr><th>notebook</th><th>key figure</th><th>claims: verdict, ours "
        "[interval]</th><th>headline figures</th><th>results, skipped tables, errors</th>"
        "</tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n</body></html>\n"
    )


__all__ = [
    "NotebookResult", "RUN_STATES", "STATUSES", "clock", "now", "render_index", "write_file",
    "write_index",
]
