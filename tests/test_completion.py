"""Shell completion scripts, generated from the parser, loaded into the real
shells (bash, zsh and fish from the Makefile's deps-system): a subcommand, a
flag of a nested command and a flag's choices complete."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("completion")
    paths = {}
    for shell in ("bash", "zsh", "fish"):
        text = subprocess.run(
            [sys.executable, "-m", "exporter", "completion", shell],
            capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout  # fmt: skip
        paths[shell] = out / f"completion.{shell}"
        paths[shell].write_text(text)
    return paths


def shell_path(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make deps-system`")
    return path


def bash_complete(script: Path, *words: str) -> list[str]:
    """What bash's completion function offers for ``words`` (the last one
    being completed)."""
    array = " ".join(f"'{w}'" for w in ("kube-audit-exporter", *words))
    code = (
        f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words)}; "
        "complete -p kube-audit-exporter >/dev/null && _kube_audit_exporter; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run([shell_path("bash"), "--norc", "-c", code], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return out.stdout.split()


def fish_complete(script: Path, line: str) -> list[str]:
    out = subprocess.run(
        [shell_path("fish"), "--no-config", "-c", f"source {script}; complete -C '{line}'"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [row.split("\t")[0] for row in out.stdout.splitlines()]


def zsh_complete(script: Path, *words: str) -> list[str]:
    """The candidates the zsh function hands to compadd (compinit loaded, the
    function registered with compdef; compadd records instead of drawing,
    since there is no terminal)."""
    array = " ".join(f"'{w}'" for w in ("kube-audit-exporter", *words))
    code = (
        "autoload -Uz compinit && compinit -u -D; "
        f"source {script}; "
        "[[ $_comps[kube-audit-exporter] == _kube_audit_exporter ]] || exit 3; "
        'compadd() { print -l -- "${@:#--}" }; _files() { print "<files>" }; '
        f"words=({array}); CURRENT={len(words) + 1}; _kube_audit_exporter"
    )
    out = subprocess.run([shell_path("zsh"), "-f", "-c", code], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return out.stdout.split()


def test_bash_completes_subcommands_flags_and_choices(scripts: dict[str, Path]) -> None:
    assert bash_complete(scripts["bash"], "repl") == ["replay"]
    assert bash_complete(scripts["bash"], "replay", "--loki.sta") == ["--loki.stall-timeout"]
    assert bash_complete(scripts["bash"], "rules", "list", "--con") == ["--config.file"]
    assert sorted(bash_complete(scripts["bash"], "replay", "--output", "")) == ["json", "text"]
    assert "--web.listen-address" not in bash_complete(scripts["bash"], "replay", "--")
    assert "--web.listen-address" in bash_complete(scripts["bash"], "run", "--")


def test_fish_completes_subcommands_flags_and_choices(scripts: dict[str, Path]) -> None:
    assert fish_complete(scripts["fish"], "kube-audit-exporter repl") == ["replay"]
    assert fish_complete(scripts["fish"], "kube-audit-exporter replay --loki.sta") == [
        "--loki.stall-timeout"
    ]
    assert fish_complete(scripts["fish"], "kube-audit-exporter rules li") == ["list"]
    assert sorted(fish_complete(scripts["fish"], "kube-audit-exporter replay --output ")) == [
        "json",
        "text",
    ]


def test_zsh_completes_subcommands_flags_and_choices(scripts: dict[str, Path]) -> None:
    top = zsh_complete(scripts["zsh"], "rep")
    assert "replay" in top and "policy" in top and "--version" not in top
    flags = zsh_complete(scripts["zsh"], "replay", "--loki.sta")
    assert "--loki.stall-timeout" in flags and "--web.listen-address" not in flags
    assert zsh_complete(scripts["zsh"], "replay", "--output", "") == ["text", "json"]
    assert "--config.file" in zsh_complete(scripts["zsh"], "rules", "list", "--")
