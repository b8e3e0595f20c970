"""The report index: one `NotebookResult` per notebook, written as summary.json + index.html.

`write_index` is the one place both files are written (atomically, after every notebook
and when a run stops); `render_index` turns the entries into the HTML page. Entries of an
earlier run at the same scale for notebooks not run now are kept.

summary.json::

    {"scale": "smoke", "generated": "<ISO time>",
     "run": {"state": "running" | "finished" | "stopped", ...},
     "notebooks": [<NotebookResult as a dict>, ...]}      # sorted by name
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


def write_file(path, data: str | bytes) -> Path:
    """`kdlib.atomic.atomic_write` (which gives the mode a plain ``open`` would: reports are
    meant to be read by others)."""
    return atomic_write(path, data)


def now() -> str:
    """The local time as an ISO 8601 string with offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _old_entries(summary_path: Path, scale: str) -> list[dict]:
    try:
        old = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict) or old.get("scale") != scale:
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
    for entry in _old_entries(summary_path, scale):
        entries.setdefault(entry["name"], entry)
    rows = [entries[k] for k in sorted(entries)]
    generated = now()
    summary = {"scale": scale, "generated": generated, "run": run, "notebooks": rows}
    write_file(summary_path, json.dumps(summary, indent=2, default=repr) + "\n")
    write_file(out / "index.html", render_index(rows, scale, run, generated))
    return rows


_INDEX_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.ok { color: #176317; font-weight: bold; }
.failed, .timeout, .stopped { color: #b00020; font-weight: bold; }
.run { padding: 0.4em 0.7em; background: #fff4d6; border: 1px solid #e0c060; }
td.num { text-align: right; }
ul { margin: 0; padding-left: 1.2em; }
pre { margin: 0; white-space: pre-wrap; }
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


def _links(e: dict) -> str:
    esc = html.escape
    name = esc(e["name"])
    link = f'<a href="{esc(e["html"])}">{name}</a>' if e.get("html") else name
    if e.get("ipynb"):
        link += f' <small>(<a href="{esc(e["ipynb"])}">ipynb</a>)</small>'
    last_ok = e.get("last_ok") or {}
    if last_ok.get("html") or last_ok.get("ipynb"):
        target = last_ok.get("html") or last_ok.get("ipynb")
        link += f'<br><small>last ok report: <a href="{esc(target)}">{esc(target)}</a></small>'
    return link


def render_index(entries, scale: str, run: dict | None = None,
                 generated: str | None = None) -> str:
    """The index page: one row per notebook entry (dicts as in summary.json)."""
    esc = html.escape
    run = {"state": "finished"} if run is None else run
    rows = []
    for e in entries:
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
            f"<tr><td>{_links(e)}</td><td class=\"{status}\">{status}</td>"
            f"<td class=\"num\">{e['duration_s']:.1f}</td>"
            f"<td>{'<ul>' + figures + '</ul>' if figures else ''}</td><td>{error}</td></tr>"
        )
    n_ok = sum(e["status"] == "ok" for e in entries)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>kdlib report ({esc(scale)})</title><style>{_INDEX_CSS}</style></head><body>\n"
        f"<h1>kdlib report: scale {esc(scale)}</h1>\n"
        + _run_line(run)
        + f"<p>{n_ok} of {len(entries)} notebooks ok. Generated {esc(generated or now())}.</p>\n"
        "<table><thead><tr><th>notebook</th><th>status</th><th>duration (s)</th>"
        "<th>headline figures</th><th>error</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table>\n</body></html>\n"
    )


__all__ = [
    "NotebookResult", "RUN_STATES", "STATUSES", "now", "render_index", "write_file", "write_index",
]
