"""Field paths into an audit event.

A path names values inside the event's JSON: ``objectRef.resource``,
``user.groups``, ``annotations["authorization.k8s.io/decision"]``,
``requestObject.spec.containers[*].securityContext.privileged``. Steps:

- ``name`` or ``["any key"]``: a mapping key (quote keys with dots or slashes);
- ``[N]`` an item of a list (``[-1]`` is the last), ``[*]`` every item;
- ``*`` every value of a mapping, ``@keys`` every key of a mapping;
- ``{a,b.c}`` alternatives, each a path of its own:
  ``requestObject.spec.{containers,initContainers}[*].image``.

A path yields every value it reaches (none when it reaches nothing). A list at
the end stands for its items, so ``user.groups`` yields each group and
``exists: false`` holds for an empty list; a name applied to a list reads it
from each item (``requestObject.rules.verbs`` is ``requestObject.rules[*].verbs``).
Two shorthands cover pod templates in pods, workload controllers and cron jobs:

- ``$pod_spec``   = ``requestObject.{spec,spec.template.spec,spec.jobTemplate.spec.template.spec}``
- ``$containers`` = ``$pod_spec.{containers,initContainers,ephemeralContainers}[*]``

Names starting with ``$`` are values the exporter derives (see DERIVED).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase, translate
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..event import AuditEvent, classify_user
from .patches import request_object

MACROS = {
    "$pod_spec": "requestObject.{spec,spec.template.spec,spec.jobTemplate.spec.template.spec}",
    "$containers": "$pod_spec.{containers,initContainers,ephemeralContainers}[*]",
}

# Paths answered by AuditEvent's parsed attributes: (attribute, type). An empty
# string (or code 0) stands for "absent", as the decoder fills it that way.
ATTRIBUTE_FIELDS: dict[str, tuple[str, type]] = {
    "verb": ("verb", str),
    "stage": ("stage", str),
    "auditID": ("audit_id", str),
    "requestURI": ("request_uri", str),
    "userAgent": ("user_agent", str),
    "user.username": ("username", str),
    "impersonatedUser.username": ("impersonated_user", str),
    "objectRef.resource": ("resource", str),
    "objectRef.subresource": ("subresource", str),
    "objectRef.namespace": ("namespace", str),
    "objectRef.name": ("name", str),
    "objectRef.apiGroup": ("api_group", str),
    "responseStatus.code": ("code", int),
    # derived, but plain attributes
    "$source_ip": ("source_ip", str),
    "$user_kind": ("user_kind", str),
    "$resource": ("resource_label", str),
}


class PathError(ValueError):
    pass


# --- parsing -------------------------------------------------------------------

Step = tuple[Any, ...]  # ("key", name) | ("index", n) | ("items",) | ("values",) | ("keys",)
# | ("alt", [steps, ...])


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def error(self, message: str) -> PathError:
        return PathError(f"{message} at position {self.i + 1} of path {self.text!r}")

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def seq(self, stop: str = "") -> list[Step]:
        steps: list[Step] = []
        while True:
            self.atom(steps)
            while self.peek() == "[":
                self.suffix(steps)
            c = self.peek()
            if c == ".":
                self.i += 1
                continue
            if c == "" or c in stop:
                return steps
            raise self.error(f"unexpected {c!r}")

    def atom(self, steps: list[Step]) -> None:
        c = self.peek()
        if c == "[":
            # a leading quoted key: ["a.b"]; an index needs something before it
            self.suffix(steps, key_only=True)
            return
        if c == "*":
            self.i += 1
            steps.append(("values",))
            return
        if c == "{":
            self.i += 1
            alts: list[list[Step]] = []
            while True:
                alts.append(self.seq(stop=",}"))
                c = self.peek()
                self.i += 1
                if c == "}":
                    break
            if len(alts) < 2:
                raise self.error("{...} needs at least two alternatives")
            steps.append(("alt", alts))
            return
        if self.text.startswith("@keys", self.i):
            self.i += len("@keys")
            steps.append(("keys",))
            return
        start = self.i
        while self.i < len(self.text) and (
            self.text[self.i].isalnum() or self.text[self.i] in "_-"
        ):
            self.i += 1
        if self.i == start:
            raise self.error("expected a field name")
        steps.append(("key", self.text[start : self.i]))

    def suffix(self, steps: list[Step], key_only: bool = False) -> None:
        assert self.peek() == "["
        self.i += 1
        c = self.peek()
        if c in "\"'":
            end = self.text.find(c, self.i + 1)
            if end < 0:
                raise self.error("unterminated quoted key")
            steps.append(("key", self.text[self.i + 1 : end]))
            self.i = end + 1
        elif key_only:
            raise self.error("a path cannot start with an index")
        elif c == "*":
            self.i += 1
            steps.append(("items",))
        else:
            end = self.text.find("]", self.i)
            if end < 0:
                raise self.error("unterminated [")
            try:
                steps.append(("index", int(self.text[self.i : end])))
            except ValueError:
                raise self.error("[...] takes a number, * or a quoted key") from None
            self.i = end
        if self.peek() != "]":
            raise self.error("expected ]")
        self.i += 1


def expand_macros(text: str) -> str:
    for _ in range(4):
        for name, expansion in MACROS.items():
            if text == name or text.startswith(name + ".") or text.startswith(name + "["):
                text = expansion + text[len(name) :]
                break
        else:
            return text
    return text


def parse(text: str) -> list[Step]:
    if not isinstance(text, str) or not text:
        raise PathError("a field path must be a non-empty string")
    return _Parser(expand_macros(text)).seq()


# --- evaluation ---------------------------------------------------------------

Getter = Callable[[Any], list[Any]]


def _apply(steps: list[Step], frontier: list[Any]) -> list[Any]:
    for step in steps:
        kind = step[0]
        out: list[Any] = []
        if kind == "key":
            name = step[1]
            for v in frontier:
                if type(v) is dict:
                    x = v.get(name)
                    if x is not None:
                        out.append(x)
                elif type(v) is list:  # a key on a list reads it from each item
                    for item in v:
                        if type(item) is dict:
                            x = item.get(name)
                            if x is not None:
                                out.append(x)
        elif kind == "index":
            n = step[1]
            for v in frontier:
                if type(v) is list and -len(v) <= n < len(v):
                    x = v[n]
                    if x is not None:
                        out.append(x)
        elif kind == "items":
            for v in frontier:
                if type(v) is list:
                    out.extend(x for x in v if x is not None)
        elif kind == "values":
            for v in frontier:
                if type(v) is dict:
                    out.extend(x for x in v.values() if x is not None)
        elif kind == "keys":
            for v in frontier:
                if type(v) is dict:
                    out.extend(v.keys())
        else:  # alt
            for alt in step[1]:
                out.extend(_apply(alt, frontier))
        frontier = out
        if not frontier:
            return frontier
    return frontier


def _compile_apply(steps: list[Step]) -> Callable[[list[Any]], list[Any]]:
    """``lambda frontier: _apply(steps, frontier)`` as one generated function:
    the same values in the same order, without interpreting the steps for
    each event (a dozen rules walk pod specs on every write of a pod)."""
    if not steps:
        return lambda frontier: frontier
    return _generate(steps, flatten=False, prefix=None)


def _generate(
    steps: list[Step],
    *,
    flatten: bool,
    prefix: _Prefix | None,
    source: Callable[[Any], Any] = request_object,
) -> Callable[[Any], Any]:
    """The source of ``_apply(steps, frontier)`` (then ``_flatten`` of it
    when ``flatten``), compiled. With ``prefix`` the function takes what
    ``source`` reads the request object from (the event's JSON, or the
    event) and starts from the prefix's values for that object."""
    namespace: dict[str, Any] = {"P": prefix, "R": source}
    if prefix is None:
        lines = ["def apply(f):"]
    else:
        lines = [
            "def apply(x):",
            "    ro = R(x)",
            "    pair = P.pair",
            "    f = pair[1] if pair[0] is ro else P(ro)",
        ]
    for n, step in enumerate(steps):
        kind = step[0]
        lines.append("    o = []")
        if kind == "key":
            namespace[f"k{n}"] = step[1]
            lines += [
                "    for v in f:",
                "        if type(v) is dict:",
                f"            x = v.get(k{n})",
                "            if x is not None:",
                "                o.append(x)",
                "        elif type(v) is list:",
                "            for i in v:",
                "                if type(i) is dict:",
                f"                    x = i.get(k{n})",
                "                    if x is not None:",
                "                        o.append(x)",
            ]
        elif kind == "index":
            namespace[f"k{n}"] = step[1]
            lines += [
                "    for v in f:",
                f"        if type(v) is list and -len(v) <= k{n} < len(v):",
                f"            x = v[k{n}]",
                "            if x is not None:",
                "                o.append(x)",
            ]
        elif kind == "items":
            lines += [
                "    for v in f:",
                "        if type(v) is list:",
                "            o.extend([x for x in v if x is not None])",
            ]
        elif kind == "values":
            lines += [
                "    for v in f:",
                "        if type(v) is dict:",
                "            o.extend([x for x in v.values() if x is not None])",
            ]
        elif kind == "keys":
            lines += [
                "    for v in f:",
                "        if type(v) is dict:",
                "            o.extend(v.keys())",
            ]
        else:  # alt
            for m, alt in enumerate(step[1]):
                namespace[f"a{n}_{m}"] = _compile_apply(alt)
                lines.append(f"    o.extend(a{n}_{m}(f))")
        lines += ["    if not o:", "        return o", "    f = o"]
    if flatten:
        # _flatten: a list at the end stands for its items
        lines += [
            "    for v in f:",
            "        if type(v) is list:",
            "            break",
            "    else:",
            "        return f",
            "    o = []",
            "    for v in f:",
            "        if type(v) is list:",
            "            o.extend([x for x in v if x is not None])",
            "        else:",
            "            o.append(v)",
            "    f = o",
        ]
    lines.append("    return f")
    exec(compile("\n".join(lines), "<path>", "exec"), namespace)
    fn: Callable[[list[Any]], list[Any]] = namespace["apply"]
    return fn


def _flatten(values: list[Any]) -> list[Any]:
    if not any(type(v) is list for v in values):
        return values
    out: list[Any] = []
    for v in values:
        if type(v) is list:
            out.extend(x for x in v if x is not None)
        else:
            out.append(v)
    return out


class _Prefix:
    """The values a macro's path reaches (``$containers``: every container
    of the pod spec, wherever the object keeps it) from a request object,
    for the last one asked: a dozen rules read fields of the same containers
    in turn, and walking the three pod-spec places times the three container
    lists is most of their cost. One attribute holds the (request object,
    values) pair, so a thread reading it while another writes sees one whole
    pair."""

    __slots__ = ("apply", "pair", "steps")

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.apply = _compile_apply(steps)
        self.pair: tuple[Any, list[Any]] = (None, [])

    def __call__(self, ro: Any) -> list[Any]:
        last, values = self.pair
        if last is not ro:
            values = self.apply([ro])
            self.pair = (ro, values)
        return values


# the macros whose expansion starts at requestObject, longest first
_PREFIXES: list[tuple[list[Step], _Prefix]] = []


def _prefix_for(steps: list[Step]) -> tuple[_Prefix, list[Step]] | None:
    if not _PREFIXES:
        found = []
        for name in MACROS:
            full = _Parser(expand_macros(name)).seq()
            if full and full[0] == ("key", "requestObject"):
                found.append((full, _Prefix(full[1:])))
        _PREFIXES.extend(sorted(found, key=lambda p: -len(p[0])))
    for full, prefix in _PREFIXES:
        if steps[: len(full)] == full:
            return prefix, steps[len(full) :]
    return None


def compile_getter(steps: list[Step]) -> Getter:
    """A function from the event's JSON object to the list of values reached.
    ``requestObject`` is the object the request writes: for a patch, what the
    patch produces (see patches.py)."""
    return _compile_getter(steps, request_object)


def compile_event_getter(steps: list[Step]) -> Callable[[AuditEvent], list[Any]] | None:
    """For a path into ``requestObject`` or into the annotations: the same
    as :func:`compile_getter` as a function of the event, which does not
    parse the event for it. The request body is parsed alone (see
    AuditEvent.request_body); the annotations are the decoder's, until the
    event is parsed (redaction may have changed its JSON). None for other
    paths."""
    if not steps:
        return None
    if steps[0] == ("key", "requestObject"):
        return _compile_getter(steps, event_request_object)
    if steps[0] == ("key", "annotations") and len(steps) > 1:
        rest = _compile_steps(steps[1:])

        return lambda ev: rest(ev.json_annotations())
    return None


def event_request_object(ev: AuditEvent) -> Any:
    """``requestObject`` as the object the request writes (patches.py): a
    patch needs the event's response too, anything else its request body."""
    if ev.verb == "patch":
        return request_object(ev.obj)
    return ev.request_body


def _compile_getter(steps: list[Step], source: Callable[[Any], Any]) -> Getter:
    if steps and steps[0] == ("key", "requestObject"):
        shared = _prefix_for(steps)
        if shared is not None:
            prefix, after = shared
            if not after:
                return lambda x: _flatten(list(prefix(source(x))))
            return _generate(after, flatten=True, prefix=prefix, source=source)
        rest = _compile_steps(steps[1:])
        return lambda x: rest(source(x))
    return _compile_steps(steps)


def _compile_steps(steps: list[Step]) -> Getter:
    if not steps:
        return lambda obj: [] if obj is None else _flatten([obj])
    if all(s[0] == "key" for s in steps):
        keys = tuple(s[1] for s in steps)

        def get_keys(obj: Any) -> list[Any]:
            cur = obj
            for i, k in enumerate(keys):
                if type(cur) is not dict:
                    if type(cur) is list:
                        return _flatten(_apply(steps[i:], [cur]))
                    return []
                cur = cur.get(k)
                if cur is None:
                    return []
            if type(cur) is list:
                return [x for x in cur if x is not None]
            return [cur]

        return get_keys

    walk = _generate(steps, flatten=True, prefix=None)

    def get(obj: Any) -> list[Any]:
        return walk([obj])  # type: ignore[no-any-return]

    return get


# --- derived values -------------------------------------------------------------


def exec_command(ev: AuditEvent) -> list[Any]:
    """The command of an exec request (``command=`` query parameters), joined
    by spaces; empty for anything else."""
    if ev.subresource != "exec":
        return []
    query = urlsplit(ev.request_uri).query
    parts = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "command"]
    return [" ".join(parts)] if parts else []


def _csr_der(ev: AuditEvent) -> bytes | None:
    """The DER certificate request in a CertificateSigningRequest's
    ``spec.request`` (base64 of a PEM block), None when there is none."""
    if ev.resource != "certificatesigningrequests":
        return None
    obj = ev.obj.get("requestObject")
    spec = obj.get("spec") if type(obj) is dict else None
    request = spec.get("request") if type(spec) is dict else None
    if type(request) is not str:
        return None
    try:
        pem = base64.b64decode(request, validate=False).decode("ascii", "replace")
        body = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
        return base64.b64decode(body)
    except (binascii.Error, ValueError):
        return None


def csr_organizations(ev: AuditEvent) -> list[Any]:
    """The subject organisations (O=) of the PEM certificate request in a
    CertificateSigningRequest's ``spec.request``: ``system:masters`` there asks
    for a certificate that is cluster-admin and cannot be revoked."""
    der = _csr_der(ev)
    return _csr_subject_values(der, _OID_ORGANIZATION) if der else []


def csr_common_names(ev: AuditEvent) -> list[Any]:
    """The subject common names (CN=) of a CertificateSigningRequest: the user
    name the certificate would authenticate as (``system:node:worker-1``,
    ``system:kube-controller-manager``)."""
    der = _csr_der(ev)
    return _csr_subject_values(der, _OID_COMMON_NAME) if der else []


_OID_COMMON_NAME = bytes([0x55, 0x04, 0x03])  # 2.5.4.3
_OID_ORGANIZATION = bytes([0x55, 0x04, 0x0A])  # 2.5.4.10


def _der(data: bytes, i: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER element at ``i``."""
    tag = data[i]
    length = data[i + 1]
    i += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[i : i + n], "big")
        i += n
    end = i + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, i, end


def _csr_subject_values(der: bytes, oid: bytes) -> list[Any]:
    try:
        tag, start, _ = _der(der, 0)  # CertificationRequest SEQUENCE
        tag, info, _ = _der(der, start)  # CertificationRequestInfo SEQUENCE
        tag, _, vend = _der(der, info)  # version INTEGER
        tag, nstart, nend = _der(der, vend)  # subject Name (SEQUENCE OF RDN SETs)
        if tag != 0x30:
            return []
        out: list[Any] = []
        i = nstart
        while i < nend:
            _, sstart, send = _der(der, i)  # RelativeDistinguishedName SET
            j = sstart
            while j < send:
                _, astart, aend = _der(der, j)  # AttributeTypeAndValue SEQUENCE
                otag, ostart, oend = _der(der, astart)
                _, value_start, value_end = _der(der, oend)
                if otag == 0x06 and der[ostart:oend] == oid:
                    out.append(der[value_start:value_end].decode("utf-8", "replace"))
                j = aend
            i = send
        return out
    except (IndexError, ValueError):
        return []


# Service accounts of kube-controller-manager's built-in controllers (with
# --use-service-account-credentials), which act on everything all day.
CONTROLLER_ACCOUNTS = frozenset(
    "system:serviceaccount:kube-system:" + name
    for name in (
        "attachdetach-controller",
        "bootstrap-signer",
        "certificate-controller",
        "clusterrole-aggregation-controller",
        "cronjob-controller",
        "daemon-set-controller",
        "deployment-controller",
        "disruption-controller",
        "endpoint-controller",
        "endpointslice-controller",
        "endpointslicemirroring-controller",
        "ephemeral-volume-controller",
        "expand-controller",
        "generic-garbage-collector",
        "horizontal-pod-autoscaler",
        "job-controller",
        "legacy-service-account-token-cleaner",
        "namespace-controller",
        "node-controller",
        "persistent-volume-binder",
        "pod-garbage-collector",
        "pv-protection-controller",
        "pvc-protection-controller",
        "replicaset-controller",
        "replication-controller",
        "resource-claim-controller",
        "resourcequota-controller",
        "root-ca-cert-publisher",
        "route-controller",
        "service-account-controller",
        "service-controller",
        "statefulset-controller",
        "token-cleaner",
        "ttl-after-finished-controller",
        "ttl-controller",
        "validatingadmissionpolicy-status-controller",
    )
)


def control_plane(ev: AuditEvent) -> list[Any]:
    """True for the control plane acting: ``system:`` users (API server,
    controller manager, scheduler), nodes, and the built-in controllers'
    service accounts. Bootstrap tokens (``system:bootstrap:<id>``) are not:
    they only ask for a node's certificate, and anything else they do is
    someone holding a join token."""
    return _control_plane_user(ev.username, ev.user_kind)


def _control_plane_user(username: str, kind: str) -> list[Any]:
    if kind == "system":
        return [not username.startswith("system:bootstrap:")]
    return [kind == "node" or username in CONTROLLER_ACCOUNTS]


_URL = re.compile(r"(?i)\b(?:https?|ftp|tftp)://(\[[0-9a-f:.]+\]|[^/\s:?#'\"\\]+)")
_INTERNAL_SUFFIXES = (".svc", ".cluster.local", ".local", ".internal", ".localdomain", ".lan")


def exec_internet_hosts(ev: AuditEvent) -> list[Any]:
    """Hosts of the URLs in an exec request's command that are on the
    internet: not private, loopback or link-local addresses, not single-label
    names (services in the namespace), not cluster or site-local domains."""
    out: list[Any] = []
    for command in exec_command(ev):
        for m in _URL.finditer(command):
            host = m.group(1).strip("[]").lower().rstrip(".")
            if host and not _internal_host(host):
                out.append(host)
    return out


def _internal_host(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if "." not in host or host == "localhost":
            return True
        name = host.split(":", 1)[0]
        return name.endswith(_INTERNAL_SUFFIXES) or ".svc." in name
    return any(ip in net for net in _INTERNAL_NETWORKS if net.version == ip.version)


# where a cluster's own and its site's services live: RFC 1918, carrier-grade
# NAT (also Alibaba's metadata address), loopback, link-local (the metadata
# addresses, reported by exec-cloud-metadata), unique-local IPv6
_INTERNAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "0.0.0.0/8",
        "::1/128",
        "::/128",
        "fe80::/10",
        "fc00::/7",
    )
)


def object_name(ev: AuditEvent) -> str:
    """The name of the object a request is about: objectRef.name, else (a
    create names its object in the body) requestObject.metadata.name, else
    responseObject.metadata.name."""
    if ev.name:
        return ev.name
    for key in ("requestObject", "responseObject"):
        body = ev.obj.get(key)
        meta = body.get("metadata") if type(body) is dict else None
        name = meta.get("name") if type(meta) is dict else None
        if type(name) is str and name:
            return name
    return ""


def _allowed_users(ctx: Any) -> tuple[Callable[[str], bool], Callable[[str], bool] | None]:
    """detect.allowed_users as a test of a user name and one of a group
    name (None when no ``group:NAME`` is listed). The same few users and
    groups come back all day: each test remembers its answers."""
    patterns: tuple[str, ...] = ctx.settings.allowed_users
    users = [p for p in patterns if not p.startswith("group:")]
    groups = [p[len("group:") :] for p in patterns if p.startswith("group:")]
    return _memo_globs(users), _memo_globs(groups) if groups else None


def _user_allowed(ctx: Any) -> Callable[[AuditEvent], list[Any]]:
    user_ok, group_ok = _allowed_users(ctx)

    def allowed(ev: AuditEvent) -> list[Any]:
        if user_ok(ev.username):
            return [True]
        user = ev.obj.get("user")
        mine = user.get("groups") if type(user) is dict else None
        if group_ok is not None and type(mine) is list:
            return [any(type(g) is str and group_ok(g) for g in mine)]
        return [False]

    return allowed


def _user_allowed_by_name(ctx: Any) -> Callable[[str], list[Any] | None]:
    """$user_allowed from the user name alone: [True] for a user the
    globs allow, None (the groups decide) for the others, or [False] when
    no group is listed."""
    user_ok, group_ok = _allowed_users(ctx)

    def by_name(username: str) -> list[Any] | None:
        if user_ok(username):
            return [True]
        return None if group_ok is not None else [False]

    return by_name


def _memo_globs(patterns: list[str]) -> Callable[[str], bool]:
    """A test of a name against globs that remembers its answers (bounded)."""
    regex = re.compile("|".join(f"(?:{translate(p)})" for p in patterns)) if patterns else None
    cache: dict[str, bool] = {}

    def test(name: str) -> bool:
        hit = cache.get(name)
        if hit is None:
            hit = regex is not None and regex.match(name) is not None
            if len(cache) >= 10_000:
                cache.clear()
            cache[name] = hit
        return hit

    return test


def _images_not_allowed(ctx: Any) -> Callable[[AuditEvent], list[Any]]:
    from .settings import allowed_image

    patterns: tuple[str, ...] = ctx.settings.allowed_images
    images = compile_getter(parse("$containers.image"))

    def not_allowed(ev: AuditEvent) -> list[Any]:
        return [
            i for i in images(ev.obj) if type(i) is str and i and not allowed_image(i, patterns)
        ]

    return not_allowed


def _name_allowed(setting: str) -> Callable[[Any], Callable[[AuditEvent], list[Any]]]:
    def make(ctx: Any) -> Callable[[AuditEvent], list[Any]]:
        patterns: tuple[str, ...] = getattr(ctx.settings, setting)

        def allowed(ev: AuditEvent) -> list[Any]:
            name = object_name(ev)
            if not name:
                return []
            return [any(fnmatchcase(name, p) for p in patterns)]

        return allowed

    return make


@dataclass(frozen=True)
class Derived:
    """A derived value: ``make(context)`` returns the function of the event.
    ``requires`` names the settings that must be non-empty for it to mean
    anything; a rule using it is inactive otherwise."""

    description: str
    make: Callable[[Any], Callable[[AuditEvent], list[Any]]]
    requires: tuple[str, ...] = ()
    # The same values from the user name alone, for the Detector's index (see
    # matchers.IndexAtoms): ``by_username(context)(name)`` gives the values
    # every event of that user has, or None when the name alone does not
    # tell. None here: the value depends on more than the user name.
    by_username: Callable[[Any], Callable[[str], list[Any] | None]] | None = None
    # by_username never answers None: the user name decides the value
    username_decides: bool = False


def _static(
    fn: Callable[[AuditEvent], list[Any]],
) -> Callable[[Any], Callable[[AuditEvent], list[Any]]]:
    return lambda _ctx: fn


DERIVED: dict[str, Derived] = {
    "$control_plane": Derived(
        "true for system: users, nodes and the built-in controllers' service accounts",
        _static(control_plane),
        by_username=lambda _ctx: lambda name: _control_plane_user(name, classify_user(name)),
        username_decides=True,
    ),
    "$exec_command": Derived("the command line of an exec request", _static(exec_command)),
    "$csr_organizations": Derived(
        "subject O= values of a CertificateSigningRequest's PEM request",
        _static(csr_organizations),
    ),
    "$csr_common_names": Derived(
        "subject CN= values of a CertificateSigningRequest's PEM request",
        _static(csr_common_names),
    ),
    "$exec_internet_hosts": Derived(
        "hosts of internet URLs (not private, cluster or site-local) in an exec command",
        _static(exec_internet_hosts),
    ),
    "$object_name": Derived(
        "objectRef.name, else the name in the request or response body (creates)",
        _static(lambda ev: [n] if (n := object_name(ev)) else []),
    ),
    "$user_allowed": Derived(
        "true when the user matches detect.allowed_users (globs, group:NAME)",
        _user_allowed,
        ("allowed_users",),
        by_username=_user_allowed_by_name,
    ),
    "$images_not_allowed": Derived(
        "container images written that detect.allowed_images does not allow",
        _images_not_allowed,
        ("allowed_images",),
    ),
    "$namespace_allowed": Derived(
        "true when the object's name matches detect.allowed_namespaces",
        _name_allowed("allowed_namespaces"),
        ("allowed_namespaces",),
    ),
    "$node_allowed": Derived(
        "true when the object's name matches detect.allowed_nodes",
        _name_allowed("allowed_nodes"),
        ("allowed_nodes",),
    ),
    "$critical_workload": Derived(
        "name of the configured critical workload the request touches",
        lambda ctx: ctx.critical_workload,
        ("critical_workloads",),
    ),
    "$critical_access": Derived(
        "for a request touching a critical workload: allowed, principal_not_allowed "
        "or outside_window",
        lambda ctx: ctx.critical_access,
        ("critical_workloads",),
    ),
}

ATTRIBUTE_DOCS = {
    "$source_ip": "the last entry of sourceIPs (the peer address; earlier ones are "
    "whatever the client claims)",
    "$user_kind": "human, serviceaccount, node, system, anonymous or unauthenticated",
    "$resource": "resource, or resource/subresource",
}


def known_derived() -> list[str]:
    return sorted([*DERIVED, *(k for k in ATTRIBUTE_FIELDS if k.startswith("$"))])
