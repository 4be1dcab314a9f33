"""Tests of the offline Jupyter Book: its configuration, `conelib.tools.book`, and the built HTML.

The fast tests check `conelib.tools.book` and the book's sources against independent oracles (the
HTML that Altair itself writes for a chart, a JavaScript engine, tarballs built here, regular
expressions over the pages). The slow tests build a book and open it in headless Chromium with
the network off (`tests/browser.py`); they skip when `/usr/bin/chromium` or `playwright` is
missing. Building needs MathJax: `npm` on the PATH or a tarball cached in `~/.cache/conelib/`.

Blocked requests: a built page must issue no request to the network at all. The one exception
we would tolerate is `favicon.ico`, which a browser may ask for on its own (not the page) and
whose failure changes nothing on the page; the book sets no favicon, so in practice the list
must be empty.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conelib.tools import book

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser  # noqa: E402  (tests/browser.py, a helper module)

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "book_demo"

needs_chromium = pytest.mark.skipif(
    not browser.chromium_available(),
    reason=f"headless browser tests need {browser.CHROMIUM} (Debian package `chromium`) and the "
    "`playwright` Python package (pip install -e '.[dev]'); never `playwright install`",
)


def _harmful(blocked: list[str]) -> list[str]:
    """Blocked URLs other than a browser-initiated favicon request (see the module docstring)."""
    return [u for u in blocked if not u.rstrip("/").endswith("favicon.ico")]


def _config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------
# configuration and sources
# ------------------------------------------------------------------------------------------


def test_config_points_at_the_generated_assets():
    cfg = _config()
    sphinx = cfg["sphinx"]["config"]
    static = [ROOT / p for p in sphinx["html_static_path"]]
    vendor = ROOT / book.VENDOR_DIR
    # the assets prepare_static writes are exactly those the config loads
    assert any(s / sphinx["mathjax_path"] == vendor / book.MATHJAX_ENTRY for s in static)
    assert any(
        s / js == vendor / book.VEGA_SCRIPT for s in static for js in sphinx["html_js_files"]
    )
    assert cfg["execute"]["execute_notebooks"] == "off"
    assert cfg["only_build_toc_files"] is True
    for pattern in (".venv", "results", "notebooks", "tests"):
        assert pattern in cfg["exclude_patterns"]
    assert {"dollarmath", "amsmath"} <= set(cfg["parse"]["myst_enable_extensions"])
    assert cfg["html"]["use_repository_button"] is False
    assert "sphinx_thebe" not in sphinx["extensions"]
    assert cfg["bibtex_bibfiles"] == ["book/references.bib"]
    assert sphinx["nb_ipywidgets_js"] == {}


def test_toc_entries_exist_and_generated_ones_are_gitignored():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    entries = list(book._toc_files(toc))
    assert "book/intro" in entries and "book/background" in entries
    for entry in entries:
        if entry.startswith(f"{book.GENERATED_DIR}/"):
            continue  # executed notebooks or placeholders, made at build time
        assert (ROOT / f"{entry}.md").is_file(), entry
    paths = [f"{book.GENERATED_DIR}/x.ipynb", f"{book.VENDOR_DIR}/x.js"]
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    if ignored.returncode == 128:
        pytest.skip(f"not a git checkout: {ignored.stderr.strip()}")
    assert ignored.stdout.split() == paths


def _bib_keys() -> set[str]:
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    return set(re.findall(r"^@\w+\{([^,\s]+),", text, flags=re.M))


def test_references_and_citations_match():
    keys = _bib_keys()
    required = {
        "fort2020deep", "zhou2025cone", "jacot2018ntk", "chizat2019lazy", "frankle2020lmc",
        "ainsworth2023gitrebasin", "lee2019wide", "he2016resnet", "simonyan2015vgg",
        "lecun1998gradient",
    }
    assert required <= keys
    cited: set[str] = set()
    for page in (ROOT / "book").glob("*.md"):
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", page.read_text(encoding="utf-8")):
            cited |= {k.strip() for k in group.split(",")}
    assert cited, "the pages cite nothing"
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"


def test_background_numbers_the_kernel_distance():
    text = (ROOT / "book" / "background.md").read_text(encoding="utf-8")
    assert re.search(r"\$\$\s*\nS\(\\theta, \\theta'\).*?\n\$\$ \(kernel-distance\)", text, flags=re.S)
    assert "{eq}`kernel-distance`" in text


# ------------------------------------------------------------------------------------------
# conelib.tools.book, fast
# ------------------------------------------------------------------------------------------


def test_vega_debug_matches_what_altairs_html_checks():
    """Oracle: the HTML Altair writes for a chart, and the key rule of its template."""
    import altair as alt

    chart = alt.Chart(alt.Data(values=[{"x": 1}])).mark_point().encode(x="x:Q")
    with alt.renderers.enable("html"):
        html = chart._repr_mimebundle_()
    html = html[0]["text/html"] if isinstance(html, tuple) else html["text/html"]
    asked = dict(re.findall(r'maybeLoadScript\("([\w-]+)", "([^"]+)"\)', html))
    assert set(asked) == {"vega", "vega-lite", "vega-embed"}
    expected = {f"{lib.replace('-', '')}_version": v for lib, v in asked.items()}
    assert book.altair_expected_versions() == expected

    script = book.vega_offline_script()
    shim = re.search(r"window\.VEGA_DEBUG = Object\.assign\(window\.VEGA_DEBUG \|\| \{\}, (\{.*?\})\);", script)
    assert shim is not None
    assert json.loads(shim.group(1)) == expected
    assert script.index("VEGA_DEBUG") < script.index("(function () {")


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the JavaScript")
def test_vega_script_exposes_globals_without_leaking_consts(tmp_path):
    """Run the script as a classic script after one that declares the bundle's first const."""
    first_const = re.search(r"\(function \(\) \{\nconst (\w+)=", book.vega_offline_script())
    assert first_const is not None, "bundle no longer starts with a const; update this test"
    name = first_const.group(1)
    (tmp_path / "vega.js").write_text(book.vega_offline_script(), encoding="utf-8")
    runner = f"""
const vm = require("vm"), fs = require("fs");
// the few host functions a browser would also provide, not node's module system
const names = ["console", "setTimeout", "clearTimeout", "setInterval", "clearInterval",
  "queueMicrotask", "structuredClone", "URL", "URLSearchParams", "TextEncoder", "TextDecoder",
  "performance", "atob", "btoa", "AbortController", "Event", "EventTarget"];
const host = {{}};
for (const k of names) if (k in globalThis) host[k] = globalThis[k];
const ctx = vm.createContext(host);
vm.runInContext("var window = globalThis; const {name} = 'taken by another script';", ctx);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), ctx);
const out = vm.runInContext(
  "JSON.stringify([typeof vega, typeof vegaLite, typeof vegaEmbed, VEGA_DEBUG, {name}])", ctx);
console.log(out);
"""
    proc = subprocess.run(
        ["node", "-e", runner, str(tmp_path / "vega.js")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    kinds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert kinds[:3] == ["object", "object", "function"]
    assert kinds[3] == book.altair_expected_versions()
    assert kinds[4] == "taken by another script"


def _mathjax_tree(base: Path, files: dict[str, bytes]) -> Path:
    """A stand-in for the package's ``static/mathjax`` folder; returns its ``es5/``."""
    for name, data in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(data)
    return base / "es5"


def test_install_mathjax_keeps_only_the_needed_parts(tmp_path):
    es5 = _mathjax_tree(tmp_path / "pkg", {
        "LICENSE": b"licence",
        "es5/tex-mml-chtml.js": b"entry",
        "es5/output/chtml/fonts/woff-v2/MathJax_Zero.woff": b"font",
        "es5/input/tex/extensions/ams.js": b"ams",
        "es5/tex-svg.js": b"another combined component",
        "ts/core.ts": b"sources",
        "package.json": b"{}",
    })
    dest = tmp_path / "out" / "mathjax"
    dest.mkdir(parents=True)
    (dest / "stale.js").write_text("old")
    written = book.install_mathjax(es5, dest)
    got = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    want = {"LICENSE", "tex-mml-chtml.js", "output/chtml/fonts/woff-v2/MathJax_Zero.woff", "input/tex/extensions/ams.js"}
    assert got == want
    assert {p.relative_to(dest).as_posix() for p in written} == want
    assert (dest / "tex-mml-chtml.js").read_bytes() == b"entry"


def test_install_mathjax_rejects_a_folder_without_the_entry_point(tmp_path):
    es5 = _mathjax_tree(tmp_path / "pkg", {"es5/input/tex.js": b"x"})
    with pytest.raises(RuntimeError, match="tex-mml-chtml.js"):
        book.install_mathjax(es5, tmp_path / "mathjax")


def test_mathjax_comes_from_the_installed_package():
    es5 = book.mathjax_source()
    assert (es5 / "tex-mml-chtml.js").is_file() and (es5 / "output" / "chtml").is_dir()
    assert "MathJax" in (es5 / "tex-mml-chtml.js").read_text(encoding="utf-8", errors="replace")


def test_prepare_static_is_idempotent_and_offline(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir()
    (root / "_config.yml").write_text("title: t\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    vendor = root / book.VENDOR_DIR
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no npm, no network tool is needed

    written = book.prepare_static(root)
    assert set(written) == {vendor / book.VEGA_SCRIPT, vendor / book.MATHJAX_ENTRY}
    assert (vendor / book.MATHJAX_ENTRY).read_bytes() == (book.mathjax_source() / "tex-mml-chtml.js").read_bytes()
    assert book.prepare_static(root) == []

    stamp_path = vendor / "stamp.json"
    stamp = json.loads(stamp_path.read_text())
    stamp["vega"]["altair"] = "0.0.0"  # as if Altair had been upgraded since
    stamp_path.write_text(json.dumps(stamp))
    assert book.prepare_static(root) == [vendor / book.VEGA_SCRIPT]
    (vendor / book.MATHJAX_ENTRY).unlink()  # MathJax is copied again from the package
    assert book.prepare_static(root) == [vendor / book.MATHJAX_ENTRY]


def test_placeholders_follow_the_executed_notebooks(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: book/generated/alpha\n  - file: book/generated/beta.ipynb\n"
        "  - file: book/background\n"
    )
    gen = tmp_path / "book" / "generated"
    written = book.write_placeholders(tmp_path)
    assert sorted(p.name for p in written) == ["alpha.md", "beta.md"]
    alpha = (gen / "alpha.md").read_text()
    assert alpha.startswith(book.PLACEHOLDER_MARKER)
    assert "notebooks/alpha.md" in alpha and "not yet executed" in alpha
    assert not (tmp_path / "book" / "background.md").exists()  # only generated entries
    assert book.write_placeholders(tmp_path) == []  # idempotent

    (gen / "alpha.ipynb").write_text("{}")  # the notebook got executed
    (gen / "beta.md").write_text("# written by hand\n")  # a page someone wrote
    assert book.write_placeholders(tmp_path) == []
    assert not (gen / "alpha.md").exists()
    assert (gen / "beta.md").read_text() == "# written by hand\n"


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"builder='pdf'.*'html'"):
        book.build_book(tmp_path, builder="pdf")
    with pytest.raises(FileNotFoundError, match="_config.yml"):
        book.prepare_static(tmp_path)
    with pytest.raises(FileNotFoundError, match="_toc.yml"):
        book.write_placeholders(tmp_path)
    with pytest.raises(FileNotFoundError):
        browser.check_page(tmp_path / "missing.html")


def test_book_module_does_not_import_torch():
    """Building the book needs no torch: conelib/__init__ loads the torch-based modules, so the
    check is on the module's own imports (its source, and every conelib module it imports)."""
    code = ("import sys, importlib.util; spec = importlib.util.find_spec('conelib.tools.book'); "
            "print(spec.origin)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    src = Path(proc.stdout.strip()).read_text(encoding="utf-8")
    assert not re.search(r"^\s*(import|from)\s+torch\b", src, flags=re.M)
    imported = re.findall(r"^\s*from\s+(conelib(?:\.\w+)*)\s+import|^\s*import\s+(conelib(?:\.\w+)*)", src, flags=re.M)
    for mod in {a or b for a, b in imported}:
        path = ROOT / (mod.replace(".", "/") + ".py")
        if path.exists():
            assert not re.search(r"^\s*(import|from)\s+torch\b", path.read_text(encoding="utf-8"), flags=re.M), mod


# ------------------------------------------------------------------------------------------
# built books in a browser (slow)
# ------------------------------------------------------------------------------------------


def _copy_book_skeleton(dest: Path) -> None:
    """The config, bibliography and hand-written static files (not the generated vendor/)."""
    shutil.copy2(ROOT / "_config.yml", dest / "_config.yml")
    (dest / "book").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "book" / "references.bib", dest / "book" / "references.bib")
    shutil.copytree(
        ROOT / "book" / "_static", dest / "book" / "_static", ignore=shutil.ignore_patterns("vendor")
    )


def _execute(src: Path, dest: Path) -> None:
    import nbclient
    import nbformat

    nb = nbformat.read(src, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(dest.parent)}}).execute()
    nbformat.write(nb, dest)


@pytest.fixture(scope="module")
def demo_book(tmp_path_factory) -> Path:
    """A one-page book: the fixture notebook, executed here, with the real _config.yml."""
    root = tmp_path_factory.mktemp("demo_book")
    _copy_book_skeleton(root)
    shutil.copy2(FIXTURE / "_toc.yml", root / "_toc.yml")
    _execute(FIXTURE / "demo.ipynb", root / "demo.ipynb")
    written = book.prepare_static(root)
    assert (root / book.VENDOR_DIR / book.VEGA_SCRIPT) in written
    assert book.prepare_static(root) == []  # up to date: nothing rewritten
    index = book.build_book(root, strict=True)
    assert index == root / "_build" / "html" / "index.html"
    return root / "_build" / "html" / "demo.html"


@pytest.mark.slow
@needs_chromium
def test_demo_page_draws_charts_and_math_offline(demo_book, tmp_path):
    shot = tmp_path / "demo.png"
    report = browser.check_page(demo_book, screenshot=shot)
    assert report.n_vega_embeds == 1
    assert report.n_vega_svg_or_canvas >= 1
    assert report.page_errors == []
    assert report.console_errors == []
    assert report.failed_requests == []
    assert report.math_typeset and report.math_errors == []
    assert _harmful(report.blocked_requests) == []
    assert shot.stat().st_size > 10_000
    html = demo_book.read_text(encoding="utf-8")
    assert f"{2 ** 0.5:.4f}" in html  # the glued number, formatted by myst-nb
    assert "require.js" not in html and "require.min.js" not in html


@pytest.mark.slow
@needs_chromium
def test_demo_chart_is_interactive(demo_book):
    result = browser.probe_chart_interaction(demo_book)
    assert result.tooltip_shown, "hovering a point showed no tooltip"
    assert "dt = " in result.tooltip_text
    assert result.legend_toggles_opacity, "clicking the legend did not highlight a series"


@pytest.mark.slow
@needs_chromium
def test_the_real_pages_build_and_typeset_offline(tmp_path):
    root = tmp_path / "book_root"
    root.mkdir()
    _copy_book_skeleton(root)
    shutil.copy2(ROOT / "_toc.yml", root / "_toc.yml")
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy2(page, root / "book" / page.name)
    generated = ROOT / book.GENERATED_DIR
    if generated.is_dir():  # executed notebooks, if this checkout has them
        shutil.copytree(generated, root / book.GENERATED_DIR, ignore=shutil.ignore_patterns("*.md"))
    index = book.build_book(root, strict=True)
    assert index.is_file()
    for page in ("book/background.html", "book/intro.html", "book/reproduce.html"):
        report = browser.check_page(index.parent / page)
        assert report.math_typeset, page
        assert report.math_errors == [], page
        assert report.page_errors == [] and report.console_errors == [], page
        assert report.failed_requests == [], page
        assert _harmful(report.blocked_requests) == [], page
    html = (index.parent / "book" / "background.html").read_text(encoding="utf-8")
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", html)
