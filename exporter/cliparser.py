"""The command line's parser and process conventions.

- :class:`Parser`: argparse that answers a bad flag with one line (and a
  "did you mean" when a known flag is close), not the whole usage, and takes
  a value that starts with a dash and a digit (``--logfile.poll-interval
  -1s``) as a value, so that validation names the key that refuses it.
- Exit codes shared by every subcommand (documented in the README).
- :class:`VersionAction`: ``--version`` names the package version and the
  digests of the shipped rule set and recommended policy.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any, NoReturn

from . import package_version

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a pipeline's closed reader
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

# "-1s", "-5", "-0.5": values, not options (argparse only knows plain numbers)
_NEGATIVE_VALUE = re.compile(r"^-\d[\w.]*$|^-\.\d+\w*$")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that cleanups run on the way out."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with one-line errors and dash-leading values."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str) -> NoReturn:
        hint = _did_you_mean(message, list(self._root_options()))
        self.exit(
            2, f"{self.prog}: error: {message}{hint}\nRun '{self.prog} --help' for the options.\n"
        )

    def _root_options(self) -> Iterator[str]:
        """Every option string of this parser and its subcommands (unknown
        flags are reported by the top parser)."""
        stack: list[argparse.ArgumentParser] = [self]
        while stack:
            parser = stack.pop()
            yield from parser._option_string_actions
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    stack.extend(action.choices.values())


def _did_you_mean(message: str, known: Sequence[str]) -> str:
    if not message.startswith("unrecognized arguments:"):
        return ""
    hints = []
    for word in message.split(":", 1)[1].split():
        if not word.startswith("--"):
            continue
        close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.75)
        if close:
            hints.append(f"{word.split('=', 1)[0]} -> {close[0]}")
    return f" (did you mean: {', '.join(hints)}?)" if hints else ""


def _digest(texts: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, data in texts:
        h.update(name.encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:12]


def version_text(prog: str) -> str:
    """``prog VERSION (rules sha256:..., policy sha256:...)``: the rule set
    and policy digests change whenever a shipped file does."""
    rules_dir = resources.files("exporter.detect") / "rules"
    rules = sorted(
        (f.name, f.read_bytes()) for f in rules_dir.iterdir() if f.name.endswith(".yaml")
    )
    policy = resources.files("exporter.policy") / "policies" / "recommended.yaml"
    return (
        f"{prog} {package_version()}\n"
        f"rules: {len(rules)} files, sha256:{_digest(rules)}\n"
        f"recommended policy: sha256:{_digest([('recommended.yaml', policy.read_bytes())])}"
    )


class VersionAction(argparse.Action):
    """``--version``, computed only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        kwargs.setdefault("nargs", 0)
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        print(version_text(parser.prog))
        parser.exit()
