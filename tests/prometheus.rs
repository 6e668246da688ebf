//! The shipped Prometheus rules (deploy/prometheus/tollgate.rules.yaml) evaluated by a real
//! Prometheus (Debian's `prometheus`, or `PROMETHEUS=/path`) that scrapes a real Envoy running
//! the example configuration (envoy/envoy.yaml): the alerts go pending on the traffic that
//! should raise them and stay quiet otherwise, so their metric names, labels and the example's
//! `stat_prefix` are the ones Envoy really exports. `promtool test rules` checks the thresholds
//! and the `for` durations on synthetic series (`make rules`). The Grafana dashboard
//! (deploy/grafana/tollgate.json) has its queries run against the same setup.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::standin::crashing_plugin;
use common::*;
use serde_json::Value;

fn prometheus_bin() -> String {
    std::env::var("PROMETHEUS").unwrap_or_else(|_| "prometheus".into())
}

/// A Prometheus on a free loopback port with the shipped rules, scraping Envoy's admin every
/// second (only the series that counted something with `usedonly`, as docs/OBSERVABILITY.md
/// suggests for large configurations) and evaluating every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempdir::Dir,
}

impl Prometheus {
    fn start(envoy_admin: u16, usedonly: bool) -> Prometheus {
        let dir = tempdir::Dir::new("prometheus");
        let rules = repo_root().join("deploy/prometheus/tollgate.rules.yaml");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n\
             - job_name: envoy\n  metrics_path: /stats/prometheus\n  \
             static_configs: [{{targets: ['127.0.0.1:{envoy_admin}']}}]\n{}",
            rules.display(),
            if usedonly {
                "  params: {usedonly: ['']}\n"
            } else {
                ""
            }
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_bin())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): make e2e installs it",
                    prometheus_bin()
                )
            });
        let mut p = Prometheus { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", p.log());
            }
            if matches!(try_request(port, "GET", "/-/ready", &[], b""), Ok(r) if r.status == 200) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Value {
        let r = request(self.port, "GET", path, &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let v = r.json();
        assert_eq!(v["status"], "success", "{v}");
        v["data"].clone()
    }

    /// Every alert instance of the shipped rules: (alert name, its labels, pending/firing).
    fn alerts(&self) -> Vec<(String, BTreeMap<String, String>, String)> {
        let data = self.get("/api/v1/rules?type=alert");
        let mut out = Vec::new();
        for group in data["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                // ("unknown" until the first evaluation; "err" is a broken query.)
                assert_ne!(rule["health"], "err", "{rule}");
                for a in rule["alerts"].as_array().unwrap() {
                    let labels = labels(&a["labels"]);
                    let state = a["state"].as_str().unwrap().to_string();
                    out.push((rule["name"].as_str().unwrap().to_string(), labels, state));
                }
            }
        }
        out
    }

    /// The samples of an instant query (asserting it is valid).
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.get(&format!("/api/v1/query?query={}", encode(promql)));
        data["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (labels(&s["metric"]), value)
            })
            .collect()
    }
}

/// A label set of Prometheus's API (a JSON object of strings).
fn labels(object: &Value) -> BTreeMap<String, String> {
    object
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect()
}

/// Percent-encodes a query parameter's value.
fn encode(text: &str) -> String {
    let mut q = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            q.push(b as char);
        } else {
            q.push_str(&format!("%{b:02X}"));
        }
    }
    q
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has(
    alert: &(String, BTreeMap<String, String>, String),
    name: &str,
    labels: &[(&str, &str)],
) -> bool {
    alert.0 == name
        && labels
            .iter()
            .all(|(k, v)| alert.1.get(*k).map(String::as_str) == Some(*v))
}

#[test]
fn the_shipped_rules_raise_the_alerts_a_real_gateway_deserves_and_no_others() {
    for usedonly in [false, true] {
        rules_on_the_example(usedonly);
    }
}

fn rules_on_the_example(usedonly: bool) {
    let (yaml, ports) = example_yaml("envoy.yaml");
    let envoy = YamlEnvoy::start(tempdir::Dir::new("prom-example"), &yaml, 1, ports.admin);
    let prom = Prometheus::start(ports.admin, usedonly);
    let gw = ports.gateway;
    let pets = "_pets_~7Bid~7D";
    let wanted = [
        // POST /pets without a key: every one refused with 403.
        ("TollgateForbiddenHigh", "_pets"),
        // The free plan (burst 5, 1/s) and the client throttle refuse most of these.
        ("TollgateThrottlingHigh", pets),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        for _ in 0..5 {
            assert_eq!(request(gw, "POST", "/pets", &[]).status, 403);
            request(gw, "GET", "/pets/1", &[("x-api-key", "dev-key-123")]);
        }
        let alerts = prom.alerts();
        let found = wanted.iter().all(|(name, route)| {
            alerts
                .iter()
                .any(|a| has(a, name, &[("stage", "demo"), ("route", route)]) && a.2 == "pending")
        });
        if found {
            break alerts;
        }
        assert!(
            Instant::now() < deadline,
            "usedonly {usedonly}: {wanted:?} not pending: {alerts:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // Nothing else: the store, the VM and the upstream are fine, the latency is low.
    let unexpected: Vec<_> = alerts
        .iter()
        .filter(|a| {
            !wanted
                .iter()
                .any(|(name, route)| has(a, name, &[("route", route)]))
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    // The recording rules have values for the traffic (their group is evaluated apart from
    // the alerts' group, so possibly a second later).
    for rule in [
        "stage_route:tollgate_requests:rate5m",
        "stage_route:tollgate_refused:rate5m",
    ] {
        let q = format!(r#"{rule}{{route="_pets"}}"#);
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            let got = prom.query(&q);
            if !got.is_empty() || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert_eq!(got.len(), 1, "{q}: {got:?}");
        assert_eq!(got[0].0["stage"], "demo", "{q}: {got:?}");
        assert!(got[0].1 > 0.0, "{q}: {got:?}");
    }
    drop(envoy);
}

/// Every query of the shipped Grafana dashboard (deploy/grafana/tollgate.json), with its
/// variables at "All", is valid PromQL to a real Prometheus, and the panels of traffic and
/// refusals show the example gateway's traffic.
#[test]
fn the_dashboards_queries_run_on_a_real_gateways_metrics() {
    for usedonly in [false, true] {
        dashboard_on_the_example(usedonly);
    }
}

fn dashboard_on_the_example(usedonly: bool) {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana/tollgate.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "{panel}");
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            // Grafana's substitutions for "All" (allValue `.*`) and the rate interval.
            let q = expr
                .replace("$stage", ".*")
                .replace("$route", ".*")
                .replace("$__rate_interval", "1m");
            assert!(!q.contains('$'), "an unknown variable in {expr}");
            let title = panel["title"].as_str().unwrap().to_string();
            queries.push((title, t["legendFormat"].as_str().unwrap().to_string(), q));
        }
    }
    assert!(queries.len() >= 20, "{}", queries.len());
    // Variables: Grafana's `label_values(SELECTOR, LABEL)`, asked as Prometheus's label API.
    let mut variables = Vec::new();
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("{q}"));
            let (selector, label) = inner.rsplit_once(", ").unwrap();
            variables.push((label.to_string(), selector.replace("$stage", ".*")));
        }
    }
    assert_eq!(variables.len(), 2, "{variables:?}");

    let (yaml, ports) = example_yaml("envoy.yaml");
    let _envoy = YamlEnvoy::start(tempdir::Dir::new("prom-grafana"), &yaml, 1, ports.admin);
    let prom = Prometheus::start(ports.admin, usedonly);
    // Panels that must show this traffic: requests, forbidden and throttled refusals.
    let must_show = [
        ("Requests/s by route", "{{method}} {{route}}"),
        ("Refusals/s by kind", "forbidden"),
        ("Refusals/s by kind", "throttled"),
        ("Refusals/s by route", "{{method}} {{route}}"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..5 {
            assert_eq!(request(ports.gateway, "POST", "/pets", &[]).status, 403);
            request(
                ports.gateway,
                "GET",
                "/pets/1",
                &[("x-api-key", "dev-key-123")],
            );
        }
        let mut missing = Vec::new();
        for (title, legend, q) in &queries {
            // (`query` asserts the query is valid.)
            let nonzero = prom.query(q).iter().any(|(_, v)| *v > 0.0);
            if must_show.contains(&(title.as_str(), legend.as_str())) && !nonzero {
                missing.push(title.clone());
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "usedonly {usedonly}: no data in {missing:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The template variables list this stage and its routes.
    for (label, selector) in &variables {
        let values = prom.get(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ));
        let values: Vec<&str> = values
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        match label.as_str() {
            "stage" => assert_eq!(values, ["demo"]),
            _ => assert!(
                values.contains(&"_pets") && values.contains(&"_pets_~7Bid~7D"),
                "{values:?}"
            ),
        }
    }
}

#[test]
fn the_shipped_rules_tell_a_gateway_whose_plugin_died() {
    // The example with a plugin whose VM dies on its second request: Envoy (FAIL_CLOSED)
    // answers 503 on the gateway listener from then on, and tollgate counts nothing.
    let dir = tempdir::Dir::new("prom-dead");
    let module = dir.path().join("crash.wasm");
    std::fs::write(&module, crashing_plugin()).unwrap();
    let (yaml, ports) = example_yaml("envoy.yaml");
    let yaml = yaml.replace(
        &format!("filename: {}", wasm_path().display()),
        &format!("filename: {}", module.display()),
    );
    assert!(yaml.contains("crash.wasm"));
    let envoy = YamlEnvoy::start(dir, &yaml, 1, ports.admin);
    let prom = Prometheus::start(ports.admin, false);
    let instance = format!("127.0.0.1:{}", ports.admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut statuses = Vec::new();
    loop {
        for _ in 0..5 {
            statuses.push(request(ports.gateway, "GET", "/pets/1", &[]).status);
        }
        let alerts = prom.alerts();
        let pending = alerts
            .iter()
            .any(|a| has(a, "TollgateNotCounting", &[("instance", &instance)]) && a.2 == "pending");
        if pending {
            assert!(
                alerts.iter().all(|a| a.0 == "TollgateNotCounting"),
                "{alerts:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "TollgateNotCounting not pending: {alerts:?}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    drop(envoy);
}
