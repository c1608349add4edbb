from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The real audit events live beside the checkout (../shared/corpora); the
# environment can point elsewhere for a clone made in another place.
CORPORA = Path(os.environ.get("KUBE_AUDIT_CORPORA", ROOT.parent / "shared" / "corpora"))


@pytest.fixture(scope="session")
def corpora() -> Path:
    if not CORPORA.is_dir():
        pytest.fail(f"the shared corpora are missing at {CORPORA}")
    return CORPORA
