"""The request attributes a recorded audit event was evaluated with.

The API server evaluates the policy on the authorizer attributes of a
request: the authenticated user (before impersonation, which runs later in the
filter chain), the verb, and the RequestInfo parsed from the URL. An event
records almost all of it: ``user``, ``verb`` and ``objectRef`` are filled from
the same RequestInfo. The exceptions:

- a failed authentication is recorded with an empty user and was evaluated
  with no user at all;
- an empty ``objectRef.namespace`` or ``objectRef.name`` is filled from the
  request body *after* the policy was evaluated: a create (a POST to the
  collection) had no name when the policy saw it (a create on a subresource
  such as ``pods/NAME/eviction`` does have one), so the URL is the source for
  the namespace and, for creates, the name. For list and watch the name comes
  from a ``metadata.name`` field selector, which objectRef has and the path
  does not;
- the path a non-resource URL rule sees is the URL path, without the query
  string and percent-decoded.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from ..event import AuditEvent
from .evaluate import Attributes, User

_API_PREFIXES = ("api", "apis")
# Steps after /namespaces/NAME that address the namespace itself.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_SPECIAL_VERBS = frozenset({"proxy", "watch"})


def request_path(request_uri: str) -> str:
    """The URL path of a request URI (no query string, percent-decoded)."""
    path = request_uri.split("?", 1)[0].split("#", 1)[0]
    return unquote(path)


def parse_resource_path(path: str) -> dict[str, str] | None:
    """RequestInfo fields (group, namespace, resource, name, subresource) of a
    resource request path, as the API server's RequestInfoFactory reads them;
    None for a non-resource path."""
    parts = [p for p in path.strip("/").split("/") if p != ""]
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return None
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return None
        group, rest = rest[0], rest[1:]
    rest = rest[1:]  # the version
    verb = ""
    if rest and rest[0] in _SPECIAL_VERBS:
        verb = rest[0]
        rest = rest[1:]
        if not rest:
            return None
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    info = {"group": group, "namespace": namespace, "resource": "", "name": "", "subresource": ""}
    if len(rest) >= 3 and verb != "proxy":
        info["subresource"] = rest[2]
    if len(rest) >= 2:
        info["name"] = rest[1]
    if len(rest) >= 1:
        info["resource"] = rest[0]
    return info


def _user(event: AuditEvent) -> User | None:
    if not event.username:
        return None
    user: Any = event.obj.get("user")
    groups: tuple[str, ...] = ()
    if isinstance(user, dict):
        raw = user.get("groups")
        if isinstance(raw, list):
            groups = tuple(g for g in raw if isinstance(g, str))
    return User(event.username, groups)


def attributes_from_event(event: AuditEvent) -> Attributes:
    """The attributes ``event``'s request was evaluated with."""
    user = _user(event)
    path = request_path(event.request_uri)
    parsed = parse_resource_path(path) if path else None
    if event.obj.get("objectRef") is not None:
        # objectRef is the RequestInfo, except that the API server fills an
        # empty namespace or name from the request body after evaluating the
        # policy; the URL has what the policy saw.
        namespace = event.namespace
        name = event.name
        if parsed is not None:
            namespace = parsed["namespace"]
            if event.verb == "create":
                name = parsed["name"]
        elif event.verb == "create" and not event.subresource:
            name = ""
        return Attributes(
            verb=event.verb,
            user=user,
            resource_request=True,
            path=path,
            api_group=event.api_group,
            resource=event.resource,
            subresource=event.subresource,
            namespace=namespace,
            name=name,
        )
    if parsed is not None:
        # No objectRef (a hand-made or converted event): read the URL.
        return Attributes(
            verb=event.verb,
            user=user,
            resource_request=True,
            path=path,
            api_group=parsed["group"],
            resource=parsed["resource"],
            subresource=parsed["subresource"],
            namespace=parsed["namespace"],
            name=parsed["name"],
        )
    return Attributes(verb=event.verb, user=user, resource_request=False, path=path)
