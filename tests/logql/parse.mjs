// Parse LogQL with Grafana's lezer grammar (@grafana/lezer-logql) and report
// every syntax error with its position. Used by tests/test_logql_grammar.py.
//
// stdin: a JSON array of {"where": string, "expr": string}
// stdout: a JSON array, in the same order, of {"where", "expr", "parsed",
//   "errors": [{"from", "to", "line", "column", "near"}]}; "parsed" is the
//   expression as parsed, after Grafana's interval variables became a duration.
import { readFileSync } from "node:fs";
import { parser } from "@grafana/lezer-logql";

// Grafana replaces these by a duration before the query reaches Loki;
// they stand where LogQL wants one ([$__interval]).
const INTERVAL_VARIABLES = /\$(?:\{__(?:interval|rate_interval|range|auto)\}|__(?:interval|rate_interval|range|auto)\b)/g;

function position(text, offset) {
  const before = text.slice(0, offset).split("\n");
  return { line: before.length, column: before[before.length - 1].length + 1 };
}

function check(expr) {
  const parsed = expr.replace(INTERVAL_VARIABLES, "1m");
  const errors = [];
  const tree = parser.parse(parsed);
  tree.iterate({
    enter(node) {
      if (node.type.isError) {
        const start = Math.max(0, node.from - 10);
        errors.push({
          from: node.from,
          to: node.to,
          ...position(parsed, node.from),
          near: parsed.slice(start, Math.min(parsed.length, node.to + 10)),
        });
      }
    },
  });
  if (tree.type.name !== "LogQL") {
    errors.push({ from: 0, to: 0, line: 1, column: 1, near: `top node ${tree.type.name}` });
  }
  return { parsed, errors };
}

const queries = JSON.parse(readFileSync(0, "utf8"));
const out = queries.map(({ where, expr }) => ({ where, expr, ...check(expr) }));
process.stdout.write(JSON.stringify(out));
