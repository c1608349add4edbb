"""kube-audit-exporter: Kubernetes audit events to metrics, Loki and alerts."""

from functools import cache
from typing import Any


@cache
def package_version() -> str:
    """The installed distribution's version (``0.0.0+unknown`` in a source
    tree that was not installed). Read on first use: importlib.metadata
    searches every installed distribution, about 40 ms of every start."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kube-audit-exporter")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    # ``exporter.__version__``, read (once) when first asked for
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
