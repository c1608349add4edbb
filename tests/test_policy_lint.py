"""policy lint: kube-apiserver's errors, then the mistakes it accepts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from exporter.policy import cli as policy_cli
from exporter.policy import evaluate, lint_text
from exporter.policy.evaluate import Attributes, User
from exporter.policy.lint import LintReport
from exporter.policy.shipped import SHIPPED_POLICIES, shipped_policy_text

CASES = Path(__file__).parent / "policy_cases"
HEAD = "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
# A policy that lints clean; tests change one thing in it.
CLEAN_RULES = """\
omitStages: [RequestReceived]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps"]
  - level: Metadata
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="kube-audit-exporter")
    policy_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def with_rule(rule: str) -> str:
    """CLEAN_RULES with ``rule`` inserted before the catch-all (at line 9)."""
    cut = CLEAN_RULES.rindex("  - level: Metadata\n")
    return CLEAN_RULES[:cut] + rule + CLEAN_RULES[cut:]


def lint(body: str, head: str = HEAD) -> LintReport:
    return lint_text(head + body, "policy.yaml")


def codes(report: LintReport) -> list[str]:
    return [f.code for f in report.findings]


def only(report: LintReport, code: str) -> list[str]:
    return [f.message for f in report.findings if f.code == code]


def test_the_policy_subcommand_is_registered() -> None:
    from exporter import cli as main_cli

    assert "exporter.policy.cli" in main_cli.COMMAND_MODULES


# --- the article's policy (issue 7) -------------------------------------------


def test_the_article_policy_is_answered_with_line_column_and_the_missing_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = CASES / "article-broken.yaml"
    code, out, err = run(capsys, "policy", "lint", str(path))
    assert code == 2
    assert "Traceback" not in out + err
    first = out.splitlines()[0]
    # The parser stops where the list of rules starts under `kind: Policy`.
    assert first.startswith(f"{path}:5:3: error: invalid YAML")
    hint = out.splitlines()[1]
    assert hint.strip().startswith("hint:")
    for key in ("`omitStages:`", "`rules:`", "`resources:`"):
        assert key in hint
    assert "line 3" in hint and "line 5" in hint and "lines 6 and 10" in hint


def test_the_article_policy_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "policy", "lint", "--output", "json", str(CASES / "article-broken.yaml")
    )
    assert code == 2
    report = json.loads(out)
    assert report["accepted"] is False
    assert report["warnings"] == []
    [error] = report["errors"]
    assert (error["code"], error["line"], error["column"]) == ("yaml-syntax", 5, 3)
    assert "omitStages:" in error["hint"] and "rules:" in error["hint"]


def test_the_repaired_article_policy_warns_about_service_and_the_catch_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = CASES / "article-repaired.yaml"
    code, out, _ = run(capsys, "policy", "lint", str(path))
    assert code == 1
    lines = out.splitlines()
    service = next(line for line in lines if '"service"' in line)
    assert service.startswith(f"{path}:10:19: warning:")
    assert "[unknown-resource]" in service
    assert 'did you mean "services"?' in lines[lines.index(service) + 1]
    assert any(
        line.startswith(f"{path}:12:5: warning:") and "[no-catch-all]" in line for line in lines
    )
    report = lint_text(path.read_bytes(), str(path))
    assert codes(report) == ["unknown-resource", "no-catch-all"]
    assert report.errors == []


# --- errors: kube-apiserver refuses the file ------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "line", "fragment"),
    [
        ("rules:\n- verbs: [get]\n", "invalid", 4, "rules[0].level: Required value"),
        ("rules:\n- level: metadata\n", "invalid", 4, 'Unsupported value: "metadata"'),
        (
            "rules:\n- level: None\n  nonResourceURLs: [metrics]\n",
            "invalid",
            5,
            "must begin with a '/'",
        ),
        (
            "rules:\n- level: None\n  nonResourceURLs: [/api/*/pods]\n",
            "invalid",
            5,
            "must be the final character",
        ),
        (
            "rules:\n- level: None\n  nonResourceURLs: [/metrics]\n  namespaces: [default]\n",
            "invalid",
            5,
            "both regular resources and non-resource URLs",
        ),
        (
            "rules:\n- level: None\n  resources:\n  - group: apps/v1\n",
            "invalid",
            6,
            'Invalid value: "apps/v1"',
        ),
        (
            "rules:\n- level: None\n  resources:\n  - resourceNames: [x]\n",
            "invalid",
            6,
            "using resourceNames requires at least one resource",
        ),
        (
            "rules:\n- level: None\n  omitStages: [Received]\n",
            "invalid",
            5,
            'Invalid value: "Received": allowed stages are',
        ),
        ("rules: []\n", "no-rules", 3, "0 rules"),
        ("omitStages: [RequestReceived]\n", "no-rules", 1, "0 rules"),
        ("rules:\n- level: [Metadata]\n", "decode", 4, "expected a string, found a list"),
        ("rules:\n- level: None\n  users: alice\n", "decode", 5, "expected a list of strings"),
        ("rules:\n- level: None\n  users: [n]\n", "decode", 5, "found a boolean"),
        ("rules:\n- level: None\n  resources: [pods]\n", "decode", 5, "expected a mapping"),
        ("omitManagedFields: 'true'\nrules:\n- level: None\n", "decode", 3, "true or false"),
    ],
)
def test_what_the_api_server_refuses(body: str, code: str, line: int, fragment: str) -> None:
    report = lint(body)
    assert report.exit_code == 2
    matching = [f for f in report.errors if f.code == code and fragment in f.message]
    assert matching, report.findings
    assert matching[0].line == line


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("kind: Policy\nrules:\n- level: None\n", "api-version"),
        ("apiVersion: audit.k8s.io/v1\nrules:\n- level: None\n", "kind"),
        ("apiVersion: audit.k8s.io/v1alpha1\nkind: Policy\nrules:\n- level: None\n", "api-version"),
        ("apiVersion: audit.k8s.io/v1\nkind: AuditPolicy\nrules:\n- level: None\n", "kind"),
        ("- level: None\n", "decode"),
        ("", "kind"),
        ("rules:\n\t- level: None\n", "yaml-syntax"),
    ],
)
def test_type_meta_and_shape_errors(text: str, code: str) -> None:
    report = lint_text(text)
    assert report.exit_code == 2
    assert code in [f.code for f in report.errors]


def test_a_wrong_level_case_gets_a_hint() -> None:
    [error] = lint("rules:\n- level: requestresponse\n").errors
    assert error.hint == "levels are case-sensitive: RequestResponse"


def test_errors_come_before_warnings_and_all_carry_a_line() -> None:
    report = lint("rules:\n- level: None\n  verb: [get]\n- level: Loud\n")
    severities = [f.severity for f in report.findings]
    assert severities[0] == "error" and set(severities[1:]) == {"warning"}
    # every warning, not only the loader's first one, even beside an error
    assert {"unknown-field", "shadowed-rule"} <= {f.code for f in report.warnings}
    assert all(f.line is not None for f in report.findings)


# --- strict, then lenient decoding ------------------------------------------------


def test_a_mis_indented_key_is_dropped_with_a_warning() -> None:
    body = with_rule(
        "  - level: None\n"
        '    users: ["system:kube-proxy"]\n'
        "    resources:\n"
        '      - group: ""\n'
        '        resources: ["endpoints"]\n'
        '        verbs: ["watch"]\n'
    )
    report = lint(body)
    assert report.exit_code == 1, report.findings
    [unknown] = report.findings
    assert unknown.code == "unknown-field"
    assert unknown.field == "rules[1].resources[0].verbs"
    assert (unknown.line, unknown.column) == (14, 9)
    assert "falls back to lenient decoding and drops it" in unknown.message
    assert unknown.hint == "'verbs' is a field of a rule: check its indentation"
    # What the API server then runs: kube-proxy's writes of endpoints are not audited either.
    assert report.policy is not None
    update = Attributes(
        verb="update",
        user=User("system:kube-proxy"),
        resource_request=True,
        resource="endpoints",
        namespace="default",
        name="kubernetes",
    )
    assert evaluate(report.policy, update).level == "None"


def test_a_misspelt_field_is_dropped_and_named() -> None:
    report = lint(with_rule("  - level: None\n    verb: [get]\n"))
    assert codes(report) == ["unknown-field", "shadowed-rule"]
    unknown = report.findings[0]
    assert (unknown.line, unknown.hint) == (10, "did you mean 'verbs'?")
    # Without its verbs the rule is a catch-all: the one after it is shadowed.
    assert report.policy is not None
    assert report.policy.rules[1].is_catch_all


def test_field_names_are_case_sensitive() -> None:
    report = lint(with_rule("  - level: None\n    Verbs: [get]\n"))
    unknown = report.findings[0]
    assert unknown.code == "unknown-field"
    assert unknown.hint in ("did you mean 'verbs'?", "field names are case-sensitive: 'verbs'")


def test_a_duplicate_field_keeps_the_last_value_with_a_warning() -> None:
    report = lint(
        "omitStages: [RequestReceived]\nrules:\n- level: None\n  level: Metadata\n"
        "  resources:\n  - resources: [secrets]\n- level: Metadata\n"
    )
    [duplicate] = [f for f in report.findings if f.code == "duplicate-field"]
    assert duplicate.line == 6
    assert report.policy is not None
    assert report.policy.rules[0].level == "Metadata"


def test_duplicate_keys_in_metadata_labels_are_strict_errors_too() -> None:
    report = lint("metadata:\n  labels:\n    a: one\n    a: two\n" + CLEAN_RULES)
    assert codes(report) == ["duplicate-field"]


def test_y_and_n_are_booleans_to_the_api_server() -> None:
    # go-yaml v2 reads y/n (like yes/no/on/off) as booleans; a label must be a string.
    report = lint("metadata:\n  labels:\n    enabled: y\n" + CLEAN_RULES)
    assert [(f.code, f.line) for f in report.errors] == [("decode", 5)]


def test_v1beta1_is_accepted_with_a_note() -> None:
    report = lint_text("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\n" + CLEAN_RULES)
    assert report.exit_code == 1
    [note] = report.warnings
    assert note.code == "deprecated-version"
    assert "v1.24" in note.message


def test_later_yaml_documents_are_ignored_with_a_warning() -> None:
    report = lint(CLEAN_RULES + "---\nkind: Policy\n")
    assert codes(report) == ["extra-document"]


# --- warnings: accepted, but not what was meant -------------------------------------


def test_the_shipped_policies_are_clean() -> None:
    for name in SHIPPED_POLICIES:
        report = lint_text(shipped_policy_text(name), name)
        assert report.findings == [], (name, report.findings)
        assert report.exit_code == 0


def test_a_clean_policy_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + CLEAN_RULES)
    code, out, _ = run(capsys, "policy", "lint", str(path))
    assert code == 0
    assert out.strip().endswith("0 errors, 0 warnings: clean")


def test_a_missing_file_is_an_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "policy", "lint", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "cannot read the file" in out


@pytest.mark.parametrize(
    ("group", "resource", "code", "hint"),
    [
        ('""', "service", "unknown-resource", 'did you mean "services"?'),
        ('""', "Pod", "unknown-resource", 'did you mean "pods"?'),
        ('""', "svc", "unknown-resource", 'did you mean "services"?'),
        ('""', "pods/logs", "unknown-subresource", 'did you mean "pods/log"?'),
        (
            '""',
            "deployments",
            "wrong-group",
            'did you mean {group: "apps", resources: ["deployments"]}?',
        ),
        ("apps", "deployment/scale", "unknown-resource", 'did you mean "deployments/scale"?'),
        ("core", "pods", "unknown-group", 'use group: ""'),
        ('""', "*/logs", "unknown-subresource", ""),
        ('""', "*/*", "never-matches", 'use "*" for every resource and subresource'),
        ('""', "pod*", "wildcard-literal", ""),
    ],
)
def test_resource_names_that_match_nothing(group: str, resource: str, code: str, hint: str) -> None:
    report = lint(
        with_rule(
            f"  - level: Request\n    resources:\n      - group: {group}\n"
            f'        resources: ["{resource}"]\n'
        )
    )
    assert codes(report) == [code], report.findings
    [finding] = report.findings
    assert finding.line == 12
    assert finding.hint == hint


def test_custom_resources_are_not_checked() -> None:
    rule = (
        "  - level: Request\n    resources:\n      - group: cert-manager.io\n"
        '        resources: ["certificates"]\n'
    )
    assert lint(with_rule(rule)).findings == []


def test_group_star_needs_a_recent_api_server() -> None:
    rule = "  - level: None\n    resources:\n      - group: '*'\n        resources: ['*/status']\n"
    [warning] = lint(with_rule(rule)).findings
    assert warning.code == "group-wildcard"
    assert "v1.36" in warning.message


@pytest.mark.parametrize("field", ["verbs", "users", "userGroups", "namespaces"])
def test_star_is_not_a_wildcard_in_exact_match_lists(field: str) -> None:
    assert codes(lint(with_rule(f"  - level: None\n    {field}: ['*']\n"))) == ["wildcard-literal"]


def test_an_unknown_verb() -> None:
    assert codes(lint(with_rule("  - level: None\n    verbs: [read]\n"))) == ["unknown-verb"]


def test_resource_names_on_creates_never_match() -> None:
    rule = (
        "  - level: Request\n    verbs: [create]\n    resources:\n      - resources: [pods]\n"
        "        resourceNames: [web]\n"
    )
    assert codes(lint(with_rule(rule))) == ["never-matches"]


def test_a_rule_after_a_catch_all_can_never_match() -> None:
    body = CLEAN_RULES + "  - level: None\n    verbs: [watch]\n"
    report = lint(body)
    assert codes(report) == ["shadowed-rule"]
    [finding] = report.findings
    assert finding.field == "rules[2]"
    assert "rules[1] (line 9) matches every request" in finding.message


@pytest.mark.parametrize(
    ("earlier", "later", "shadowed"),
    [
        ("verbs: [get, list]", "verbs: [get]", True),
        ("verbs: [get]", "verbs: [get, list]", False),
        ("users: [a]", "users: [a]\n    verbs: [get]", True),
        ("userGroups: [g]", "users: [a]", False),
        (
            "namespaces: [kube-system]",
            "namespaces: [kube-system]\n    resources: [{resources: [pods]}]",
            True,
        ),
        (
            "resources: [{resources: ['pods/*']}]",
            "resources: [{resources: [pods, pods/log]}]",
            True,
        ),
        ("resources: [{resources: ['*/log']}]", "resources: [{resources: [pods]}]", False),
        ("resources: [{resources: ['*/log']}]", "resources: [{resources: [pods/log]}]", True),
        (
            "resources: [{group: apps}]",
            "resources: [{group: apps, resources: [deployments]}]",
            True,
        ),
        (
            "resources: [{resources: [pods]}]",
            "resources: [{group: apps, resources: [pods]}]",
            False,
        ),
        (
            "resources: [{resources: [pods], resourceNames: [a]}]",
            "resources: [{resources: [pods]}]",
            False,
        ),
        ("nonResourceURLs: ['/healthz*']", "nonResourceURLs: [/healthz/etcd]", True),
        ("nonResourceURLs: [/healthz]", "nonResourceURLs: ['/healthz*']", False),
        ("nonResourceURLs: ['*']", "resources: [{resources: [pods]}]", False),
        ("resources: [{resources: ['*']}]", "verbs: [get]", False),
    ],
)
def test_shadowed_rules(earlier: str, later: str, shadowed: bool) -> None:
    report = lint(with_rule(f"  - level: None\n    {earlier}\n  - level: Metadata\n    {later}\n"))
    assert ("shadowed-rule" in codes(report)) is shadowed, report.findings


def test_no_catch_all() -> None:
    report = lint(CLEAN_RULES[: CLEAN_RULES.rindex("  - level: Metadata\n")])
    assert codes(report) == ["no-catch-all"]
    assert report.findings[0].line == 5


def test_request_received_not_omitted() -> None:
    report = lint(CLEAN_RULES.replace("omitStages: [RequestReceived]\n", ""))
    assert codes(report) == ["request-received"]
    assert "doubles the volume" in report.findings[0].message


def test_request_received_omitted_by_every_logging_rule_is_fine() -> None:
    body = CLEAN_RULES.replace("omitStages: [RequestReceived]\n", "").replace(
        "  - level: Metadata\n", "  - level: Metadata\n    omitStages: [RequestReceived]\n"
    )
    assert lint(body).findings == []


def test_an_unknown_policy_wide_stage_is_only_a_warning() -> None:
    report = lint(CLEAN_RULES.replace("[RequestReceived]", "[RequestReceived, Done]"))
    assert report.exit_code == 1
    assert codes(report) == ["unknown-stage"]


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        ("  - level: RequestResponse\n", "Secrets"),
        ('  - level: Request\n    resources:\n      - group: ""\n', "Secrets"),
        ('  - level: Request\n    resources:\n      - resources: ["*"]\n', "ConfigMaps"),
        (
            "  - level: RequestResponse\n    resources:\n      - group: authentication.k8s.io\n",
            "TokenReviews",
        ),
        (
            "  - level: RequestResponse\n    resources:\n"
            '      - resources: ["serviceaccounts/*"]\n',
            "TokenRequests",
        ),
    ],
)
def test_secret_values_in_the_log(rule: str, label: str) -> None:
    body = (
        "omitStages: [RequestReceived]\nrules:\n"
        + rule
        + (
            '  - level: Metadata\n    resources:\n      - resources: ["secrets"]\n'
            "  - level: Metadata\n"
        )
    )
    messages = only(lint(body), "sensitive-body")
    assert messages and label in messages[0]


def test_a_metadata_rule_for_secrets_first_protects_them() -> None:
    body = (
        "omitStages: [RequestReceived]\nrules:\n  - level: Metadata\n    resources:\n"
        '      - resources: ["secrets", "configmaps", "serviceaccounts/token"]\n'
        '      - group: authentication.k8s.io\n        resources: ["tokenreviews"]\n'
        "  - level: RequestResponse\n"
    )
    assert lint(body).findings == []


def test_a_secrets_rule_limited_to_reads_does_not_protect_writes() -> None:
    body = (
        "omitStages: [RequestReceived]\nrules:\n"
        "  - level: Metadata\n    verbs: [get, list, watch]\n"
        "    resources:\n      - resources: [secrets, configmaps]\n  - level: RequestResponse\n"
    )
    messages = only(lint(body), "sensitive-body")
    assert messages == [
        "rules[1].level: RequestResponse logs the bodies of Secrets, ConfigMaps, TokenReviews and "
        "TokenRequests (serviceaccounts/token): secret values and tokens end up in the audit log"
    ]


def test_no_rule_for_secrets() -> None:
    report = lint("omitStages: [RequestReceived]\nrules:\n  - level: Metadata\n")
    assert codes(report) == ["no-secrets-rule"]


def test_json_output_lists_errors_then_warnings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEAD + "rules:\n  - level: Metadata\n    verbs: ['*']\n")
    code, out, _ = run(capsys, "policy", "lint", "--output", "json", str(path))
    assert code == 1
    report = json.loads(out)
    assert report["file"] == str(path)
    assert report["accepted"] is True
    assert report["exitCode"] == 1
    assert report["resourcesRelease"] == "v1.33"
    # In the order of their lines.
    assert [(w["code"], w["line"]) for w in report["warnings"]] == [
        ("request-received", 1),
        ("no-secrets-rule", 3),
        ("no-catch-all", 4),
        ("wildcard-literal", 5),
    ]
    for warning in report["warnings"]:
        assert set(warning) == {"severity", "code", "field", "line", "column", "message", "hint"}


def test_the_worst_exit_code_of_several_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = tmp_path / "clean.yaml"
    clean.write_text(HEAD + CLEAN_RULES)
    code, _, _ = run(capsys, "policy", "lint", str(clean), str(CASES / "article-repaired.yaml"))
    assert code == 1
    code, _, _ = run(capsys, "policy", "lint", str(clean), str(CASES / "article-broken.yaml"))
    assert code == 2


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02",
        b"\xff\xfe not utf-8",
        b"rules: " + b"[" * 5000 + b"]" * 5000,
        b"a: &a\n  <<: *a\n",
        HEAD.encode() + b"rules:\n- level: None\n  resources: [{group: [x]}]\n",
    ],
)
def test_garbage_is_an_error_not_a_traceback(data: bytes) -> None:
    report = lint_text(data)
    assert report.exit_code == 2
    assert report.errors


def test_merge_keys_are_expanded_like_go_yaml() -> None:
    body = (
        "omitStages: [RequestReceived]\nrules:\n"
        "  - &secrets\n    level: Metadata\n    resources:\n      - resources: [secrets]\n"
        "  - <<: *secrets\n    level: Request\n    verbs: [get]\n"
        "  - level: Metadata\n"
    )
    report = lint(body)
    assert report.policy is not None
    merged = report.policy.rules[1]
    assert (merged.level, merged.verbs, merged.resources[0].resources) == (
        "Request",
        ("get",),
        ("secrets",),
    )


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ("widgets", ["group-wildcard"]),  # a custom resource may be called anything
        ("service", ["group-wildcard", "unknown-resource"]),
        ("*/logs", ["group-wildcard", "unknown-subresource"]),  # CRDs only add status, scale
        ("*/status", ["group-wildcard"]),
    ],
)
def test_resource_names_with_group_star(resource: str, expected: list[str]) -> None:
    rule = (
        f"  - level: None\n    resources:\n      - group: '*'\n        resources: ['{resource}']\n"
    )
    assert sorted(codes(lint(with_rule(rule)))) == expected


def test_rules_under_omit_stages_get_the_missing_key_hint() -> None:
    # Valid YAML with the wrong shape: the rules continue the omitStages list.
    report = lint("omitStages:\n  - RequestReceived\n  - level: Metadata\n")
    [decode] = [f for f in report.errors if f.code == "decode"]
    assert (decode.line, decode.column) == (5, 5)
    assert decode.hint == "a list must be the value of a key; add `rules:` before line 5"
