"""Look at the built book as a reader would: screenshots and DOM checks with headless Chromium.

Serves ``docs/_build/html`` on 127.0.0.1, opens five pages (the index, one contract, the gap
register, the falsification report and one training-log page), saves a screenshot of each into
``docs/_build/screenshots/`` and checks the rendered DOM: no raw MyST left in the text, no broken
images, every equation typeset by MathJax, no Sphinx error markers. Exits 0 with a note when
Chromium is not installed (``apt-get install chromium``), so CI does not need it.

Usage: python docs/check_pages.py [--html DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

DOCS = Path(__file__).resolve().parent
RAW_MYST = [
    re.compile(p)
    for p in (
        r"```",
        r"\{(ref|doc|math|eq|term|numref)\}`",
        r"^\s*\([\w.-]+\)=\s*$",
        r"\]\{\.[\w-]+\}",
        r":::",
        r"^\s*#{1,6} ",
        r"\$\$",
        r"^\s*\|.*\|\s*$",
    )
]
SKIP_TEXT = {"pre", "code", "script", "style", "mjx-container", "textarea"}


class PageDom(HTMLParser):
    """Collects what the checks need from a rendered page: visible text lines, images and math."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.images: list[str] = []
        self.math_blocks = 0
        self.typeset = 0
        self.math_depth: list[int] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "img" and a.get("src"):
            self.images.append(a["src"] or "")
        if "math" in classes and tag in ("div", "span"):
            self.math_blocks += 1
            self.math_depth.append(len(self.stack))
        if tag == "mjx-container" and self.math_depth:
            self.typeset += 1
        if {"problematic", "system-message"} & set(classes):
            self.errors.append(f"Sphinx error marker <{tag} class={a.get('class')}>")
        if tag not in ("img", "br", "hr", "meta", "link", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass
        while self.math_depth and self.math_depth[-1] >= len(self.stack):
            self.math_depth.pop()

    def handle_data(self, data: str) -> None:
        if not SKIP_TEXT & set(self.stack):
            self.text.append(data)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the book without logging every request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def chromium() -> str | None:
    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


def browse(exe: str, url: str, png: Path) -> str:
    """Screenshot ``url`` into ``png`` and return its DOM after scripts ran (a fresh profile each time)."""
    dom = ""
    for mode in ("screenshot", "dom"):
        with tempfile.TemporaryDirectory() as profile:
            cmd = [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={profile}",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-extensions",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,1600",
                "--virtual-time-budget=8000",
                f"--screenshot={png}" if mode == "screenshot" else "--dump-dom",
                url,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode:
                raise RuntimeError(f"chromium failed on {url}: {proc.stderr[-2000:]}")
            dom = proc.stdout if mode == "dom" else dom
    return dom


def check(html_dir: Path, rel: str, dom: str) -> list[str]:
    """What a reader would stumble on in one rendered page."""
    page = PageDom()
    page.feed(dom)
    problems = list(page.errors)
    for line in "".join(page.text).splitlines():
        for pattern in RAW_MYST:
            if pattern.search(line):
                problems.append(f"raw MyST in the text ({pattern.pattern}): {line.strip()[:100]!r}")
    base = (html_dir / rel).parent
    for src in page.images:
        if src.startswith(("http:", "https:", "data:")):
            continue
        path = (base / src.split("#")[0].split("?")[0]).resolve()
        if not path.is_file() or path.stat().st_size == 0:
            problems.append(f"broken image {src}")
        elif path.suffix == ".png" and not path.read_bytes().startswith(b"\x89PNG"):
            problems.append(f"image {src} is not a PNG")
    if page.typeset < page.math_blocks:
        problems.append(f"{page.math_blocks - page.typeset} of {page.math_blocks} equations not typeset by MathJax")
    if page.math_blocks and "mjx-container" not in dom:
        problems.append("MathJax did not run")
    return problems


def pages(html_dir: Path) -> dict[str, str]:
    """The five pages to look at: name -> path relative to the HTML root."""
    gen = html_dir / "generated"
    contracts = sorted(p for p in (gen / "contracts").glob("*.html") if p.name != "index.html")
    rope = gen / "contracts" / "rope.html"
    runs = sorted(p for p in (gen / "runs").glob("*.html") if p.name != "index.html")
    chosen = {
        "index": html_dir / "index.html",
        "contract": rope if rope.is_file() else (contracts[0] if contracts else gen / "contracts" / "index.html"),
        "gap-register": gen / "gaps" / "index.html",
        "report": gen / "report.html",
        "training-log": runs[0] if runs else gen / "runs" / "index.html",
    }
    return {name: str(p.relative_to(html_dir)) for name, p in chosen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=DOCS / "_build" / "html")
    parser.add_argument("--out", type=Path, default=DOCS / "_build" / "screenshots")
    args = parser.parse_args(argv)
    exe = chromium()
    if exe is None:
        print("check_pages: skipped, Chromium is not installed (apt-get install chromium)")
        return 0
    if not (args.html / "index.html").is_file():
        print(f"check_pages: no book at {args.html}; run albor book first", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(QuietHandler, directory=str(args.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    failed = 0
    try:
        for name, rel in pages(args.html).items():
            if not (args.html / rel).is_file():
                print(f"FAIL {name}: {rel} was not built")
                failed += 1
                continue
            png = args.out / f"{name}.png"
            dom = browse(exe, f"http://127.0.0.1:{server.server_port}/{rel}", png)
            problems = check(args.html, rel, dom)
            failed += bool(problems)
            print(f"{'FAIL' if problems else 'ok  '} {name}: {rel} -> {png}")
            for p in problems:
                print(f"     {p}")
    finally:
        server.shutdown()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
