"""What a user reads when a rule file is wrong: each problem says where it
is (file:line:column, then the path inside the file) and what is wrong, in
words a rule author can act on. The messages are pinned whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.detect import RuleError, load_rules

# A valid rule's head; each case adds lines 6 onwards.
HEAD = """\
rules:
  - id: r1
    title: t
    severity: info
    description: d
"""
RULE_KEYS = (
    "id, title, severity, mitre, description, kind, stages, match, except, group_by, "
    "window, count, distinct, steps, value, ttl, learning, examples, enabled, "
    "rationale, peers, refused, notify_once"
)
STAGES = "Panic, RequestReceived, ResponseComplete, ResponseStarted"
SEQUENCE = """\
    kind: sequence
    group_by: [user.username]
    window: 5m
"""
FIRST_SEEN = """\
    kind: first_seen
    group_by: [user.username]
    match: {verb: get}
"""

CASES = [
    pytest.param(
        "    match: {verb: get}\n    severty: warning\n",
        [f"7:5: rules[0] (r1).severty: unknown key (did you mean 'severity'? known: {RULE_KEYS})"],
        id="unknown-key-with-a-suggestion",
    ),
    pytest.param(
        "    match: {verb: get}\n    colour: red\n",
        [f"7:5: rules[0] (r1).colour: unknown key (known: {RULE_KEYS})"],
        id="unknown-key-without-one",
    ),
    pytest.param(
        '    match: {verb: get}\n    enabled: "no"\n',
        ["7:5: rules[0] (r1).enabled: must be true or false, not 'no'"],
        id="enabled-string",
    ),
    pytest.param(
        "    match: {verb: get}\n    enabled: 0\n",
        ["7:5: rules[0] (r1).enabled: must be true or false, not 0"],
        id="enabled-number",
    ),
    pytest.param(
        "    match: {verb: get}\n    stages: [ResponseComplete, Done]\n",
        [f"7:32: rules[0] (r1).stages[1]: unknown stage 'Done' (known: {STAGES})"],
        id="stages-unknown",
    ),
    pytest.param(
        "    match: {verb: get}\n    stages: []\n",
        [f"7:5: rules[0] (r1).stages: must list at least one stage (known: {STAGES})"],
        id="stages-empty",
    ),
    pytest.param(
        SEQUENCE,
        ["2:5: rules[0] (r1): kind sequence needs `steps:`, a list of at least two steps"],
        id="sequence-without-steps",
    ),
    pytest.param(
        SEQUENCE + "    steps:\n      - {name: a, match: {verb: get}}\n",
        ["10:7: rules[0] (r1).steps: a sequence needs a list of at least two steps, not 1"],
        id="sequence-of-one-step",
    ),
    pytest.param(
        SEQUENCE + "    steps: {name: a, match: {verb: get}}\n",
        ["9:12: rules[0] (r1).steps: a sequence needs a list of at least two steps, not a mapping"],
        id="sequence-steps-not-a-list",
    ),
    pytest.param(
        SEQUENCE
        + """\
    steps:
      - just-a-string
      - {name: a, match: {verb: get}, cnt: 2}
      - {name: a, match: {verb: list}}
      - {name: c}
      - {name: 7, match: {verb: get}, count: 0}
""",
        [
            "10:9: rules[0] (r1).steps[0]: a step is a mapping with name, match and optional count",
            "11:39: rules[0] (r1).steps[1].cnt: unknown key "
            "(did you mean 'count'? known: name, match, count)",
            "12:10: rules[0] (r1).steps[2].name: 'a' is already the name of steps[1]",
            "13:9: rules[0] (r1).steps[3]: a step needs `match:`",
            "14:10: rules[0] (r1).steps[4].name: must be a string, not 7",
            "14:39: rules[0] (r1).steps[4].count: must be an integer >= 1, not 0",
        ],
        id="sequence-steps",
    ),
    pytest.param(
        FIRST_SEEN + "    ttl: 1d\n",
        ["2:5: rules[0] (r1): kind first_seen needs `value:`"],
        id="value-missing",
    ),
    pytest.param(
        FIRST_SEEN + "    value: [sourceIPs, userAgent]\n    ttl: 1d\n",
        ["9:5: rules[0] (r1).value: takes exactly one field path, not 2"],
        id="value-two-paths",
    ),
    pytest.param(
        FIRST_SEEN + "    value: []\n    ttl: 1d\n",
        ["9:5: rules[0] (r1).value: takes exactly one field path, not 0"],
        id="value-empty",
    ),
    pytest.param(
        FIRST_SEEN + "    value: 5\n    ttl: 1d\n",
        ["9:5: rules[0] (r1).value: 5 is not a field path"],
        id="value-not-a-path",
    ),
    pytest.param(
        FIRST_SEEN + "    value: user..name\n    ttl: 1d\n",
        ["9:5: rules[0] (r1).value: expected a field name at position 6 of path 'user..name'"],
        id="value-bad-path",
    ),
    pytest.param(
        FIRST_SEEN + "    value: userAgent\n",
        ["2:5: rules[0] (r1): kind first_seen needs `ttl:`"],
        id="ttl-missing",
    ),
    pytest.param(
        FIRST_SEEN + "    value: userAgent\n    ttl: a week\n",
        ["10:5: rules[0] (r1).ttl: 'a week' is not a duration (e.g. 30s, 250ms, 5m, 7d)"],
        id="ttl-not-a-duration",
    ),
    pytest.param(
        FIRST_SEEN + "    value: userAgent\n    ttl: 0s\n",
        ["10:5: rules[0] (r1).ttl: must be > 0, not '0s'"],
        id="ttl-zero",
    ),
    pytest.param(
        FIRST_SEEN + "    value: userAgent\n    ttl: 1d\n    learning: soon\n",
        ["11:5: rules[0] (r1).learning: 'soon' is not a duration (e.g. 30s, 250ms, 5m, 7d)"],
        id="learning-not-a-duration",
    ),
    pytest.param(
        FIRST_SEEN + "    value: userAgent\n    ttl: 1d\n    learning: -300\n",
        ["11:5: rules[0] (r1).learning: must be >= 0, not -300"],
        id="learning-negative",
    ),
    pytest.param(
        "    match: {verb: get}\n    window: 5m\n",
        ["7:5: rules[0] (r1).window: not used by kind match"],
        id="state-key-of-another-kind",
    ),
    pytest.param(
        """\
    match: {verb: get}
    examples:
      matches: []
      match:
        - events:
            - {event: {verb: get}, aftr: 5s, repeat: 0}
""",
        [
            "8:7: rules[0] (r1).examples.matches: unknown key "
            "(did you mean 'match'? known: match, no_match)",
            "11:36: rules[0] (r1).examples.match[0].events[0].aftr: unknown key "
            "(did you mean 'after'? known: event, after, repeat)",
            "11:46: rules[0] (r1).examples.match[0].events[0].repeat: "
            "must be an integer >= 1, not 0",
        ],
        id="examples",
    ),
]


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RuleError) as info:
        load_rules([str(path)])
    prefix = f"{path}:"
    assert all(p.startswith(prefix) for p in info.value.problems), info.value.problems
    return [p.removeprefix(prefix) for p in info.value.problems]


@pytest.mark.parametrize(("body", "expected"), CASES)
def test_each_malformed_rule_is_reported_where_it_is_in_plain_words(
    tmp_path: Path, body: str, expected: list[str]
) -> None:
    assert problems_of(tmp_path, HEAD + body) == expected


def test_a_file_without_rules_says_so(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "rulez: []\n") == [
        "1:1: rulez: unknown key (did you mean 'rules'? known: rules, example_settings)",
        "1:1: a rule file needs a `rules:` list",
    ]
    assert problems_of(tmp_path, "rules: {id: r1}\n") == [
        "1:8: rules: must be a list of rules, not a mapping"
    ]


def test_an_unknown_example_setting_is_located_with_a_suggestion(tmp_path: Path) -> None:
    text = "example_settings:\n  trusted_network: [10.0.0.0/8]\n" + HEAD + "    match: {}\n"
    (problem,) = [p for p in problems_of(tmp_path, text) if "trusted_network" in p]
    assert problem.startswith(
        "2:3: example_settings.trusted_network: unknown key (did you mean 'trusted_networks'? "
    )
