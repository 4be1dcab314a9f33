"""JupyterLab, offline, in a real browser: open a notebook's MyST source, edit a parameter, run all
cells, and find every chart drawn, the inline numbers rendered, and the edited parameter in the
stored run, with no request leaving the machine.

Oracle for the parameter: the config hash of the stored result against the configuration built
directly with the edited value.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not browser.chromium_available(), reason="needs /usr/bin/chromium and playwright"),
    pytest.mark.skipif(shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None,
                       reason="needs the lab extra (pip install -e '.[lab]')"),
]

#: the parameters cell of the copy the browser opens: a run of seconds (the browser adds one line)
TINY_CELL = """# Parameters of this notebook (a tiny run for the JupyterLab test)
profile = "quick"
model = "lenet_300_100"
dataset = "digits"
steps = 40
snapshot_every = 10
dts = [10, 20]
taus = [10, 30]
probe_size = 20
batch_size = 32
seeds = [0]
results_root = {results!r}
recompute = False"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_copy(folder: Path, results: Path) -> Path:
    """notebooks/kernel_dynamics.md with its parameters cell replaced by :data:`TINY_CELL`."""
    text = (ROOT / "notebooks" / "kernel_dynamics.md").read_text()
    start = text.index("# Parameters of this notebook")
    end = text.index("```", start)
    out = folder / "kernel_dynamics.md"
    out.write_text(text[:start] + TINY_CELL.format(results=str(results)).replace(
        "# Parameters of this notebook (a tiny run for the JupyterLab test)",
        "# Parameters of this notebook: a tiny run for the JupyterLab test") + "\n" + text[end:])
    return out


@pytest.fixture()
def lab(tmp_path):
    """A JupyterLab server on a free port, rooted in a folder with the tiny copy, no token."""
    from conelib.tools.lab import lab_settings

    prefix = tmp_path / "prefix"
    settings = lab_settings(str(prefix))  # only for this server: JUPYTERLAB_SETTINGS_DIR below
    root = tmp_path / "lab"
    root.mkdir()
    results = tmp_path / "results"
    _tiny_copy(root, results)
    port = _free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "user-settings"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    (tmp_path / "user-settings" / "@jupyterlab" / "docmanager-extension").mkdir(parents=True)
    import json

    viewers = json.loads(settings.read_text())["@jupyterlab/docmanager-extension:plugin"]
    (tmp_path / "user-settings" / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings").write_text(
        json.dumps(viewers))
    # render every cell (JupyterLab 4 renders only the visible ones by default), no news pop-up
    (tmp_path / "user-settings" / "@jupyterlab" / "notebook-extension").mkdir(parents=True)
    (tmp_path / "user-settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
        json.dumps({"windowingMode": "none"}))
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ServerApp.token=",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
         "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    import urllib.request

    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
    try:
        yield url, root, results
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.timeout(420)
def test_edit_a_parameter_and_run_all_in_jupyterlab_offline(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    from conelib.experiments import KernelDynamicsConfig
    from conelib.results import config_hash

    url, root, results = lab
    blocked: list[str] = []

    def route(r):
        u = r.request.url
        if u.startswith((url, "data:", "blob:", "about:", "ws://127.0.0.1")):
            r.continue_()
        else:
            blocked.append(u)
            r.abort("internetdisconnected")

    with sync_playwright() as pw:
        browser_ = pw.chromium.launch(executable_path=str(browser.CHROMIUM), headless=True,
                                      args=list(browser.CHROMIUM_FLAGS))
        context = browser_.new_context(viewport={"width": 1400, "height": 1000}, service_workers="block")
        context.route("**/*", route)
        page = context.new_page()
        page.set_default_timeout(120_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/lab")
        # the MyST source opens as a notebook (Open With > Jupytext Notebook), with a kernel
        page.locator(".jp-DirListing-item", has_text="kernel_dynamics").first.click(button="right")
        page.locator(".lm-Menu-itemLabel", has_text="Open With").first.hover()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Jupytext Notebook$")).first.click()
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        # the kernel must be up before "Run All" (on a loaded machine it can take a minute; a Run All
        # sent before that is dropped with "Session has no kernel")
        page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=180_000)
        # edit the parameters cell: add a line that sets a parameter it does not list
        cell = page.locator(".jp-CodeCell", has_text="a tiny run for the JupyterLab test").first
        editor = cell.locator(".cm-content").first
        editor.click()
        page.keyboard.press("Control+End")
        page.keyboard.press("Enter")
        page.keyboard.type("weight_decay = 0.0")
        page.keyboard.press("Escape")
        # Run > Run All Cells
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

        def prompts() -> list[str]:
            return page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()

        deadline = time.monotonic() + 300  # wait until every code cell has run (no "[*]", all numbered)
        while time.monotonic() < deadline:
            now = prompts()
            if now and all(re.search(r"\[\d+\]", p) for p in now):
                break
            page.wait_for_timeout(1000)
        now = prompts()
        if not all(re.search(r"\[\d+\]", p) for p in now):
            page.screenshot(path=str(tmp_path / "lab-failed.png"), full_page=False)
        assert all(re.search(r"\[\d+\]", p) for p in now), (now, str(tmp_path / "lab-failed.png"))
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] >> "
                            "text=Traceback").count() == 0
        # every chart drawn (Altair's JupyterChart widget, Vega bundled: no CDN)
        page.wait_for_function("document.querySelectorAll('.vega-embed svg.marks, .vega-embed canvas.marks')"
                               ".length >= 2", timeout=120_000)
        n_drawn = page.locator(".vega-embed svg.marks, .vega-embed canvas.marks").count()
        # the prose's inline expressions rendered with the data (jupyterlab-myst), none left raw
        md = " ".join(page.locator(".jp-MarkdownCell").all_inner_texts())
        page.screenshot(path=str(tmp_path / "lab.png"), full_page=False)
        browser_.close()
    assert n_drawn >= 2
    assert "{eval}" not in md and "digits" in md and "lenet_300_100" in md
    assert not [u for u in blocked if "favicon" not in u], blocked
    assert not errors, errors
    # the edited parameter reached the run: the stored result is the one with weight_decay 0.0
    want = KernelDynamicsConfig.from_profile("quick", "kernel_dynamics", model="lenet_300_100", dataset="digits",
                                             steps=40, snapshot_every=10, dts=[10, 20], taus=[10, 30],
                                             probe_size=20, batch_size=32, weight_decay=0.0)
    stored = {p.stem for p in (results / "kernel_dynamics").glob("*.nc")}
    assert stored == {config_hash(want.identity())}
