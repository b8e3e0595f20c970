"""The interactive path in a real browser: JupyterLab + jupytext + ipywidgets, and the reports.

Headless Chromium (Debian's package) driven by Playwright. Marked `browser`; `make test`
runs it. Without Chromium or Playwright the tests fail (KDLIB_SKIP_BROWSER=1 skips them).
Screenshots go to KDLIB_BROWSER_OUT if set, else to pytest's tmp folder (printed).
KDLIB_BROWSER_REPORT=<folder> checks an existing report instead of making a smoke one.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser_helpers import chromium, chromium_path, jupyter_lab

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
EXPLORER = "00_calibration_explorer.py"
SWEEP = "02_temperature_sweep.py"
STDERR = '[data-mime-type="application/vnd.jupyter.stderr"]'
ERROR = '[data-mime-type="application/vnd.jupyter.error"]'
# JupyterLab settings for a quiet, offline session (no news or update pop-ups).
FAILED_SHOT = Path(os.environ.get("KDLIB_BROWSER_OUT", "/tmp")) / "failed_run_all.png"
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("KDLIB_BROWSER_OUT")
    path = Path(folder) if folder else tmp_path_factory.mktemp("browser_out")
    path.mkdir(parents=True, exist_ok=True)
    print(f"browser screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser():
    chromium_path()  # fail (or skip on request) before starting anything
    with chromium() as context:
        yield context


class PageWatch:
    """Console errors, uncaught page errors and requests that leave the machine, collected as
    they happen. External requests (not file:// or loopback) are aborted and listed in
    `external`; the console errors they cause are not counted as errors."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.external: list[str] = []
        page.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"), self._abort)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def _abort(self, route):
        self.external.append(route.request.url)
        route.abort()

    def _console(self, message):
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        if where in self.external and "Failed to load resource" in message.text:
            return
        self.errors.append(f"console: {message.text} ({where})")


def smoke_copy(folder: Path, name: str) -> Path:
    """A copy of notebooks/<name> whose parameters cell says SCALE = "smoke" (what a person
    edits by hand), INTERACTIVE stays True."""
    text = (ROOT / "notebooks" / name).read_text()
    new, n = re.subn(r'^SCALE = "default"$', 'SCALE = "smoke"', text, flags=re.M)
    assert n == 1 and re.search(r"^INTERACTIVE = True$", new, flags=re.M), name
    path = folder / name
    path.write_text(new)
    return path


def open_with_jupytext(page, name: str) -> None:
    """The README's way: right-click the file > Open With > Jupytext Notebook."""
    page.locator(".jp-DirListing-item", has_text=name).click(button="right")
    page.locator(".lm-Menu-item", has_text="Open With").hover()
    page.locator(".lm-Menu-item", has_text="Jupytext Notebook").click()
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)


def run_all(page, last_text: str, timeout_ms: int = 150_000) -> None:
    """Run > Run All Cells once the kernel is idle; wait for `last_text` in an output."""
    page.locator("#jp-main-statusbar", has_text="Idle").wait_for(timeout=60_000)
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
    for _attempt in range(3):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator('.lm-Menu-item[data-command="runmenu:run-all"]').click()
        try:  # the first prompt turns to [*] or [1]: the run started
            page.wait_for_function("el => el.textContent.trim() !== '[ ]:'",
                                   arg=prompts.first.element_handle(), timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
    try:
        page.locator(".jp-OutputArea-output", has_text=last_text).first.wait_for(
            state="attached", timeout=timeout_ms)
    except Exception:
        page.screenshot(path=str(FAILED_SHOT))
        raise AssertionError(f"the notebook did not finish; prompts "
                             f"{prompts.all_inner_texts()}; "
                             f"errors shown: {notebook_errors(page)}") from None


def notebook_errors(page) -> list[str]:
    texts = page.evaluate(
        f"""() => Array.from(document.querySelectorAll(
              '.jp-OutputArea-output{STDERR}, .jp-OutputArea-output{ERROR}'))
              .map(e => e.textContent.slice(0, 2000))""")
    widget_failures = page.locator("text=Error displaying widget").count()
    return texts + (["a widget failed to render"] if widget_failures else [])


def readout_text(page, box) -> str:
    return box.locator(".widget-html-content code").first.inner_text()


def wait_for_change(page, box, old: str, timeout_s: float = 20.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = readout_text(page, box)
        if text != old:
            return text
        page.wait_for_timeout(100)
    raise AssertionError(f"readout did not change from {old!r}")


def image_src(box) -> dict:
    return box.locator("img").first.evaluate(
        "e => ({src: e.src, w: e.naturalWidth, h: e.naturalHeight, ok: e.complete})")


def wait_for_redraw(page, box, old_src: str) -> str:
    """Wait until the diagram's <img> shows a new, decoded PNG; its new src."""
    page.wait_for_function(
        "([el, old]) => el.src !== old && el.complete && el.naturalWidth > 300",
        arg=[box.locator("img").first.element_handle(), old_src], timeout=20_000)
    return image_src(box)["src"]


def set_readout(page, slider, value: str) -> None:
    """Type a value into a slider's editable readout and press Enter (as a person does)."""
    field = slider.locator(".widget-readout")
    field.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


# ------------------------------------------------------------------------- JupyterLab


@pytest.fixture(scope="module")
def explorer_expected():
    """The explorer's readout for any setting, computed here from the same cached teachers
    (`calibration_explorer.cached_teachers`), and their chooser labels."""
    os.environ.setdefault("KDLIB_PROJECT_DIR", str(ROOT))
    from kdlib import presets
    from kdlib.experiments import calibration_explorer as ce
    from kdlib.widgets import CalibrationExplorer

    cfg = presets.get(ce.NAME, "smoke")
    ce.teachers_logits(cfg)  # the notebook's own teachers are cached before the lab starts

    class Expected:
        def __init__(self):
            self.explorer = CalibrationExplorer.from_cache("smoke", n_bins=cfg["n_bins"])

        def labels(self) -> set[str]:
            return {self.explorer.label(n) for n in self.explorer.names}

        def __call__(self, *args) -> str:
            return CalibrationExplorer.readout(self.explorer.state(*args))

    return Expected


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """One JupyterLab for the module, serving smoke-scale copies of notebooks 00 and 02."""
    nb_dir = tmp_path_factory.mktemp("notebooks")
    for name in (EXPLORER, SWEEP):
        smoke_copy(nb_dir, name)
    env = {"KDLIB_PROJECT_DIR": str(ROOT), "PATH": f"{Path(sys.executable).parent}:"
           + os.environ.get("PATH", "")}
    with jupyter_lab(nb_dir, env, settings=LAB_SETTINGS) as server:
        server.notebook_dir = nb_dir
        yield server


def open_in_lab(browser, lab, name: str):
    """A new page on a fresh JupyterLab workspace (no tabs restored), `name` opened."""
    page = browser.new_page()
    watch = PageWatch(page)
    workspace = re.sub(r"\W", "-", name)
    page.goto(f"{lab.url}/lab/workspaces/{workspace}?reset&token={lab.token}")
    page.wait_for_selector(".jp-DirListing-item", timeout=60_000)
    open_with_jupytext(page, name)
    return page, watch


def test_calibration_explorer_in_jupyterlab(browser, out_dir, lab, explorer_expected):
    before = explorer_expected()
    nb_dir = lab.notebook_dir
    page, watch = open_in_lab(browser, lab, EXPLORER)
    run_all(page, "headline teacher:")
    box = page.locator(".jupyter-widgets.widget-vbox", has=page.locator("img")).first
    try:
        box.wait_for(state="attached", timeout=30_000)
    except Exception:
        page.screenshot(path=str(out_dir / "explorer_0_failed.png"))
        raise
    assert notebook_errors(page) == [], lab.log_text()[-3000:]
    box.scroll_into_view_if_needed()
    chooser = box.locator("select").first
    labels = {t.replace("\xa0", " ") for t in chooser.locator("option").all_inner_texts()}
    expected = explorer_expected()  # the cache as it is now (other sessions may add)
    assert before.labels() <= labels <= expected.labels(), labels
    assert all(re.search(r" \(acc \d+\.\d%\)$", label) for label in labels)
    start = readout_text(page, box)
    teacher = start.split(" | ")[0]
    assert teacher == expected.explorer.names[0]
    assert start == expected(teacher, 1.0, 15, "equal_width")
    image = image_src(box)
    assert image["ok"] and image["w"] > 300 and image["h"] > 200
    page.screenshot(path=str(out_dir / "explorer_1_start.png"))

    sliders = box.locator(".widget-hslider")
    temperature, bins = sliders.nth(0), sliders.nth(1)
    steps = [  # (what a person does, the setting it leads to, screenshot)
        (lambda: set_readout(page, temperature, "2"), (2.0, 15, "equal_width"), "T2"),
        (lambda: set_readout(page, temperature, "0.5"), (0.5, 15, "equal_width"), "T0.5"),
        (lambda: box.locator("button", has_text="equal mass").click(),
         (0.5, 15, "equal_mass"), "equal_mass"),
        (lambda: set_readout(page, bins, "7"), (0.5, 7, "equal_mass"), "equal_mass_7_bins"),
    ]
    shown, srcs = start, [image["src"]]
    for i, (action, setting, label) in enumerate(steps, start=2):
        action()
        shown = wait_for_change(page, box, shown)
        assert shown == expected(teacher, *setting), label
        srcs.append(wait_for_redraw(page, box, srcs[-1]))
        page.screenshot(path=str(out_dir / f"explorer_{i}_{label}.png"))
    # the chooser: the second teacher at the same setting
    chooser.select_option(index=1)
    shown = wait_for_change(page, box, shown)
    second = expected.explorer.names[1]
    assert shown == expected(second, 0.5, 7, "equal_mass")
    srcs.append(wait_for_redraw(page, box, srcs[-1]))
    assert len(set(srcs)) == len(srcs)
    page.screenshot(path=str(out_dir / "explorer_6_second_teacher.png"))

    # export: PNG and CSV next to the notebook
    box.locator("button", has_text="export").click()
    box.locator(".widget-html-content", has_text="wrote").wait_for(timeout=20_000)
    stem = expected.explorer.export_stem(expected.explorer.state(second, 0.5, 7,
                                                                 "equal_mass"))
    png, table = nb_dir / f"{stem}.png", nb_dir / f"{stem}.csv"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000
    (row,) = csv.DictReader(table.read_text().splitlines())
    assert row["teacher"] == second
    assert f"ECE {100 * float(row['ece']):.2f}%" in shown
    page.screenshot(path=str(out_dir / "explorer_7_exported.png"))

    assert notebook_errors(page) == []
    assert watch.errors == [], watch.errors
    assert watch.external == [], "JupyterLab asked the network for " + str(watch.external)
    page.close()


def test_sweep_explorer_in_jupyterlab(browser, out_dir, lab):
    """Notebook 02 at smoke scale with INTERACTIVE = True: the sweep explorer renders, and
    tau and the loss move its readout to the values of the sweep store."""
    from kdlib import sweep
    from kdlib.experiments import temperature_sweep as ts
    from kdlib.widgets import SweepExplorer

    page, watch = open_in_lab(browser, lab, SWEEP)
    run_all(page, "headline figure")
    box = page.locator(".jupyter-widgets.widget-vbox",
                       has=page.locator(".widget-html-content code", has_text="| tau =")).first
    box.wait_for(state="attached", timeout=30_000)
    assert notebook_errors(page) == [], lab.log_text()[-3000:]
    box.scroll_into_view_if_needed()
    store = ROOT / "runs" / "smoke" / f"{ts.NAME}.sqlite"
    from kdlib import presets

    current = {sweep.cell_key(c, ts.NAME) for c in ts.grid(presets.get(ts.NAME, "smoke"))}
    frame = ts.students_frame([r for r in sweep.load(store, namespace=ts.NAME)
                               if r["_key"] in current])  # not cells of older presets
    expected = SweepExplorer(ts.split_frame(frame)["sweep"])  # as the notebook builds it
    pair = expected.pairs[0]
    temps = expected.temperatures(pair)
    shown = readout_text(page, box)
    first_loss = expected.losses(pair)[0]
    assert shown == expected.readout(expected.state(pair, first_loss, temps[0]))
    srcs = [wait_for_redraw(page, box, "")]
    page.screenshot(path=str(out_dir / "sweep_1_start.png"))

    box.locator(".noUi-handle").first.focus()  # the tau slider's handle, keyboard as a person
    page.keyboard.press("ArrowRight")
    shown = wait_for_change(page, box, shown)
    assert shown == expected.readout(expected.state(pair, first_loss, temps[1]))
    srcs.append(wait_for_redraw(page, box, srcs[-1]))
    page.screenshot(path=str(out_dir / "sweep_2_tau.png"))

    other = expected.losses(pair)[1]
    box.locator("button", has_text=other).click()
    shown = wait_for_change(page, box, shown)
    assert shown == expected.readout(expected.state(pair, other, temps[1]))
    srcs.append(wait_for_redraw(page, box, srcs[-1]))
    page.screenshot(path=str(out_dir / "sweep_3_loss.png"))
    assert notebook_errors(page) == []
    assert watch.errors == [], watch.errors
    assert watch.external == [], "JupyterLab asked the network for " + str(watch.external)
    page.close()


# ------------------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> Path:
    given = os.environ.get("KDLIB_BROWSER_REPORT")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("report")
    env = {**os.environ, "KDLIB_PROJECT_DIR": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "kdlib", "report", "--scale", "smoke", "--out", str(out),
         "--notebooks-dir", str(ROOT / "notebooks"), "00", "02"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _local(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", f"link leaves the report: {url}"
    return Path(unquote(parsed.path))


def test_report_index_links_figures_and_tracebacks(browser, out_dir, smoke_report):
    index = smoke_report / "index.html"
    assert index.is_file()
    page = browser.new_page()
    watch = PageWatch(page)
    page.goto(index.as_uri())
    rows = page.eval_on_selector_all(
        "tbody tr", """rows => rows.map(r => ({
            status: r.children[1].textContent.trim(),
            links: Array.from(r.querySelectorAll('a')).map(a => a.href)}))""")
    summary = json.loads((smoke_report / "summary.json").read_text())
    entries = summary["notebooks"] if isinstance(summary, dict) else summary
    assert len(rows) == len(entries) >= 1
    page.screenshot(path=str(out_dir / "report_index.png"), full_page=True)
    n_pages, seen = 0, set()
    for row in rows:
        assert row["links"], row
        for url in row["links"]:
            path = _local(url)
            assert path.is_file() and path.stat().st_size > 0, f"broken link {url}"
            if path.suffix == ".ipynb":
                nb = json.loads(path.read_text())
                assert nb.get("nbformat") == 4 and nb.get("cells"), url
                continue
            if path.suffix == ".csv":  # results: a download, not a page
                header = path.read_text().splitlines()[0]
                assert header.strip(), url
                continue
            if path.suffix == ".jsonl":
                assert all(isinstance(json.loads(line), dict)
                           for line in path.read_text().splitlines() if line), url
                continue
            if path in seen:  # the thumbnail links to the same report, at its figure
                continue
            seen.add(path)
            response = page.goto(url)
            assert response is None or response.ok, url
            assert page.title() or page.locator("body").inner_text().strip(), url
            images = page.eval_on_selector_all(
                "img", """imgs => imgs.map(i => ({complete: i.complete, w: i.naturalWidth,
                                                   h: i.naturalHeight, alt: i.alt}))""")
            figures = [im for im in images if im["w"] > 0 or not im["complete"]]
            assert all(im["complete"] and im["w"] > 50 and im["h"] > 50 for im in images), (
                url, images)
            text = page.locator("body").inner_text()
            if row["status"] == "ok":
                assert "Traceback (most recent call last)" not in text, url
                assert page.locator(f".jp-OutputArea-output{ERROR}").count() == 0, url
                assert figures, f"no figure decoded in {url}"
            n_pages += 1
            page.screenshot(path=str(out_dir / f"report_{path.stem}.png"))
    assert n_pages == len(rows)
    assert watch.errors == [], watch.errors
    # nbconvert's template asks a CDN for require.js and MathJax (absent offline; the
    # pages do not need them); anything else leaving the machine is a new dependency.
    hosts = {urlparse(u).hostname for u in watch.external}
    assert hosts <= {"cdnjs.cloudflare.com"}, watch.external
    page.close()


def test_missing_browser_fails_unless_skip_is_asked(monkeypatch, tmp_path):
    """A machine without Chromium must fail the browser tests, not pass them silently."""
    import _pytest.outcomes

    monkeypatch.setenv("KDLIB_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("KDLIB_SKIP_BROWSER", raising=False)
    with pytest.raises(_pytest.outcomes.Failed, match="no Chromium"):
        chromium_path()
    monkeypatch.setenv("KDLIB_SKIP_BROWSER", "1")
    with pytest.raises(_pytest.outcomes.Skipped, match="KDLIB_SKIP_BROWSER"):
        chromium_path()
