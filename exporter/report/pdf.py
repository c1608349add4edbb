"""The PDF: the same HTML printed by headless Chromium (Debian's ``chromium``
package), with the page's own print style sheet.

A missing or failing browser is a :class:`PdfError` with a sentence that
says what to install or what went wrong, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT = 120.0


class PdfError(Exception):
    """The PDF could not be printed; the message says why."""


def find_chromium(explicit: str | None = None) -> str:
    """The browser to print with: ``explicit`` when given, else the first of
    CANDIDATES on the PATH."""
    if explicit:
        found = shutil.which(explicit)
        if found is None:
            raise PdfError(f"no Chromium at {explicit!r}")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise PdfError(
        "cannot print the PDF: no Chromium found on the PATH (install Debian's `chromium` "
        "package, `make deps-system` does, or give --chromium PATH)"
    )


def chromium_flags(profile: str) -> list[str]:
    """Flags for a headless run that touches nothing of the user's: a
    throw-away profile, no first-run work, no GPU. The sandbox needs user
    namespaces, which root in a container does not have."""
    flags = [
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")
    return flags


def print_pdf(html_path: str, pdf_path: str, *, chromium: str | None = None) -> None:
    """Print ``html_path`` to ``pdf_path``; raise PdfError."""
    browser = find_chromium(chromium)
    url = Path(html_path).resolve().as_uri()
    target = Path(pdf_path).resolve()
    with tempfile.TemporaryDirectory(prefix="kae-chromium-") as profile:
        cmd = [
            browser,
            *chromium_flags(profile),
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            url,
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise PdfError(f"Chromium did not finish printing within {TIMEOUT:g}s") from None
        except OSError as e:
            raise PdfError(f"cannot run {browser}: {e.strerror or e}") from None
    if done.returncode != 0 or not target.is_file() or target.stat().st_size == 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise PdfError(f"Chromium failed to print (exit {done.returncode}) {last[0][:200]}".strip())
