"""Bounded label values, shared by the metrics and the Loki stream labels.

An audit event carries values a client chooses without any permission: the
resource and namespace come from the URL it requests (the resulting 403 is
audited), and the verb of a non-resource request is its HTTP method, lower
cased. Every such value goes through one :class:`LabelBounds` before it
becomes a metric label or a Loki stream label, so that the number of series
and streams has a bound that does not depend on the traffic:

- verb: the Kubernetes verbs and the HTTP methods the API server audits,
  anything else ``other``;
- resource (``resource`` or ``resource/subresource``) and API group: the
  built-in ones (``policy/builtin_resources.json``), plus at most
  ``max_extra_resources`` others, then ``__other__``;
- namespace: the four every cluster has, plus at most ``max_namespaces``
  others, then ``__other__``;
- code: the HTTP status codes Python knows, other codes of 1xx..5xx by
  class (``4xx``), anything else ``other``; code class the same way;
- admission webhook name: at most ``max_webhooks``, then ``__other__``;
- audit level: the four levels, anything else ``other``.

A value outside the built-in sets takes one of the free places only when the
request got past authentication and authorization (see :func:`permitted`): a
client without permission is answered 401 or 403 for a made-up resource or
namespace, so it cannot fill the places that real custom resources and
namespaces need. Callers recognise a folded value (``__other__``, ``other``,
a code class), count it in ``kube_audit_series_overflow_total{metric,label}``
and call :meth:`folded`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from http import HTTPStatus

from .logs import RateLimitedLog
from .policy.resources import NON_RESOURCE_VERBS, RESOURCE_VERBS, builtin_resources

OTHER = "__other__"
OTHER_VALUE = "other"

# Verbs of resource requests, and the lower-cased methods of non-resource
# requests (the API server audits these; a made-up method is audited too).
VERBS = tuple(dict.fromkeys((*RESOURCE_VERBS, "proxy", "connect", *NON_RESOURCE_VERBS)))
# Every cluster has these ("" for cluster-scoped objects).
BUILTIN_NAMESPACES = ("", "default", "kube-system", "kube-public", "kube-node-lease")
AUDIT_LEVELS = ("None", "Metadata", "Request", "RequestResponse")
CODE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
KNOWN_CODES = frozenset(int(s) for s in HTTPStatus)

# Code labels that mean "not this exact code": a class, or garbage.
FOLDED_CODES = frozenset((*CODE_CLASSES, OTHER_VALUE))

DEFAULT_MAX_EXTRA_RESOURCES = 100
DEFAULT_MAX_NAMESPACES = 500
DEFAULT_MAX_WEBHOOKS = 100

# Webhook names are DNS names (at most 253 characters).
_WEBHOOK_NAME_MAX = 253

log = logging.getLogger(__name__)


def _code_label(code: int) -> str:
    if code == 0:
        return "unknown"  # no responseStatus (RequestReceived, a cut-off event)
    if code in KNOWN_CODES:
        return str(code)
    if 100 <= code < 600:
        return f"{code // 100}xx"
    return OTHER_VALUE


def _code_class(code: int) -> str:
    if code == 0:
        return "unknown"
    if 100 <= code < 200:
        # A protocol upgrade (exec/attach/portforward answered 101): a success.
        return "2xx"
    if 200 <= code < 600:
        return f"{code // 100}xx"
    return OTHER_VALUE


_CODE_LABELS = {c: _code_label(c) for c in range(600)}
_CODE_CLASS_LABELS = {c: _code_class(c) for c in range(600)}


# Answers given before or by authorization: the client may have no
# permission at all (API Priority and Fairness rejects before authorizing).
_UNAUTHORIZED_CODES = frozenset({401, 403, 429})


def permitted(code: int) -> bool:
    """The request was authenticated and authorized: answered, and neither
    401, 403 nor 429. A 404 for a resource the cluster does not serve counts
    (controllers list the custom resources they wait for), so a client
    allowed every resource can take places; the caps still bound them. A
    code that is no HTTP status (299, 600) is damage, not an answer."""
    return code in KNOWN_CODES and code not in _UNAUTHORIZED_CODES


class _FirstSeen:
    """Values from a built-in set, plus up to ``cap`` others first seen on a
    permitted request; the rest fold into ``__other__``."""

    __slots__ = ("builtin", "cap", "extra", "label", "lock")

    def __init__(self, label: str, builtin: Iterable[str], cap: int) -> None:
        self.label = label
        self.builtin = frozenset(builtin)
        self.cap = cap
        self.extra: set[str] = set()
        self.lock = threading.Lock()

    def admit(self, value: str, ok: bool) -> bool:
        """True when ``value`` is (now) one of the kept values."""
        if value in self.builtin or value in self.extra:
            return True
        if not ok:
            return False
        with self.lock:
            if len(self.extra) >= self.cap:
                return value in self.extra
            self.extra.add(value)
            return True


class LabelBounds:
    """Maps raw event values to bounded label values; one instance is shared
    by the metrics and the Loki stream labels of a process.

    Thread-safe: lookups only read dictionaries; taking a new place holds a
    lock."""

    def __init__(
        self,
        *,
        max_extra_resources: int = DEFAULT_MAX_EXTRA_RESOURCES,
        max_namespaces: int = DEFAULT_MAX_NAMESPACES,
        max_webhooks: int = DEFAULT_MAX_WEBHOOKS,
    ) -> None:
        builtin = builtin_resources()
        labels = {""}  # non-resource requests have no resource
        for resources in builtin.by_group.values():
            for r in resources.values():
                labels.add(r.name)
                labels.update(f"{r.name}/{sub}" for sub in r.subresources)
        self.max_extra_resources = max_extra_resources
        self.max_namespaces = max_namespaces
        self.max_webhooks = max_webhooks
        self._resources = _FirstSeen("resource", labels, max_extra_resources)
        self._groups = _FirstSeen("api_group", builtin.by_group, max_extra_resources)
        # (resource, subresource) -> label, for the values kept so far
        self._resource_labels: dict[tuple[str, str], str] = {}
        self._namespaces = _FirstSeen("namespace", BUILTIN_NAMESPACES, max_namespaces)
        self._webhooks = _FirstSeen("webhook", (), max_webhooks)
        self._verbs = {v: v for v in VERBS}
        self._levels = {v: v for v in AUDIT_LEVELS}
        self._levels[""] = ""
        self._log = RateLimitedLog(log, burst=5, interval=60.0)

    # --- the bounded values --------------------------------------------------

    def verb(self, verb: str) -> str:
        """The verb, or ``other``."""
        return self._verbs.get(verb) or OTHER_VALUE

    def resource(self, resource: str, subresource: str, code: int) -> str:
        """``resource`` or ``resource/subresource``, or ``__other__``."""
        label = self._resource_labels.get((resource, subresource))
        if label is not None:
            return label
        value = f"{resource}/{subresource}" if subresource else resource
        if not self._resources.admit(value, permitted(code)):
            return OTHER
        # Kept values only (built-in or admitted): the cache stays bounded.
        self._resource_labels[(resource, subresource)] = value
        return value

    def kept_resource(self, resource: str, subresource: str) -> str | None:
        """The label of a resource that has its place (built-in or taken),
        None for one that would fold now; takes no place."""
        label = self._resource_labels.get((resource, subresource))
        if label is not None:
            return label
        value = f"{resource}/{subresource}" if subresource else resource
        return value if self._resources.admit(value, False) else None

    def api_group(self, group: str, code: int) -> str:
        return group if self._groups.admit(group, permitted(code)) else OTHER

    def namespace(self, namespace: str, code: int) -> str:
        return namespace if self._namespaces.admit(namespace, permitted(code)) else OTHER

    def webhook(self, name: str) -> str:
        """An admission webhook's name (set by whoever may configure webhooks,
        so any name takes a place while there is one)."""
        name = name[:_WEBHOOK_NAME_MAX]
        return name if self._webhooks.admit(name, True) else OTHER

    @staticmethod
    def code(code: int) -> str:
        """The code as a string, ``unknown`` for none, a class for other
        codes of 1xx..5xx, ``other`` for anything else."""
        return _CODE_LABELS.get(code) or OTHER_VALUE

    @staticmethod
    def code_class(code: int) -> str:
        """``2xx`` (1xx included), ``3xx``, ``4xx``, ``5xx``, ``unknown`` for
        none, ``other`` for codes outside 100..599."""
        return _CODE_CLASS_LABELS.get(code) or OTHER_VALUE

    def audit_level(self, level: str) -> str:
        return self._levels.get(level) or OTHER_VALUE

    # --- reporting ---------------------------------------------------------------

    def folded(self, label: str, value: str, consumer: str) -> None:
        """Log (rate-limited) that ``value`` of ``label`` was folded."""
        self._log.warning(
            "label value folded to bound the number of series",
            consumer=consumer,
            label=label,
            value=value[:100],
            hint=_HINTS.get(label, ""),
        )

    def series_bounds(self) -> dict[str, int]:
        """The most values each label can take (the README's bounds)."""
        return {
            "verb": len(VERBS) + 1,
            "resource": len(self._resources.builtin) + self.max_extra_resources + 1,
            "api_group": len(self._groups.builtin) + self.max_extra_resources + 1,
            "namespace": len(self._namespaces.builtin) + self.max_namespaces + 1,
            "code": len(KNOWN_CODES) + len(CODE_CLASSES) + 2,
            "code_class": len(CODE_CLASSES) - 1 + 2,
            "webhook": self.max_webhooks + 1,
            "audit_level": len(AUDIT_LEVELS) + 2,
        }


_HINTS = {
    "resource": "raise metrics.max_extra_resources if this is a real custom resource",
    "api_group": "raise metrics.max_extra_resources if this is a real API group",
    "namespace": "raise metrics.max_namespaces if this is a real namespace",
    "webhook": "raise metrics.max_webhooks if this is a real webhook",
}
