"""kube-audit-exporter: Kubernetes audit events to metrics, Loki and alerts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kube-audit-exporter")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"
