"""The audit policies shipped with the package (policies/*.yaml)."""

from __future__ import annotations

from importlib import resources

SHIPPED_POLICIES = ("recommended", "minimal")


def shipped_policy_text(name: str) -> str:
    """The YAML of a shipped policy: ``recommended`` (what the Helm chart
    installs) or ``minimal``."""
    if name not in SHIPPED_POLICIES:
        raise KeyError(f"no shipped policy {name!r}; there are {', '.join(SHIPPED_POLICIES)}")
    files = resources.files(__package__ or "exporter.policy")
    return files.joinpath("policies", f"{name}.yaml").read_text("utf-8")
