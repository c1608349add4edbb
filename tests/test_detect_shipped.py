"""The shipped rule files parsed ahead of time (exporter/detect/shipped.py):
the committed pickle is what a fresh parse gives, it is used only for the
texts and the parser it was made from, and a missing or damaged one means
parsing the YAML."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from exporter.detect import rules, shipped


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shipped, "_loaded", None)
    monkeypatch.setattr(rules, "_PARSED", {})


def fresh_default_rules() -> rules.RuleSet:
    problems: list[str] = []
    files = []
    for path in rules.default_rule_files():
        text = Path(path).read_text(encoding="utf-8")
        rf = rules.parse_rule_file(text, rules._display(path), problems)
        assert rf is not None
        files.append(rf)
    assert problems == []
    return rules.RuleSet(files)


def test_the_committed_pickle_is_a_fresh_parse_of_the_shipped_files() -> None:
    """Fails when a rule file or the parser changed and `make generate`
    was not run."""
    assert shipped.current() == shipped.build(), "run make generate"
    assert shipped.main(["--check"]) == 0


def test_loading_the_defaults_takes_the_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = fresh_default_rules()

    def refuse(*args: object) -> None:
        raise AssertionError("parsed the YAML")

    monkeypatch.setattr(rules, "parse_rule_file", refuse)
    loaded = rules.load_rules()
    assert loaded == expected
    assert len(loaded) == len(expected) > 100
    # the positions in messages are the YAML's
    first = loaded.rules[0]
    assert first.where.file.startswith("<default>/") and first.where.pos[0] > 0


def test_a_changed_text_is_parsed() -> None:
    path = rules.default_rule_files()[0]
    display = rules._display(path)
    text = Path(path).read_text(encoding="utf-8")
    assert shipped.lookup(display, text) is not None
    assert shipped.lookup(display, text + "\n# edited\n") is None
    assert shipped.lookup("<default>/not-shipped.yaml", text) is None
    # a user's file with a shipped file's text is not shown as a default
    problems: list[str] = []
    mine = rules._parse_cached(text, "/etc/rules/mine.yaml", problems)
    assert mine is not None and mine.path == "/etc/rules/mine.yaml"
    assert mine.rules[0].source == "/etc/rules/mine.yaml"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a pickle at all",
        pickle.dumps({"format": shipped.FORMAT, "fingerprint": "0" * 64, "files": {}}),
        pickle.dumps({"format": shipped.FORMAT + 1}),
        pickle.dumps(["a", "list"]),
    ],
    ids=["empty", "garbage", "other-parser", "other-format", "not-a-mapping"],
)
def test_an_unusable_pickle_means_parsing_the_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    bad = tmp_path / "parsed.pickle"
    bad.write_bytes(content)
    monkeypatch.setattr(shipped, "PARSED", bad)
    calls = []
    parse = rules.parse_rule_file

    def counting(*args: object) -> object:
        calls.append(args[1])
        return parse(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(rules, "parse_rule_file", counting)
    loaded = rules.load_rules()
    assert len(calls) == len(rules.default_rule_files())
    assert loaded == fresh_default_rules()


def test_a_missing_pickle_means_parsing_the_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shipped, "PARSED", tmp_path / "absent.pickle")
    assert shipped.lookup("<default>/core.yaml", "x") is None
    assert rules.load_rules() == fresh_default_rules()


def test_the_fingerprint_follows_the_parser(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    before = shipped.fingerprint()
    copy = tmp_path / "matchers.py"
    copy.write_bytes((Path(shipped.HERE) / "matchers.py").read_bytes() + b"\n# changed\n")
    sources = tuple(copy if p.name == "matchers.py" else p for p in shipped.SOURCES)
    monkeypatch.setattr(shipped, "SOURCES", sources)
    assert shipped.fingerprint() != before
    # the committed pickle is then ignored
    assert shipped._load() == {}


def test_a_pickle_of_other_classes_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its classes must be this package's RuleFile and kin (a copy of the
    package imported under another name would unpickle the original's)."""

    class RuleFile:  # the same name, another class
        pass

    doc = shipped.build()
    name = next(iter(doc["files"]))
    doc["files"][name] = (doc["files"][name][0], RuleFile())
    monkeypatch.setattr(pickle, "loads", lambda data: doc)
    assert shipped._load() == {}
