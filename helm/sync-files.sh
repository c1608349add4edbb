#!/usr/bin/env bash
# Copies the generated files the chart wraps into kube-audit-exporter/files/,
# so that `.Files.Get` sees them and the packaged chart carries them.
# Called by `make generate`; the chart tests fail when a copy is stale.
#
#   exporter/policy/policies/recommended.yaml -> files/audit-policy.yaml
#
# (The mixin's alerts, dashboards and Loki rules are written into files/ by
# the dashboards' own generate step; this script does not touch them.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
files="$here/kube-audit-exporter/files"
mkdir -p "$files"
install -m 0644 "$top/exporter/policy/policies/recommended.yaml" "$files/audit-policy.yaml"
