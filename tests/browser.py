"""Open a built HTML page in headless Chromium with the network off, and report what rendered.

A test helper (not a test module): :func:`check_page` loads a ``file://`` page in Debian's
Chromium (``/usr/bin/chromium``) through the Python ``playwright`` package, aborts and records
every request that is not local (``file:``, ``data:``, ``blob:``, ``about:``), waits until every
Vega chart has drawn and MathJax has finished, and returns a :class:`PageReport`.

``playwright install`` is never needed: the system browser is used (``executable_path``).
:func:`probe_chart_interaction` additionally hovers a chart mark (tooltip) and clicks a legend
entry (legend-bound selection) to check that charts are interactive, not just drawn.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the browser (Debian package ``chromium``)
CHROMIUM = Path("/usr/bin/chromium")
#: command-line flags: headless, no sandbox (containers), no background traffic of the browser
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: URL schemes a page may load; anything else is aborted and recorded
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

#: a drawn Vega chart: vega-embed's container holding the rendered view (svg or canvas)
_DRAWN = ".vega-embed svg.marks, .vega-embed canvas.marks"
#: chart containers: vega-embed's class, or an Altair output div that never got embedded
_EMBEDS = ".vega-embed, div[id^='altair-viz-']"

_JS_COUNT_EMBEDS = f"""() => {{
  const s = new Set(document.querySelectorAll("{_EMBEDS}"));
  // nested matches (vega-embed adds its class to Altair's div) count once
  return [...s].filter(e => !(e.parentElement && e.parentElement.closest("{_EMBEDS}"))).length;
}}"""
_JS_MATHJAX_DONE = """() => {
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.promise) return false;
  if (window.__mjDone === undefined) {
    window.__mjDone = false;
    mj.startup.promise.then(() => { window.__mjDone = true; }, () => { window.__mjDone = true; });
  }
  return window.__mjDone;
}"""
_JS_HAS_MATH = """() => document.querySelector(
  ".math, .MathJax_Preview, script[type^='math/tex'], mjx-container") !== null"""


@dataclass
class PageReport:
    """What :func:`check_page` found on a page.

    Attributes:
        n_vega_svg_or_canvas: rendered Vega views (``svg.marks`` / ``canvas.marks`` inside a
            ``.vega-embed`` container).
        n_vega_embeds: chart containers on the page (drawn or not).
        console_errors: console messages of level ``error``.
        page_errors: uncaught JavaScript exceptions.
        math_typeset: at least one ``mjx-container`` (MathJax output) is present.
        blocked_requests: URLs of non-local requests, all aborted.
        failed_requests: local requests that failed (e.g. a missing ``_static`` file).
        math_errors: text of MathJax error nodes (``mjx-merror``: TeX it could not typeset).
    """

    n_vega_svg_or_canvas: int
    n_vega_embeds: int
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    math_typeset: bool = False
    blocked_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    math_errors: list[str] = field(default_factory=list)


@dataclass
class InteractionReport:
    """What :func:`probe_chart_interaction` observed on the first chart of a page.

    Attributes:
        tooltip_shown: hovering a point mark made vega-tooltip's element visible with text.
        tooltip_text: that text.
        legend_toggles_opacity: clicking the first legend entry changed the opacity of at least
            one line or point mark (a legend-bound selection).
    """

    tooltip_shown: bool
    tooltip_text: str
    legend_toggles_opacity: bool


def chromium_available() -> bool:
    """Whether the system Chromium and the ``playwright`` package are both present."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is not None


def _local(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES)


class _OfflinePage:
    """Context manager: a Chromium page with every non-local request aborted and recorded."""

    def __init__(self, html: Path, timeout_s: float, viewport_width: int = 1200) -> None:
        self.html = Path(html)
        if not self.html.is_file():
            raise FileNotFoundError(f"html={str(html)!r} does not exist")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.viewport_width = viewport_width
        self.blocked: list[str] = []
        self.failed: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []

    def __enter__(self):
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_FLAGS)
            )
            context = self._browser.new_context(
                viewport={"width": self.viewport_width, "height": 900},
                service_workers="block",
            )
            context.route("**/*", self._route)
            page = context.new_page()
            page.set_default_timeout(self.timeout_s * 1000)
            page.on("request", self._on_request)
            page.on("requestfailed", self._on_failed)
            page.on("console", self._on_console)
            page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
            self.page = page
        except BaseException:
            self._pw.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._browser.close()
        finally:
            self._pw.stop()

    def _route(self, route) -> None:
        url = route.request.url
        if _local(url):
            route.continue_()
        else:
            self._block(url)
            route.abort("internetdisconnected")

    def _block(self, url: str) -> None:
        if url not in self.blocked:
            self.blocked.append(url)

    def _on_request(self, request) -> None:
        # requests the router cannot see (e.g. issued before routing) are recorded too
        if not _local(request.url):
            self._block(request.url)

    def _on_failed(self, request) -> None:
        if _local(request.url) and not request.url.startswith("data:"):
            self.failed.append(f"{request.url} ({request.failure})")

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            self.console_errors.append(msg.text)

    def wait_until_rendered(self) -> None:
        """Poll until every chart container holds a drawn view and MathJax is done."""
        page = self.page
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            n_embeds = page.evaluate(_JS_COUNT_EMBEDS)
            n_drawn = page.locator(_DRAWN).count()
            charts_done = n_drawn >= n_embeds
            math_done = not page.evaluate(_JS_HAS_MATH) or page.evaluate(_JS_MATHJAX_DONE)
            if charts_done and math_done:
                return
            page.wait_for_timeout(100)


def check_page(html: Path, *, screenshot: Path | None = None, timeout_s: float = 30) -> PageReport:
    """Load ``html`` offline in headless Chromium and report charts, maths and requests.

    Args:
        html: a built HTML file (opened as ``file://``).
        screenshot: if given, a full-page PNG is written there.
        timeout_s: how long to wait for the page, its charts and MathJax.

    Returns:
        A :class:`PageReport`. Charts that never draw within ``timeout_s`` show up as
        ``n_vega_svg_or_canvas < n_vega_embeds`` rather than as an exception.

    Raises:
        FileNotFoundError: ``html`` does not exist.
        ValueError: ``timeout_s`` is not positive.
    """
    with _OfflinePage(html, timeout_s) as op:
        page = op.page
        page.goto(Path(html).resolve().as_uri(), wait_until="load")
        op.wait_until_rendered()
        report = PageReport(
            n_vega_svg_or_canvas=page.locator(_DRAWN).count(),
            n_vega_embeds=page.evaluate(_JS_COUNT_EMBEDS),
            console_errors=list(op.console_errors),
            page_errors=list(op.page_errors),
            math_typeset=page.locator("mjx-container").count() > 0,
            blocked_requests=list(op.blocked),
            failed_requests=list(op.failed),
            math_errors=page.locator("mjx-merror").all_inner_texts(),
        )
        if screenshot is not None:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
    return report


_JS_MARK_OPACITIES = """(root) => [...root.querySelectorAll(
  "g.mark-line path, g.mark-symbol path, g.mark-line > path")].map(
  p => [p.getAttribute("opacity"), p.getAttribute("stroke-opacity"), p.getAttribute("fill-opacity"),
        getComputedStyle(p).opacity].join("|"))"""


def probe_chart_interaction(html: Path, *, timeout_s: float = 30) -> InteractionReport:
    """Hover a point and click a legend entry of the page's first (SVG) chart.

    Needs a chart drawn with the SVG renderer whose marks include points with a tooltip and a
    legend bound to a selection (e.g. ``alt.selection_point(fields=[...], bind="legend")``
    driving ``opacity``).

    Raises:
        FileNotFoundError: ``html`` does not exist.
        RuntimeError: the page has no drawn SVG chart within ``timeout_s``.
    """
    with _OfflinePage(html, timeout_s) as op:
        page = op.page
        page.goto(Path(html).resolve().as_uri(), wait_until="load")
        op.wait_until_rendered()
        charts = page.locator(".vega-embed svg.marks")
        if charts.count() == 0:
            raise RuntimeError(f"{html}: no Vega chart drawn as SVG within {timeout_s} s")
        chart = charts.first
        chart.scroll_into_view_if_needed()

        # tooltip: hover the middle point mark
        points = chart.locator("g.mark-symbol path")
        tooltip_text = ""
        if points.count() > 0:
            points.nth(points.count() // 2).hover(force=True)
            page.wait_for_timeout(300)
            tip = page.locator("#vg-tooltip-element")
            if tip.count() > 0 and tip.first.is_visible():
                tooltip_text = tip.first.inner_text().strip()

        # legend: click the first entry and compare mark opacities
        before = chart.evaluate(_JS_MARK_OPACITIES)
        entries = chart.locator("g.role-legend-symbol path, g.role-legend-label text")
        toggled = False
        if entries.count() > 0:
            entries.first.click(force=True)
            page.wait_for_timeout(300)
            toggled = chart.evaluate(_JS_MARK_OPACITIES) != before
    return InteractionReport(
        tooltip_shown=bool(tooltip_text), tooltip_text=tooltip_text, legend_toggles_opacity=toggled
    )
