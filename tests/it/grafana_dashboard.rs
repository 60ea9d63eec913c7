//! The Grafana dashboard `deploy/grafana/corefn.json` against the corefn
//! it is for: valid JSON with unique panel ids and a Prometheus data
//! source variable, and every query (panel targets and template
//! variables) selecting only metric names that a running corefn's
//! `/metrics` exposes, so renaming a metric fails here until the dashboard
//! follows. `promtool check rules` parses every query as PromQL.

use crate::common::*;
use crate::prometheus::required_program;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// The data source every panel and target names: the dashboard's
/// `datasource` template variable.
const DATASOURCE_UID: &str = "${DS_PROMETHEUS}";

/// PromQL words that are not metric names when not followed by `(`.
const KEYWORDS: [&str; 14] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
];
/// Aggregations, which may take `by (..)` before their `(`.
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Words whose `( .. )` holds label names, not expressions.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/corefn.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'v>(panels: &'v Value, out: &mut Vec<&'v Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL query: `(where, expr)` for each panel target and each
/// query variable (its `label_values(selector, label)` selector).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!(
                    "panel {:?}: a target without expr: {target}",
                    panel["title"]
                )
            });
            out.push((
                format!(
                    "panel {} {:?} target {}",
                    panel["id"], panel["title"], target["refId"]
                ),
                expr.to_string(),
            ));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
    {
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable {:?} has no query", variable["name"]));
        let selector = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.rsplit_once(','))
            .map(|(selector, _label)| selector)
            .unwrap_or_else(|| {
                panic!(
                    "variable {:?}: expected label_values(metric, label), got {query:?}",
                    variable["name"]
                )
            });
        out.push((
            format!("variable {:?}", variable["name"]),
            selector.to_string(),
        ));
    }
    out
}

/// Index just past the `close` matching the `open` at `start`, skipping
/// quoted strings.
fn skip_balanced(bytes: &[u8], start: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => i = skip_string(bytes, i) - 1,
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

/// Index just past the string literal opening at `start`.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 1,
            b if b == quote => return i + 1,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

fn is_identifier_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_identifier_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The metric names `expr` selects: its identifiers outside strings,
/// label matchers `{..}`, ranges `[..]`, label lists (`by (..)`) and
/// Grafana variables (`$x`, `${x}`), that are neither calls, aggregations
/// nor keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' || b == b'\'' || b == b'`' {
            i = skip_string(bytes, i);
        } else if b == b'{' {
            i = skip_balanced(bytes, i, b'{', b'}');
        } else if b == b'[' {
            i = skip_balanced(bytes, i, b'[', b']');
        } else if b == b'$' {
            i += 1;
            if bytes.get(i) == Some(&b'{') {
                i = skip_balanced(bytes, i, b'{', b'}');
            } else {
                while i < bytes.len() && is_identifier_byte(bytes[i]) {
                    i += 1;
                }
            }
        } else if b.is_ascii_digit() || b == b'.' {
            // Numbers and durations: 0.99, 1e3, 5m.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
        } else if is_identifier_start(b) {
            let start = i;
            while i < bytes.len() && is_identifier_byte(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < bytes.len() && bytes[next].is_ascii_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if bytes.get(next) == Some(&b'(') {
                    i = skip_balanced(bytes, next, b'(', b')');
                }
            } else if bytes.get(next) == Some(&b'(')
                || AGGREGATIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
            {
                // A call, an aggregation or an operator word.
            } else {
                names.push(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The metric names a running corefn's `/metrics` exposes, with the
/// `_bucket`, `_sum` and `_count` series of its histograms.
fn exposed_metric_names() -> BTreeSet<String> {
    let hello = wasm_route("hello.wat", serde_json::json!(null));
    let s = WorkerServer::start(&[("GET:/hello", &hello)], &examples_dir(), &[]);
    assert_eq!(get(s.addr(), "/hello").status, 200);
    let r = get(s.addr(), "/metrics");
    assert_eq!(r.status, 200, "/metrics: body {:?}", r.text());
    let mut names = BTreeSet::new();
    for line in r.text().lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split(' ');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("malformed TYPE line {line:?}");
        };
        names.insert(name.to_string());
        if matches!(kind, "histogram" | "summary") {
            names.insert(format!("{name}_sum"));
            names.insert(format!("{name}_count"));
        }
        if kind == "histogram" {
            names.insert(format!("{name}_bucket"));
        }
    }
    assert!(
        names.contains("corefn_function_invocations_total"),
        "TYPE lines in /metrics: {names:?}"
    );
    names
}

#[test]
fn dashboard_is_valid_json_with_unique_panel_ids_and_one_prometheus_datasource() {
    let dashboard = dashboard();
    assert_eq!(dashboard["title"], "corefn");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let panels = all_panels(&dashboard);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in &panels {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {:?} has no numeric id", panel["title"]));
        assert!(ids.insert(id), "panel id {id} is used twice");
        assert!(
            panel["gridPos"]["w"].as_u64().is_some() && panel["gridPos"]["h"].as_u64().is_some(),
            "panel {id} has a gridPos: {}",
            panel["gridPos"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], DATASOURCE_UID, "panel {id}");
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(
            !targets.is_empty(),
            "panel {id} {:?} has targets",
            panel["title"]
        );
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], DATASOURCE_UID,
                "panel {id}: {target}"
            );
            assert!(
                ref_ids.insert(target["refId"].as_str().unwrap_or("").to_string()),
                "panel {id}: refId {} is used twice",
                target["refId"]
            );
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name:?}"))
    };
    let datasource = variable("DS_PROMETHEUS");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let function = variable("function");
    assert_eq!(function["type"], "query");
    assert_eq!(
        function["query"]["query"],
        "label_values(corefn_function_invocations_total, function)"
    );
}

#[test]
fn dashboard_queries_select_only_metrics_that_corefn_exposes() {
    let queries = queries(&dashboard());
    let exposed = exposed_metric_names();
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !exposed.contains(&name) {
                unknown.push(format!("{place}: {name} in {expr:?}"));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics corefn does not expose:\n{}\nexposed: {exposed:?}",
        unknown.join("\n")
    );
    eprintln!(
        "{} queries use {} of the {} exposed names",
        queries.len(),
        used.len(),
        exposed.len()
    );
}

#[test]
fn dashboard_queries_parse_as_promql() {
    let promtool = required_program("promtool");
    let dir = crate::common::tempdir().expect("tempdir for the rules file");
    // Each query as a recording rule, with Grafana's variables filled in.
    let mut rules = String::from("groups:\n  - name: corefn_dashboard\n    rules:\n");
    for (n, (_place, expr)) in queries(&dashboard()).iter().enumerate() {
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$function", ".*")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&promql).expect("quote the query");
        rules.push_str(&format!(
            "      - record: corefn_dashboard:query_{n}\n        expr: {quoted}\n"
        ));
    }
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(rules.as_bytes()))
        .expect("write the rules file");
    let output = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", promtool.display()));
    assert!(
        output.status.success(),
        "promtool check rules: {}\n{}{}\nrules:\n{rules}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn metric_names_are_found_outside_matchers_calls_and_label_lists() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le, function) (rate(a_bucket{function=~\"$function\", x=\"}{\"}[$__rate_interval]))) / on(instance) group_left b offset 5m"
        ),
        ["a_bucket", "b"]
    );
    assert_eq!(metric_names("sum(rate(x_total[1m])) > bool 0"), ["x_total"]);
}
