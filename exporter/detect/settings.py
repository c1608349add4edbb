"""Detection settings: the cluster's networks, critical workloads, state limits
and where alerts go. Validated once, every problem located."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..duration import parse_duration
from .errors import RuleError
from .located import Where

SEVERITIES = ("info", "warning", "critical")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(
    r"^\s*(?:(?P<days>[A-Za-z]{3}(?:\s*[-,]\s*[A-Za-z]{3})*)\s*)?"
    r"(?:(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2}))?\s*$"
)


def parse_network(text: Any) -> Network:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a network (e.g. 10.0.0.0/8, 2001:db8::/32)")
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not a network (e.g. 10.0.0.0/8, 2001:db8::/32)") from None


@dataclass(frozen=True)
class TimeWindow:
    """Days of the week and a time range, in the workload's time zone:
    ``Mon-Fri 08:00-18:00``, ``Sat,Sun``, ``22:00-06:00`` (overnight)."""

    text: str
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int  # minutes after midnight; <= start means overnight

    @classmethod
    def parse(cls, text: Any) -> TimeWindow:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a time window is a string like 'Mon-Fri 08:00-18:00'")
        m = _WINDOW.match(text)
        if not m or not (m.group("days") or m.group("start")):
            raise ValueError(f"{text!r} is not a time window (e.g. 'Mon-Fri 08:00-18:00')")
        days: set[int] = set()
        if m.group("days"):
            for part in re.split(r"\s*,\s*", m.group("days")):
                ends = [d.strip().lower() for d in part.split("-")]
                for d in ends:
                    if d not in _DAYS:
                        raise ValueError(f"{d!r} is not a day (Mon, Tue, ... Sun)")
                if len(ends) == 1:
                    days.add(_DAYS.index(ends[0]))
                else:
                    a, b = _DAYS.index(ends[0]), _DAYS.index(ends[1])
                    i = a
                    while True:
                        days.add(i)
                        if i == b:
                            break
                        i = (i + 1) % 7
        else:
            days = set(range(7))
        start, end = 0, 24 * 60
        if m.group("start"):
            start, end = _minutes(m.group("start")), _minutes(m.group("end"))
            if start == end:
                raise ValueError(f"{text!r}: the time range is empty")
        return cls(text.strip(), frozenset(days), start, end)

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        # overnight: from start on a listed day until end on the next day
        return (day in self.days and minute >= self.start) or (
            (day - 1) % 7 in self.days and minute < self.end
        )


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    hours, minutes = int(h), int(m)
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise ValueError(f"{hhmm!r} is not a time of day")
    return hours * 60 + minutes


@dataclass(frozen=True)
class CriticalWorkload:
    """Objects that only some principals may touch, and only at some times.

    ``namespaces``, ``resources`` (``pods``, ``pods/exec``, ``secrets``...) and
    ``names`` are glob lists; an empty list matches anything. A principal is a
    username glob (``alice``, ``system:serviceaccount:payments:*``) or
    ``group:NAME`` (a glob over ``user.groups``)."""

    name: str
    namespaces: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    allowed_principals: tuple[str, ...] = ()
    allowed_windows: tuple[TimeWindow, ...] = ()
    timezone: str = "UTC"

    def touches(self, namespace: str, resource: str, subresource: str, name: str) -> bool:
        if self.namespaces and not any(fnmatchcase(namespace, p) for p in self.namespaces):
            return False
        if self.resources:
            label = f"{resource}/{subresource}" if subresource else resource
            if not any(fnmatchcase(label, p) or fnmatchcase(resource, p) for p in self.resources):
                return False
        return not self.names or any(fnmatchcase(name, p) for p in self.names)

    def allows(self, username: str, groups: Sequence[str]) -> bool:
        for p in self.allowed_principals:
            if p.startswith("group:"):
                g = p[len("group:") :]
                if any(fnmatchcase(x, g) for x in groups):
                    return True
            elif fnmatchcase(username, p):
                return True
        return False

    def in_window(self, ts: float) -> bool:
        if not self.allowed_windows:
            return True
        local = datetime.fromtimestamp(ts, UTC).astimezone(ZoneInfo(self.timezone))
        return any(w.contains(local) for w in self.allowed_windows)


@dataclass(frozen=True)
class DetectionSettings:
    """Everything detection needs besides the rules. See this package's
    docstring for the YAML keys."""

    trusted_networks: tuple[str, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    node_cidrs: tuple[str, ...] = ()
    critical_workloads: tuple[CriticalWorkload, ...] = ()
    disabled_rules: tuple[str, ...] = ()
    # per stateful rule: groups, sequences or (key, value) pairs remembered
    max_state_entries: int = 100_000
    alert_min_severity: str = "warning"
    alertmanager_urls: tuple[str, ...] = ()
    alert_link_template: str = ""
    alert_resolve_after: float = 900.0
    cluster: str = ""
    # site allow-lists (globs); each empty list leaves its "disallowed ..." rule inactive
    allowed_users: tuple[str, ...] = ()
    allowed_images: tuple[str, ...] = ()
    allowed_namespaces: tuple[str, ...] = ()
    allowed_nodes: tuple[str, ...] = ()

    def networks(self, name: str) -> tuple[Network, ...]:
        """A named network list: trusted_networks, pod_cidrs, node_cidrs, or
        cluster_networks (pods and nodes)."""
        if name == "cluster_networks":
            texts = self.pod_cidrs + self.node_cidrs
        else:
            texts = getattr(self, name)
        return tuple(parse_network(t) for t in texts)

    def is_set(self, name: str) -> bool:
        if name == "cluster_networks":
            return bool(self.pod_cidrs or self.node_cidrs)
        return bool(getattr(self, name))

    @classmethod
    def from_config(
        cls,
        detect: Mapping[str, Any] | None = None,
        alertmanager: Mapping[str, Any] | None = None,
        *,
        cluster: str = "",
        source: str = "config",
    ) -> DetectionSettings:
        """Build from the ``detect:`` and ``alertmanager:`` sections of a YAML
        document (plain or located mappings); raise RuleError listing every
        problem as ``source: detect.trusted_networks[1]: ...``."""
        problems: list[str] = []
        values: dict[str, Any] = {"cluster": cluster}
        _read_detect(detect, Where(source, "detect"), values, problems)
        _read_alertmanager(alertmanager, Where(source, "alertmanager"), values, problems)
        if problems:
            raise RuleError(problems)
        return cls(**values)


NETWORK_SETTINGS = ("trusted_networks", "pod_cidrs", "node_cidrs", "cluster_networks")


def config_keys(setting: str) -> str:
    """The configuration key(s) that set what a rule needs, for messages:
    ``cluster_networks`` is pod_cidrs and node_cidrs, not a key itself."""
    if setting == "cluster_networks":
        return "detect.pod_cidrs or detect.node_cidrs"
    return f"detect.{setting}"


# The site allow-lists: globs over user names (or ``group:NAME``), image
# references (registry/repository[:tag][@digest]), namespace names and node names.
ALLOW_LISTS = ("allowed_users", "allowed_images", "allowed_namespaces", "allowed_nodes")

_DETECT_KEYS = (
    "trusted_networks",
    "pod_cidrs",
    "node_cidrs",
    "critical_workloads",
    "disabled_rules",
    "max_state_entries",
    "alert_min_severity",
    *ALLOW_LISTS,
)
_AM_KEYS = ("url", "link_template", "resolve_after")
_WORKLOAD_KEYS = (
    "name",
    "namespaces",
    "resources",
    "names",
    "allowed_principals",
    "allowed_windows",
    "timezone",
)


def _mapping(doc: Any, where: Where, allowed: Sequence[str], problems: list[str]) -> bool:
    if doc is None:
        return False
    if not isinstance(doc, Mapping):
        problems.append(where.at(doc)("must be a mapping"))
        return False
    for key in doc:
        if key not in allowed:
            problems.append(where.unknown_key(doc, key, allowed))
    return True


def _strings(
    doc: Mapping[str, Any], key: str, where: Where, problems: list[str]
) -> tuple[str, ...]:
    value = doc.get(key)
    w = where.key(doc, key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        problems.append(w("must be a list of strings"))
        return ()
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            problems.append(w.item(value, i)("must be a non-empty string"))
        else:
            out.append(item)
    return tuple(out)


def _read_detect(doc: Any, where: Where, values: dict[str, Any], problems: list[str]) -> None:
    if not _mapping(doc, where, _DETECT_KEYS, problems):
        return
    for key in ("trusted_networks", "pod_cidrs", "node_cidrs"):
        nets = _strings(doc, key, where, problems)
        w = where.key(doc, key)
        for i, text in enumerate(nets):
            try:
                parse_network(text)
            except ValueError as e:
                problems.append(w.item(doc[key], i)(str(e)))
        values[key] = nets
    values["disabled_rules"] = _strings(doc, "disabled_rules", where, problems)
    for key in ALLOW_LISTS:
        values[key] = _strings(doc, key, where, problems)
    if "max_state_entries" in doc:
        n = doc["max_state_entries"]
        if type(n) is not int or n < 1:
            problems.append(where.key(doc, "max_state_entries")("must be an integer >= 1"))
        else:
            values["max_state_entries"] = n
    if "alert_min_severity" in doc:
        sev = doc["alert_min_severity"]
        if sev not in SEVERITIES:
            problems.append(
                where.key(doc, "alert_min_severity")(
                    f"must be one of {', '.join(SEVERITIES)}, not {sev!r}"
                )
            )
        else:
            values["alert_min_severity"] = sev
    workloads = doc.get("critical_workloads")
    if workloads is not None:
        w = where.key(doc, "critical_workloads")
        if not isinstance(workloads, list):
            problems.append(w("must be a list of workloads"))
        else:
            parsed = [
                _workload(item, w.item(workloads, i), problems) for i, item in enumerate(workloads)
            ]
            values["critical_workloads"] = tuple(p for p in parsed if p is not None)
            seen: set[str] = set()
            for i, p in enumerate(parsed):
                if p is not None and p.name in seen:
                    problems.append(w.item(workloads, i)(f"duplicate workload name {p.name!r}"))
                if p is not None:
                    seen.add(p.name)


def _workload(doc: Any, where: Where, problems: list[str]) -> CriticalWorkload | None:
    where = where.at(doc)
    if not isinstance(doc, Mapping):
        problems.append(where("must be a mapping"))
        return None
    before = len(problems)
    _mapping(doc, where, _WORKLOAD_KEYS, problems)
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        problems.append(where.key(doc, "name")("must be a non-empty string"))
        name = ""
    windows: list[TimeWindow] = []
    raw_windows = doc.get("allowed_windows")
    for i, text in enumerate(_strings(doc, "allowed_windows", where, problems)):
        try:
            windows.append(TimeWindow.parse(text))
        except ValueError as e:
            problems.append(where.key(doc, "allowed_windows").item(raw_windows, i)(str(e)))
    tz = doc.get("timezone", "UTC")
    try:
        if not isinstance(tz, str):
            raise ValueError
        ZoneInfo(tz)
    except (ValueError, ZoneInfoNotFoundError):
        problems.append(
            where.key(doc, "timezone")(f"{tz!r} is not a time zone (e.g. UTC, Europe/Berlin)")
        )
        tz = "UTC"
    principals = _strings(doc, "allowed_principals", where, problems)
    scope = [_strings(doc, k, where, problems) for k in ("namespaces", "resources", "names")]
    if not any(scope):
        problems.append(where("name at least one of namespaces, resources or names"))
    if len(problems) > before:
        return None
    return CriticalWorkload(
        name=name,
        namespaces=scope[0],
        resources=scope[1],
        names=scope[2],
        allowed_principals=principals,
        allowed_windows=tuple(windows),
        timezone=tz,
    )


def _read_alertmanager(doc: Any, where: Where, values: dict[str, Any], problems: list[str]) -> None:
    if not _mapping(doc, where, _AM_KEYS, problems):
        return
    urls = _strings(doc, "url", where, problems)
    for i, url in enumerate(urls):
        if not re.match(r"^https?://[^/\s]+", url):
            problems.append(
                where.key(doc, "url").at(doc["url"])(f"{url!r} (item {i}) is not an http(s) URL")
            )
    values["alertmanager_urls"] = urls
    template = doc.get("link_template", "")
    if not isinstance(template, str):
        problems.append(where.key(doc, "link_template")("must be a string"))
    else:
        values["alert_link_template"] = template
    if "resolve_after" in doc:
        try:
            seconds = parse_duration(doc["resolve_after"])
            if seconds <= 0:
                raise ValueError("must be > 0")
            values["alert_resolve_after"] = seconds
        except ValueError as e:
            problems.append(where.key(doc, "resolve_after")(str(e)))


def allowed_image(image: str, patterns: Sequence[str]) -> bool:
    """An image reference matches an allow-list of globs. A pattern without a
    wildcard names a registry or repository prefix (``registry.example.com``
    allows everything below it); ``docker.io/library/`` is implied for short
    names (``nginx`` is ``docker.io/library/nginx``)."""
    full = normalise_image(image)
    for p in patterns:
        if any(c in p for c in "*?["):
            if fnmatchcase(image, p) or fnmatchcase(full, p):
                return True
        else:
            base = p.rstrip("/")
            for candidate in (image, full):
                if candidate == base or candidate.startswith((base + "/", base + ":", base + "@")):
                    return True
    return False


def normalise_image(image: str) -> str:
    """``nginx:1.27`` -> ``docker.io/library/nginx:1.27``; references that name
    a registry (a first part with a dot, a colon or ``localhost``) stay."""
    first, sep, _ = image.partition("/")
    if not sep:
        return "docker.io/library/" + image
    if "." in first or ":" in first or first == "localhost":
        return image
    return "docker.io/" + image


def utc_text(ts: float) -> str:
    """An epoch time as RFC 3339 UTC with milliseconds."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
