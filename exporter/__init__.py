"""kube-audit-exporter: Kubernetes audit events to metrics, Loki and alerts."""

from typing import Any


def package_version() -> str:
    """The installed distribution's version (``0.0.0+unknown`` in a source
    tree that was not installed). Read on first use: importlib.metadata
    searches every installed distribution, about 40 ms of every start."""
    found = globals().get("_version")
    if found is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("kube-audit-exporter")
        except PackageNotFoundError:  # running from a source tree without installing
            found = "0.0.0+unknown"
        globals()["_version"] = found
    return str(found)


def __getattr__(name: str) -> Any:
    # ``exporter.__version__``, read (once) when first asked for
    if name == "__version__":
        return package_version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
