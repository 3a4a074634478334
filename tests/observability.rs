//! What the chart ships for monitoring: its alert rules pass promtool's checks and unit tests
//! (tests/fixtures/prometheus/alerts.test.yaml); the controller's and a poller's `/metrics`
//! pass `promtool check metrics`; and every metric the alerts and the Grafana dashboard query
//! is one those scrapes export, so neither can rot when a metric is renamed.
//!
//! promtool comes from `PROMTOOL` (hack/test.sh sets it from hack/install-promtool.sh) or PATH.
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esm_operator::api::EventSourceMapping;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::json;
use support::control_plane::{ControlPlane, repo_root};
use support::emulators::{kinesis_stream, moto_queue, shared};
use support::target::EventTarget;
use support::wait;

const CHART: &str = "charts/esm-operator";
const DASHBOARD: &str = "charts/esm-operator/files/grafana-dashboard.json";
const ALERT_TESTS: &str = "tests/fixtures/prometheus/alerts.test.yaml";
/// What the alerts read from kube-state-metrics rather than from esm-operator.
const KUBE_STATE_METRICS: &[&str] = &["kube_deployment_status_replicas_unavailable"];
const TIMEOUT: Duration = Duration::from_secs(120);

fn promtool() -> PathBuf {
    let path =
        std::env::var_os("PROMTOOL").map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    match Command::new(&path).arg("--version").output() {
        Ok(output) if output.status.success() => path,
        _ => panic!(
            "promtool is missing (tried {path:?}): build it with \
             `export PROMTOOL=$(hack/install-promtool.sh | tail -1)`, as hack/test.sh does"
        ),
    }
}

/// Runs promtool in `dir` with `stdin`; fails the test with its output unless it succeeds.
fn promtool_ok(args: &[&str], dir: &Path, stdin: &str) -> String {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The chart rendered with `values` (comma-separated `--set`), one YAML document per object.
fn rendered_chart(plane: &ControlPlane, values: &str) -> Vec<serde_yaml::Value> {
    let output = plane
        .helm()
        .args(["template", "esm", CHART, "--set", values])
        .current_dir(repo_root())
        .output()
        .expect("run helm");
    let manifest = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "helm template --set {values}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::Deserializer::from_str(&manifest)
        .map(|document| serde_yaml::Value::deserialize(document).expect("YAML from helm"))
        .filter(|object| !object.is_null())
        .collect()
}

fn object_of_kind(objects: Vec<serde_yaml::Value>, kind: &str) -> serde_yaml::Value {
    objects
        .into_iter()
        .find(|object| object["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("the chart rendered no {kind}"))
}

/// The chart's alerts with the default thresholds, as a Prometheus rule file.
fn rule_file(plane: &ControlPlane) -> serde_yaml::Value {
    let rule = object_of_kind(
        rendered_chart(plane, "metrics.prometheusRule.enabled=true"),
        "PrometheusRule",
    );
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), rule["spec"]["groups"].clone());
    file.into()
}

fn rules(file: &serde_yaml::Value) -> impl Iterator<Item = &serde_yaml::Value> {
    file["groups"]
        .as_sequence()
        .expect("rule groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().expect("rules"))
}

#[test]
fn alert_rules_pass_promtool_and_each_is_tested_firing_and_not() {
    let plane = ControlPlane::shared();
    let file = rule_file(plane);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    let tests = std::fs::read_to_string(repo_root().join(ALERT_TESTS)).unwrap();
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests).unwrap();
    promtool_ok(&["check", "rules", "rules.yaml"], dir.path(), "");
    promtool_ok(&["test", "rules", "alerts.test.yaml"], dir.path(), "");

    // (alert, expected to fire) of every evaluation in the unit tests.
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    let evaluations: BTreeSet<(String, bool)> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|test| test["alert_rule_test"].as_sequence().unwrap())
        .map(|evaluation| {
            let fires = !evaluation["exp_alerts"].as_sequence().unwrap().is_empty();
            (evaluation["alertname"].as_str().unwrap().to_owned(), fires)
        })
        .collect();
    for rule in rules(&file) {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        for fires in [true, false] {
            assert!(
                evaluations.contains(&(alert.to_owned(), fires)),
                "{ALERT_TESTS} has no evaluation where {alert} {}",
                if fires { "fires" } else { "does not fire" }
            );
        }
    }
}

#[test]
fn dashboard_config_map_carries_the_dashboard_for_the_sidecar() {
    let plane = ControlPlane::shared();
    let map = object_of_kind(
        rendered_chart(plane, "metrics.dashboard.enabled=true"),
        "ConfigMap",
    );
    assert_eq!(
        map["metadata"]["labels"]["grafana_dashboard"].as_str(),
        Some("1")
    );
    let shipped: serde_json::Value =
        serde_json::from_str(map["data"]["esm-operator.json"].as_str().unwrap()).unwrap();
    let source: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap())
            .unwrap();
    assert_eq!(shipped, source);
}

/// The PromQL expressions of the dashboard: panel queries, and the selectors of its
/// `label_values(selector, label)` variables.
fn dashboard_queries() -> Vec<String> {
    fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(object) => {
                for (key, value) in object {
                    match (key.as_str(), value.as_str()) {
                        ("expr", Some(expr)) => found.push(expr.to_owned()),
                        _ => exprs(value, found),
                    }
                }
            }
            serde_json::Value::Array(values) => values.iter().for_each(|v| exprs(v, found)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(DASHBOARD)).unwrap())
            .unwrap();
    let mut found = Vec::new();
    exprs(&dashboard["panels"], &mut found);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().unwrap();
        let arguments = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query {query:?} is not label_values(...)"));
        if let Some((selector, _label)) = arguments.rsplit_once(',') {
            found.push(selector.to_owned());
        }
    }
    assert!(!found.is_empty(), "no queries found in {DASHBOARD}");
    found
}

/// Names of the metrics a PromQL expression selects: identifiers that are not functions,
/// keywords, label names (in `{...}` and in `by (...)`-style lists), strings, durations or
/// Grafana variables. Enough for the expressions of this repository, not a full parser.
fn selected_metrics(expr: &str) -> BTreeSet<String> {
    // Aggregation operators are keywords too: `sum by (le) (...)` has no `(` after `sum`.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
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
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Index after the string whose opening quote is at `start`.
    let skip_string = |start: usize| {
        let quote = chars[start];
        let mut i = start + 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        i + 1
    };
    // Index after the group opened at `start`, skipping the strings inside it.
    let skip_group = |start: usize, close: char| {
        let mut i = start + 1;
        while i < chars.len() && chars[i] != close {
            i = if matches!(chars[i], '"' | '\'' | '`') {
                skip_string(i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(i);
        } else if c == '{' {
            i = skip_group(i, '}');
        } else if c == '[' {
            i = skip_group(i, ']');
        } else if c.is_ascii_digit() || c == '.' || c == '$' {
            // Numbers, durations (5m, 1e3) and Grafana variables ($mapping).
            i += 1;
            while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if is_word(c) {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let opens = chars.get(next) == Some(&'(');
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if opens {
                    i = skip_group(next, ')');
                }
            } else if !opens && !KEYWORDS.contains(&lower.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |expr: &str| selected_metrics(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (namespace, le) (rate(a_bucket{name=~"$m", x="}"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names(
            r#"kube_x > 0 and on (namespace, deployment) label_replace(b, "deployment", "esm-$1", "mapping", "(.+)")"#
        ),
        ["b", "kube_x"]
    );
    assert_eq!(
        names("sum(rate(c_total[5m] offset 1h)) by (reason) * 60 > 1e3 unless d"),
        ["c_total", "d"]
    );
}

/// Every metric the dashboard and the alerts query, but kube-state-metrics'.
fn queried_metrics(plane: &ControlPlane) -> BTreeSet<String> {
    let file = rule_file(plane);
    let alert_exprs = rules(&file).map(|rule| rule["expr"].as_str().unwrap().to_owned());
    dashboard_queries()
        .into_iter()
        .chain(alert_exprs)
        .flat_map(|expr| selected_metrics(&expr))
        .filter(|name| !KUBE_STATE_METRICS.contains(&name.as_str()))
        .collect()
}

/// Names of the samples of a scrape (histograms as `_bucket`, `_sum`, `_count`).
fn sample_names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// A process of the operator binary, killed when dropped (also when the test fails).
struct Operator(Child);

impl Operator {
    fn start(plane: &ControlPlane, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_esm-operator"))
            .args(args)
            .args(["--log-format", "json"])
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("POD_NAME", "observability-0")
            .stdin(Stdio::null())
            .spawn()
            .expect("start esm-operator");
        Self(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn scrape(http: &reqwest::Client, address: &str) -> Option<String> {
    let response = http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

#[tokio::test]
async fn scrapes_pass_promtool_and_export_every_metric_the_dashboard_and_alerts_query() {
    let plane = ControlPlane::with_crd();
    let client = plane.client().await;
    let ns = plane.namespace(&client, "observability").await;
    let (moto, kinesis) = (shared("moto"), shared("kinesis"));
    let (sqs, queue_url) = moto_queue(&moto, "observed").await;
    let (_stream_admin, stream) = kinesis_stream(&kinesis, 1).await;
    let target = EventTarget::<serde_json::Value>::accepting().await;
    let mappings = Api::<EventSourceMapping>::namespaced(client.clone(), &ns.name);
    for (name, source) in [
        (
            "queue",
            json!({"sqs": {"queueUrl": queue_url, "region": "us-east-1", "endpointUrl": moto.endpoint("moto")}}),
        ),
        (
            "stream",
            json!({"kinesis": {"streamName": stream, "region": "us-east-1", "endpointUrl": kinesis.endpoint("kinesis")}}),
        ),
    ] {
        let mut spec = json!({"source": source, "target": {"url": target.url}});
        if name == "stream" {
            spec["startingPosition"] = json!("TRIM_HORIZON");
        }
        let mapping: EventSourceMapping = serde_json::from_value(json!({
            "apiVersion": "esm.dev/v1alpha1",
            "kind": "EventSourceMapping",
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap();
        mappings
            .create(&PostParams::default(), &mapping)
            .await
            .unwrap();
    }
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("observed")
        .send()
        .await
        .unwrap();

    // The controller with the pollers in process: its scrape has the controller's series and
    // every poller series, the per-shard ones once it reads the stream's shard.
    let controller_address = free_address();
    let _controller = Operator::start(
        plane,
        &[
            "controller",
            "--pollers",
            "in-process",
            "--watch-namespace",
            &ns.name,
            "--admin-addr",
            &controller_address,
        ],
    );
    let wanted = queried_metrics(plane);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + TIMEOUT;
    let controller_scrape = loop {
        let text = scrape(&http, &controller_address).await.unwrap_or_default();
        let exported = sample_names(&text);
        let missing: Vec<_> = wanted.difference(&exported).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "after {TIMEOUT:?} the controller's /metrics still lacks {missing:?}, which the \
             dashboard ({DASHBOARD}) or the alerts (templates/prometheusrule.yaml) query"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let dir = tempfile::tempdir().unwrap();
    promtool_ok(&["check", "metrics"], dir.path(), &controller_scrape);

    // A poller process, as a poller Deployment runs it.
    let poller_address = free_address();
    let _poller = Operator::start(
        plane,
        &[
            "poller",
            "--namespace",
            &ns.name,
            "--mapping",
            "queue",
            "--admin-addr",
            &poller_address,
        ],
    );
    let poller_scrape = wait::until("the poller's /metrics", TIMEOUT, || async {
        scrape(&http, &poller_address)
            .await
            .filter(|text| text.contains("esm_poller_records_polled_total"))
    })
    .await;
    promtool_ok(&["check", "metrics"], dir.path(), &poller_scrape);
}
