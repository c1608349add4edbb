"""The auditor's report.

``replay`` prints the terminal summary (summary.py); ``report`` writes one
self-contained HTML file (and a PDF printed from it by headless Chromium)
that answers who did what, when, to which object, from where: collect.py
aggregates while the events stream through the pipeline, html.py and svg.py
render, pdf.py prints, cli.py is the subcommand.
"""

from .summary import Report, render_text

__all__ = ["Report", "render_text"]
