"""The shipped rule files, parsed ahead of time.

Parsing the default rule files (YAML with every position kept, then each
rule checked and its patterns compiled) is about a quarter of the start-up
of ``replay``: some 0.1 s of CPU, paid by every command that loads rules.
``rules/parsed.pickle`` holds the result for the files as shipped, and
:func:`lookup` hands it out instead of parsing again, as Python's own
bytecode cache does for modules: an entry is used only when

- the file's text has the SHA-256 recorded beside it (a default file
  edited in place is parsed), and
- the modules that make and define a parsed rule file (the parser, the
  matchers, the settings, positions) have the fingerprint recorded in the
  pickle (a changed parser ignores the whole pickle).

Anything else (a missing, unreadable or damaged pickle, another format)
means parsing the YAML as before: the pickle only saves time, it never
decides a result. It is package data, written by ``make generate``
(``python -m exporter.detect.shipped``), and tests/test_detect_shipped.py
fails when it differs from a fresh parse of the shipped files.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path
from typing import Any

from .rules import RuleFile

HERE = Path(__file__).resolve().parent
PARSED = HERE / "rules" / "parsed.pickle"
FORMAT = 1
# the modules whose code decides what a parsed rule file holds
SOURCES = (
    HERE / "rules.py",
    HERE / "located.py",
    HERE / "matchers.py",
    HERE / "paths.py",
    HERE / "settings.py",
    HERE / "errors.py",
    HERE.parent / "duration.py",
)

# display name (<default>/x.yaml) -> (SHA-256 of its text, the parsed file);
# None until first asked, {} when the pickle cannot be used
_loaded: dict[str, tuple[str, RuleFile]] | None = None


def fingerprint() -> str:
    """The SHA-256 of the parser's modules, as they are on disk."""
    h = hashlib.sha256()
    for path in SOURCES:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load() -> dict[str, tuple[str, RuleFile]]:
    try:
        doc = current()
        if (
            doc is None
            or doc.get("format") != FORMAT
            or doc.get("fingerprint") != fingerprint()
            or type(doc.get("files")) is not dict
        ):
            return {}
        files: dict[str, tuple[str, RuleFile]] = doc["files"]
        # the pickle names its classes by module: they must be this
        # package's (not those of a copy imported under another name)
        if not all(type(rf) is RuleFile for _, rf in files.values()):
            return {}
        return files
    except Exception:  # anything at all: parse the YAML instead
        return {}


def lookup(display: str, text: str) -> RuleFile | None:
    """The parsed shipped file shown as ``display`` when ``text`` is the
    text it was parsed from; None otherwise."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    entry = _loaded.get(display)
    if entry is None or entry[0] != text_digest(text):
        return None
    return entry[1]


def build() -> dict[str, Any]:
    """The pickle's document, from a fresh parse of the shipped files."""
    from .errors import RuleError
    from .rules import _display, default_rule_files, parse_rule_file

    files: dict[str, tuple[str, RuleFile]] = {}
    for path in default_rule_files():
        text = Path(path).read_text(encoding="utf-8")
        display = _display(path)
        problems: list[str] = []
        rf = parse_rule_file(text, display, problems)
        if rf is None or problems:
            raise RuleError(problems or [f"{display}: not parsed"])
        files[display] = (text_digest(text), rf)
    return {"format": FORMAT, "fingerprint": fingerprint(), "files": files}


def current() -> dict[str, Any] | None:
    """The committed pickle's document as it is, or None."""
    try:
        doc = pickle.loads(PARSED.read_bytes())
    except Exception:
        return None
    return doc if type(doc) is dict else None


def main(argv: list[str] | None = None) -> int:
    """Write rules/parsed.pickle when it differs from a fresh parse
    (``--check``: only say whether it does, exit 1 when it does)."""
    args = sys.argv[1:] if argv is None else argv
    fresh = build()
    if current() == fresh:
        print(f"{PARSED.name}: up to date")
        return 0
    if "--check" in args:
        print(f"{PARSED.name}: differs from the shipped rule files; run make generate")
        return 1
    tmp = PARSED.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(fresh, protocol=5))
    tmp.replace(PARSED)
    print(f"{PARSED.name}: written ({len(fresh['files'])} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
