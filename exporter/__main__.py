"""``python -m exporter``: the same command line as ``kube-audit-exporter``."""

from .cli import main

raise SystemExit(main())
