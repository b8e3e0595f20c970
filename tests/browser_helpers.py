"""Plumbing of the browser tests: a private JupyterLab server and headless Chromium.

    with jupyter_lab(notebook_dir, env) as lab:       # lab.url, lab.token, lab.log
        with chromium() as browser:                   # a Playwright Browser
            page = browser.new_page()

Chromium is Debian's (/usr/bin/chromium, or KDLIB_CHROMIUM); Playwright only drives it
(`playwright install` is never needed). Without a browser the tests fail, unless
KDLIB_SKIP_BROWSER=1 asks for a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """The Chromium executable; fails the test (or skips with KDLIB_SKIP_BROWSER=1)."""
    path = os.environ.get("KDLIB_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    missing = []
    if not Path(path).is_file():
        missing.append(f"no Chromium at {path} (apt-get install -y chromium; or set "
                       "KDLIB_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the Python package playwright is missing (pip install -e '.[dev]')")
    if missing:
        if os.environ.get("KDLIB_SKIP_BROWSER") == "1":
            pytest.skip("; ".join(missing) + " (KDLIB_SKIP_BROWSER=1)")
        pytest.fail("browser test cannot run: " + "; ".join(missing)
                    + ". Set KDLIB_SKIP_BROWSER=1 to skip it explicitly.", pytrace=False)
    return path


@contextlib.contextmanager
def chromium():
    """A headless Chromium (Playwright Browser) with an empty temporary profile."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    with tempfile.TemporaryDirectory(prefix="kdlib-chromium-") as profile, \
            sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=exe, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def jupyter_lab(notebook_dir: Path, env: dict | None = None, settings: dict | None = None,
                timeout: float = 60.0):
    """Run `python -m jupyter lab` of this interpreter on a free loopback port with a random
    token and temporary config/runtime/settings/workspaces folders; stopped on exit.

    settings: {"<extension>/<plugin>.jupyterlab-settings": {...}} written to the settings
    folder before the start.
    """
    token = secrets.token_hex(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kdlib-lab-") as tmp:
        tmp = Path(tmp)
        full_env = {**os.environ, **(env or {})}
        for var in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR",
                    "JUPYTERLAB_WORKSPACES_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR"):
            folder = tmp / var.lower()
            folder.mkdir()
            full_env[var] = str(folder)
        for rel, value in (settings or {}).items():
            path = Path(full_env["JUPYTERLAB_SETTINGS_DIR"]) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        log = tmp / "lab.log"
        cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ip=127.0.0.1", f"--IdentityProvider.token={token}",
               f"--notebook-dir={notebook_dir}", "--ServerApp.port_retries=0",
               "--LabApp.news_url=", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")  # CI runs as root
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=notebook_dir)
        lab = Lab(f"http://127.0.0.1:{port}", token, log, proc)
        try:
            _wait_for(lab, timeout)
            yield lab
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(lab: Lab, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({lab.process.returncode}):\n"
                               f"{lab.log_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{lab.url}/api/status?token={lab.token}",
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"jupyter lab did not answer within {timeout} s:\n"
                       f"{lab.log_text()[-3000:]}")
