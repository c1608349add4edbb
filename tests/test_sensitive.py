"""The sensitive categories of a request (exporter/sensitive.py), against
the README's definition on the corpora and on who made the request."""

from __future__ import annotations

import pytest

from exporter import sensitive
from exporter.event import AuditEvent, Decoder
from tests.conftest import CORPORA


def reference(ev: AuditEvent) -> tuple[str, ...]:
    """The categories as the README defines them, one test after another."""
    out = []
    if ev.resource == "secrets" or (ev.resource, ev.subresource) == ("serviceaccounts", "token"):
        out.append("secrets")
    if ev.subresource in ("exec", "attach", "portforward"):
        out.append("exec")
    if ev.api_group == "rbac.authorization.k8s.io" and ev.verb in (
        "create", "update", "patch", "delete", "deletecollection"
    ):  # fmt: skip
        out.append("rbac")
    if ev.impersonated_user:
        out.append("impersonation")
    if ev.user_kind == "anonymous":
        path = ev.request_uri.split("?")[0]
        public_paths = ("/healthz", "/livez", "/readyz", "/version")
        public = (
            not ev.resource
            and ev.verb == "get"
            and any(path == p or path.startswith(p + "/") for p in public_paths)
        )
        if not public:
            out.append("anonymous")
    return tuple(out)


def event(**fields: object) -> AuditEvent:
    doc = {
        "auditID": "a",
        "stage": "ResponseComplete",
        "verb": "get",
        "requestReceivedTimestamp": "2026-12-07T01:00:00.000000Z",
        "stageTimestamp": "2026-12-07T01:00:00.100000Z",
        **fields,
    }
    return AuditEvent(doc)


def test_the_corpora_get_the_reference_categories() -> None:
    decoder = Decoder()
    seen = 0
    found: set[str] = set()
    for path in sorted(CORPORA.rglob("*")):
        if path.suffix == ".json":
            items = list(decoder.decode_document(path.read_bytes()))
        elif path.suffix in (".log", ".jsonl"):
            lines = path.read_bytes().splitlines()[:20_000]
            items = [item for line in lines for item in decoder.decode_record(line)]
        else:
            continue
        for ev in items:
            if isinstance(ev, AuditEvent):
                seen += 1
                cats = sensitive.categories(ev)
                assert cats == reference(ev), ev.raw
                found.update(cats)
    assert seen > 10_000, seen
    assert {"secrets", "exec", "rbac"} <= found


@pytest.mark.parametrize("order", [0, 1])
def test_who_is_looked_at_each_time(order: int) -> None:
    """The same kind of request by a person, an impersonator and an
    anonymous caller, in either order: the cache keeps only the what."""
    secret = {"objectRef": {"resource": "secrets", "name": "db"}, "requestURI": "/api/v1/secrets"}
    people = [
        event(user={"username": "alice"}, **secret),
        event(user={"username": "alice"}, impersonatedUser={"username": "bob"}, **secret),
        event(user={"username": "system:anonymous"}, **secret),
    ]
    for ev in people if order == 0 else people[::-1]:
        assert sensitive.categories(ev) == reference(ev)
    assert [sensitive.categories(ev) for ev in people] == [
        ("secrets",),
        ("secrets", "impersonation"),
        ("secrets", "anonymous"),
    ]
    health = event(user={"username": "system:anonymous"}, requestURI="/healthz?verbose")
    assert sensitive.categories(health) == ()
    api = event(user={"username": "system:anonymous"}, requestURI="/apis")
    assert sensitive.categories(api) == ("anonymous",)
