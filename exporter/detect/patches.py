"""Patches are bodies too: the object a write produces, for rules to read.

Rules read ``requestObject`` (directly, or through ``$pod_spec`` and
``$containers``). For ``create`` and ``update`` that is the whole object. For
``patch`` it is only the patch, so a rule looking for ``rules[*].verbs: "*"``
would miss the same escalation sent as a JSON Patch. ``request_object(obj)``
answers, for a ``patch``, the object the patch produces as far as the audit
event shows it:

1. At the RequestResponse level, a successful patch's ``responseObject`` *is*
   the result (the whole object after the patch, whatever the patch type).
   A Status (a refused or failed patch) is not, and the patch is read instead.
2. A JSON Patch (RFC 6902, a list of operations) is applied to an empty
   object: the values of ``add`` and ``replace`` land at their paths
   (``/rules/0/verbs/-`` with ``"*"`` gives ``{"rules": [{"verbs": ["*"]}]}``).
   ``remove``, ``move``, ``copy`` and ``test`` are not applied: without the
   original object their results are unknown.
3. A merge patch (RFC 7386), a strategic merge patch and a server-side apply
   body are mappings shaped like the object: applied to an empty object they
   are themselves, minus ``null`` values (deletions) and strategic-merge
   directives (``$patch``, ``$setElementOrder/...``, ``$retainKeys``,
   ``$deleteFromPrimitiveList/...``; list items marked ``$patch: delete``).

What cannot be inferred at the Request level: fields the patch does not
touch (a patch to a Role's labels does not show its rules), values moved or
copied from elsewhere in the object, and whether a JSON Patch's numeric index
replaced or inserted an item. The audit event does not carry the request's
Content-Type, so a merge patch, a strategic merge patch and an apply body are
told apart only by their directives; they are evaluated the same way. At the
Metadata level there is no body at all.
"""

from __future__ import annotations

from typing import Any

# Numeric JSON Patch indexes above this are treated as appends: an index is
# not a reason to allocate a list.
_MAX_INDEX = 1000


class _Last:
    """The last event's answer: every rule reading requestObject asks for the
    same event in turn. One attribute holds the (object, view) pair, so a
    thread reading it while another writes sees one whole pair, never the
    object of one event with the view of another."""

    __slots__ = ("pair",)

    def __init__(self) -> None:
        self.pair: tuple[Any, Any] = (None, None)


_last = _Last()


def request_object(obj: Any) -> Any:
    """``requestObject`` as the object the request writes (see the module
    docstring); the event's own JSON is never changed."""
    if type(obj) is not dict:
        return None
    ro = obj.get("requestObject")
    if ro is None or obj.get("verb") != "patch":
        return ro
    last_obj, last_view = _last.pair
    if last_obj is obj:
        return last_view
    view = patched_view(ro, obj.get("responseObject"))
    _last.pair = (obj, view)
    return view


def patched_view(patch: Any, response: Any = None) -> Any:
    """The object a patch produces: the response when it is the object, else
    the patch applied to an empty object."""
    if type(response) is dict and response.get("kind") not in (None, "", "Status"):
        return response
    if type(patch) is list:
        return apply_json_patch(patch)
    if type(patch) is dict:
        return without_directives(patch)
    return patch


def _tokens(path: str) -> list[str]:
    """RFC 6901 reference tokens: ``/a~1b/0`` is ``["a/b", "0"]``."""
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")[1:]]


def _is_index(token: str) -> bool:
    return token == "-" or token.isdigit()


def apply_json_patch(ops: list[Any]) -> Any:
    """The values of ``add`` and ``replace`` operations, at their paths in an
    empty object; other operations and malformed ones are skipped."""
    root: Any = {}
    for op in ops:
        if type(op) is not dict or op.get("op") not in ("add", "replace"):
            continue
        path = op.get("path")
        if type(path) is not str or (path and not path.startswith("/")) or "value" not in op:
            continue
        value = op["value"]
        tokens = _tokens(path)
        if not tokens:
            root = value
            continue
        if type(root) is not dict and type(root) is not list:
            root = {}
        cur = root
        for i, tok in enumerate(tokens):
            last = i == len(tokens) - 1
            child: Any = value if last else ([] if _is_index(tokens[i + 1]) else {})
            if type(cur) is dict:
                if last:
                    cur[tok] = child
                else:
                    existing = cur.get(tok)
                    if type(existing) is not type(child):
                        cur[tok] = existing = child
                    cur = existing
            else:  # a list
                n = int(tok) if tok.isdigit() else -1
                if 0 <= n < len(cur) and not last and type(cur[n]) is type(child):
                    cur = cur[n]
                    continue
                if 0 <= n <= _MAX_INDEX:
                    while len(cur) < n:
                        cur.append(None)  # unknown items before it; paths skip nulls
                    if n < len(cur):
                        cur[n] = child
                    else:
                        cur.append(child)
                else:
                    cur.append(child)
                if last:
                    break
                cur = child
    return root


def without_directives(patch: Any) -> Any:
    """A merge-style patch applied to an empty object: nulls (deletions) and
    strategic-merge directives dropped."""
    if type(patch) is dict:
        out: dict[str, Any] = {}
        for k, v in patch.items():
            if v is None or (type(k) is str and k.startswith("$")):
                continue
            if type(v) is dict and v.get("$patch") == "delete":
                continue
            out[k] = without_directives(v)
        return out
    if type(patch) is list:
        return [
            without_directives(x)
            for x in patch
            if x is not None and not (type(x) is dict and x.get("$patch") == "delete")
        ]
    return patch
