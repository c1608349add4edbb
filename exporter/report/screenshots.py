"""Screenshots of each section of a report, for the documentation:

    python -m exporter.report.screenshots docs/report/demo.html docs/report

writes ``01-scope.png`` ... ``08-performance.png`` (the top of each section)
with headless Chromium. ``make report-demo`` runs it after writing the demo
report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .browser import Browser, BrowserError
from .html import SECTIONS
from .pdf import PdfError


async def take(html: Path, out: Path, chromium: str | None = None) -> list[Path]:
    written = []
    async with Browser(chromium, width=1100) as browser:
        page = await browser.open(html.resolve().as_uri())
        for n, (sid, _) in enumerate(SECTIONS, 1):
            path = out / f"{n:02d}-{sid}.png"
            await page.screenshot(f"section#{sid}", path, max_height=1400)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("html", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--chromium")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for path in asyncio.run(take(args.html, args.out, args.chromium)):
            print(path)
    except (BrowserError, PdfError) as e:
        print(f"screenshots: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
