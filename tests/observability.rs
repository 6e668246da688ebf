//! Access logs and metrics end to end (contract, "Access log and metrics"): tollgate's access
//! record, the filter state Envoy's own access logger prints, and the labelled metrics at the
//! admin endpoint's Prometheus output, all through the real Envoy.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

const GOOD_KEY: &str = "obs-key-VALUE-never-logged";

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn clf(ms: u64) -> String {
    let mut s = String::new();
    tollgate::access_log::write_clf_time(ms, &mut s);
    s
}

/// Options every test here uses: Envoy closes at once after a local reply (no 1 s delayed
/// close for the test client, which reads to EOF).
fn options(cfg: Value, upstream_port: u16) -> EnvoyOptions {
    let mut opts = EnvoyOptions::new(cfg, upstream_port);
    opts.hcm_extra = json!({"delayed_close_timeout": "0s"});
    opts
}

fn find<'a>(recs: &'a [Value], path: &str, status: u64) -> &'a Value {
    let found: Vec<&Value> = recs
        .iter()
        .filter(|r| r["path"] == path && r["status"] == status)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one record for {path} {status} in {recs:#?}"
    );
    found[0]
}

#[test]
fn one_access_record_per_request_with_real_values_and_the_same_fields_in_envoys_log() {
    let up = Upstream::with(|r| {
        if r.path.starts_with("/pets/slow") {
            std::thread::sleep(Duration::from_millis(60));
        }
        if r.path.starts_with("/fail") {
            return Reply::ok("upstream broke").status(503);
        }
        if r.path.starts_with("/chunked") {
            return Reply::ok("chunked body").header("transfer-encoding", "chunked");
        }
        if r.path.starts_with("/broken") {
            // A second, conflicting content-length: Envoy refuses the response and answers 502.
            return Reply::ok("x").header("content-length", "999");
        }
        Reply::ok("hello")
    });
    let cfg = json!({
        "stage": "prod",
        "api_key": {"keys": [{"id": "partner-a", "value": GOOD_KEY}]},
        "access_log": {"format": "json"},
        "routes": [
            {"match": "GET /pets/{id}"},
            {"match": "HEAD /pets/{id}"},
            {"match": "GET /chunked"},
            {"match": "POST /pets", "api_key_required": true},
            {"match": "GET /limited", "throttle": {"rate": 0.001, "burst": 1}}
        ]
    });
    let dir = tempdir::Dir::new("obs-records");
    let file_log = dir.path().join("access.log");
    let mut opts = options(cfg, up.port);
    opts.access_log_path = Some(file_log.clone());
    let envoy = Envoy::start(&opts);

    let before = now_ms();
    let t = Instant::now();
    let ok = envoy.get("/pets/slow?page=2", &[("user-agent", "obs-test/1.0")]);
    let ok_elapsed = u64::try_from(t.elapsed().as_millis()).unwrap();
    assert_eq!(ok.status, 200);
    let forbidden = envoy.send("POST", "/pets", &[]);
    assert_eq!(forbidden.status, 403);
    let keyed = envoy.send("POST", "/pets", &[("x-api-key", GOOD_KEY)]);
    assert_eq!(keyed.status, 200);
    assert_eq!(envoy.get("/limited", &[]).status, 200);
    let throttled = envoy.get("/limited", &[]);
    assert_eq!(throttled.status, 429);
    let upstream_5xx = envoy.get("/fail", &[]);
    assert_eq!(upstream_5xx.status, 503);
    let envoy_5xx = envoy.get("/broken", &[]);
    assert_eq!(envoy_5xx.status, 502);
    // responseLength without a body (HEAD, whose Content-Length tells the GET's) and without a
    // Content-Length (chunked).
    let head = envoy.send("HEAD", "/pets/1", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("5"));
    let chunked = envoy.get("/chunked", &[]);
    assert_eq!(chunked.text(), "chunked body");
    assert_eq!(chunked.header("content-length"), None);
    let after = now_ms();
    let sent = 9;

    let recs = wait_records(&envoy, sent);
    assert_eq!(recs.len(), sent, "one record per request: {recs:#?}");
    let mut ids: Vec<&str> = recs
        .iter()
        .map(|r| r["requestId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), sent, "request ids are distinct");

    // Fields every record has.
    for r in &recs {
        let epoch = r["requestTimeEpoch"].as_u64().unwrap();
        assert!(before <= epoch && epoch <= after, "{r}");
        assert_eq!(r["requestTime"], clf(epoch), "{r}");
        assert_eq!(r["protocol"], "HTTP/1.1");
        assert_eq!(r["identity.sourceIp"], "127.0.0.1");
        assert_eq!(r["stage"], "prod");
        assert_eq!(r["cacheStatus"], Value::Null);
        assert!(r["responseLatency"].as_u64().is_some(), "{r}");
    }

    // 200 through the upstream, which took 60 ms.
    let r = find(&recs, "/pets/slow", 200);
    assert_eq!(r["httpMethod"], "GET");
    assert_eq!(r["resourcePath"], "/pets/{id}");
    assert_eq!(r["responseLength"], 5, "{r}");
    assert_eq!(r["identity.userAgent"], "obs-test/1.0");
    assert_eq!(r["identity.apiKeyId"], Value::Null);
    assert_eq!(r["error.message"], Value::Null);
    assert_eq!(r["error.responseType"], Value::Null);
    let integration = r["integrationLatency"].as_u64().unwrap();
    let total = r["responseLatency"].as_u64().unwrap();
    assert!(integration >= 60, "{r}");
    assert!(
        total >= integration && total <= ok_elapsed + 1,
        "{r} ({ok_elapsed} ms)"
    );

    // 403: the filter answered; no integration.
    let r = find(&recs, "/pets", 403);
    assert_eq!(r["httpMethod"], "POST");
    assert_eq!(r["resourcePath"], "/pets");
    assert_eq!(r["responseLength"], forbidden.body.len());
    assert_eq!(r["integrationLatency"], Value::Null);
    assert_eq!(r["error.message"], "Forbidden");
    assert_eq!(r["error.responseType"], "INVALID_API_KEY");
    assert_eq!(r["identity.userAgent"], Value::Null);

    // 200 with a key: its id, never its value.
    let r = find(&recs, "/pets", 200);
    assert_eq!(r["identity.apiKeyId"], "partner-a");
    assert!(r["integrationLatency"].as_u64().is_some());

    // 429.
    let r = find(&recs, "/limited", 429);
    assert_eq!(r["resourcePath"], "/limited");
    assert_eq!(r["responseLength"], throttled.body.len());
    assert_eq!(r["error.message"], "Too Many Requests");
    assert_eq!(r["error.responseType"], "THROTTLED");
    assert_eq!(r["integrationLatency"], Value::Null);
    assert_eq!(
        find(&recs, "/limited", 200)["error.responseType"],
        Value::Null
    );

    // The upstream's own 503: not a gateway error (as in API Gateway), but an integration.
    let r = find(&recs, "/fail", 503);
    assert_eq!(r["resourcePath"], Value::Null);
    assert_eq!(r["responseLength"], "upstream broke".len());
    assert!(r["integrationLatency"].as_u64().is_some());
    assert_eq!(r["error.responseType"], Value::Null);
    // Envoy's 502 for a broken upstream response: INTEGRATION_FAILURE.
    let r = find(&recs, "/broken", 502);
    assert_eq!(r["error.responseType"], "INTEGRATION_FAILURE");
    assert_eq!(r["error.message"], "Internal server error");
    assert_eq!(r["responseLength"], envoy_5xx.body.len());
    let r = recs.iter().find(|r| r["httpMethod"] == "HEAD").unwrap();
    assert_eq!(r["responseLength"], 0, "{r}");
    let r = find(&recs, "/chunked", 200);
    assert_eq!(r["responseLength"], "chunked body".len(), "{r}");

    // Envoy's own file access log carries the same fields from tollgate's filter state.
    let lines = wait_file_log(&file_log, sent);
    assert_eq!(lines.len(), sent, "{lines:#?}");
    for rec in &recs {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == rec["requestId"])
            .unwrap_or_else(|| panic!("no Envoy log line for {rec}"));
        assert_eq!(line["status"], rec["status"], "{line}");
        // The length tollgate read from the headers is what Envoy counted as sent.
        assert_eq!(line["bytes_sent"], rec["responseLength"], "{line} {rec}");
        assert_eq!(line["path"], rec["path"], "{line}");
        assert_eq!(line["stage"], rec["stage"], "{line}");
        assert_eq!(line["resourcePath"], rec["resourcePath"], "{line}");
        assert_eq!(line["celResourcePath"], rec["resourcePath"], "{line}");
        assert_eq!(line["apiKeyId"], rec["identity.apiKeyId"], "{line}");
        assert_eq!(line["errorMessage"], rec["error.message"], "{line}");
        assert_eq!(line["errorType"], rec["error.responseType"], "{line}");
        assert_eq!(line["cacheStatus"], rec["cacheStatus"], "{line}");
        // Exported when the response headers arrive, from the same clock readings as the record.
        let integration = match &rec["integrationLatency"] {
            Value::Number(n) => Value::String(n.to_string()),
            other => other.clone(),
        };
        assert_eq!(line["integrationLatency"], integration, "{line}");
    }
    envoy.assert_no_wasm_failure();
}

#[test]
fn filter_state_exports_only_what_the_configuration_lists() {
    let up = Upstream::start();
    for (filter_state, exported) in [
        (json!(false), &[][..]),
        (
            json!(["resourcePath", "error.responseType"]),
            &["resourcePath", "errorType"][..],
        ),
    ] {
        let cfg = json!({
            "stage": "prod",
            "api_key": {"keys": [{"id": "partner-a", "value": GOOD_KEY}]},
            "access_log": {"format": "json"},
            "filter_state": filter_state,
            "routes": [
                {"match": "GET /pets/{id}"},
                {"match": "POST /pets", "api_key_required": true}
            ]
        });
        let dir = tempdir::Dir::new("obs-filter-state");
        let file_log = dir.path().join("access.log");
        let mut opts = options(cfg, up.port);
        opts.access_log_path = Some(file_log.clone());
        let envoy = Envoy::start(&opts);
        assert_eq!(envoy.get("/pets/1", &[]).status, 200);
        assert_eq!(envoy.send("POST", "/pets", &[]).status, 403);
        assert_eq!(
            envoy
                .send("POST", "/pets", &[("x-api-key", GOOD_KEY)])
                .status,
            200
        );
        let lines = wait_file_log(&file_log, 3);
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let ok = &lines[0];
        let denied = &lines[1];
        let keyed = &lines[2];
        let expected = |field: &str, value: Value| {
            if exported.contains(&field) {
                value
            } else {
                Value::Null
            }
        };
        assert_eq!(ok["stage"], expected("stage", json!("prod")), "{ok}");
        assert_eq!(
            ok["resourcePath"],
            expected("resourcePath", json!("/pets/{id}"))
        );
        assert_eq!(
            denied["resourcePath"],
            expected("resourcePath", json!("/pets"))
        );
        assert_eq!(
            denied["errorType"],
            expected("errorType", json!("INVALID_API_KEY"))
        );
        assert_eq!(denied["errorMessage"], Value::Null, "{denied}");
        assert_eq!(keyed["apiKeyId"], Value::Null, "{keyed}");
        assert_eq!(ok["integrationLatency"], Value::Null, "{ok}");
        // tollgate's own record is complete whatever Envoy's loggers get.
        let recs = wait_records(&envoy, 3);
        let r = find(&recs, "/pets", 403);
        assert_eq!(r["stage"], "prod");
        assert_eq!(r["error.responseType"], "INVALID_API_KEY");
        assert_eq!(find(&recs, "/pets", 200)["identity.apiKeyId"], "partner-a");
        assert!(find(&recs, "/pets/1", 200)["integrationLatency"].is_u64());
        envoy.assert_no_wasm_failure();
    }
}

#[test]
fn secrets_never_reach_a_log() {
    let up = Upstream::start();
    let cfg = json!({
        "api_key": {"keys": [{"id": "k1", "value": GOOD_KEY}]},
        "access_log": {"format": "json"},
        "routes": [{"match": "ANY /private/{proxy+}", "api_key_required": true}]
    });
    let dir = tempdir::Dir::new("obs-secrets");
    let file_log = dir.path().join("access.log");
    let mut opts = options(cfg, up.port);
    opts.access_log_path = Some(file_log.clone());
    let envoy = Envoy::start(&opts);
    let secrets = [
        GOOD_KEY,
        "WRONG-KEY-SECRET",
        "BEARER-TOKEN-SECRET",
        "COOKIE-SESSION-SECRET",
        "QUERY-TOKEN-SECRET",
    ];
    let statuses: Vec<u16> = [
        vec![
            ("x-api-key", GOOD_KEY),
            ("cookie", "session=COOKIE-SESSION-SECRET"),
        ],
        vec![("x-api-key", "WRONG-KEY-SECRET")],
        vec![("authorization", "Bearer BEARER-TOKEN-SECRET")],
    ]
    .iter()
    .map(|h| {
        envoy
            .send("GET", "/private/a?token=QUERY-TOKEN-SECRET&x=1", h)
            .status
    })
    .collect();
    assert_eq!(statuses, [200, 403, 403]);
    let recs = wait_records(&envoy, 3);
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r["path"] == "/private/a"), "{recs:#?}");
    assert_eq!(
        recs.iter()
            .filter(|r| r["identity.apiKeyId"] == "k1")
            .count(),
        1
    );
    let file = wait_file_log(&file_log, 3);
    assert_eq!(file.len(), 3);
    // Give Envoy a moment to flush everything, then search every byte it wrote.
    std::thread::sleep(Duration::from_millis(200));
    let everything = format!(
        "{}\n{}",
        envoy.log(),
        std::fs::read_to_string(&file_log).unwrap()
    );
    for s in secrets {
        assert!(!everything.contains(s), "{s} reached a log:\n{everything}");
    }
    // The upstream did get them: the test would prove nothing otherwise.
    let seen = up.requests();
    assert_eq!(
        seen[0].header("cookie").as_deref(),
        Some("session=COOKIE-SESSION-SECRET")
    );
    assert!(seen[0].path.contains("QUERY-TOKEN-SECRET"));
}

type Series = (String, String, String, String);

/// tollgate's Prometheus samples: (metric, stage, route, method) -> value; histogram buckets
/// are left out (their `_count` and `_sum` are in).
fn prometheus(envoy: &Envoy) -> HashMap<Series, f64> {
    let mut out = HashMap::new();
    for line in envoy.admin("/stats/prometheus").lines() {
        if !line.starts_with("tollgate_") || line.contains("le=\"") {
            continue;
        }
        let (name, rest) = line.split_once('{').unwrap();
        let (labels, value) = rest.split_once("} ").unwrap();
        let mut l: HashMap<&str, &str> = HashMap::new();
        for pair in labels.split(',') {
            let (k, v) = pair.split_once('=').unwrap();
            l.insert(k, v.trim_matches('"'));
        }
        // Counters kept per stage have no route or method.
        let label = |k: &str| l.get(k).copied().unwrap_or_default().to_string();
        let key = (
            name.to_string(),
            label("stage"),
            label("route"),
            label("method"),
        );
        out.insert(key, value.trim().parse().unwrap());
    }
    out
}

fn key(metric: &str, route: &str, method: &str) -> Series {
    (
        format!("tollgate_{metric}"),
        "prod".to_string(),
        route.to_string(),
        method.to_string(),
    )
}

#[test]
fn prometheus_shows_labelled_series_whose_counts_match_the_traffic() {
    let up = Upstream::with(|r| {
        if r.path.starts_with("/nothing") {
            Reply::ok("no").status(500)
        } else {
            Reply::ok("ok")
        }
    });
    let cfg = json!({
        "stage": "prod",
        "api_key": {"keys": [{"id": "k1", "value": GOOD_KEY, "usage_plan": "tiny"}]},
        "usage_plans": {"tiny": {"quota": {"limit": 1, "period": "DAY"}}},
        "access_log": {"format": "json"},
        "routes": [
            {"match": "GET /pets/{id}"},
            {"match": "POST /pets", "api_key_required": true},
            {"match": "ANY /admin/{proxy+}", "api_key_required": true},
            {"match": "GET /limited", "throttle": {"rate": 0.001, "burst": 1}}
        ]
    });
    let mut opts = options(cfg, up.port);
    opts.stats_tags = true;
    let envoy = Envoy::start(&opts);
    // The host drops info lines: no access record is built, but every request is counted.
    let r = request(envoy.admin_port, "POST", "/logging?wasm=warning", &[]);
    assert_eq!(r.status, 200, "{}", r.text());

    let mut statuses = Vec::new();
    let mut send = |m: &str, p: &str, h: &[(&str, &str)]| statuses.push(envoy.send(m, p, h).status);
    for _ in 0..3 {
        send("GET", "/pets/1", &[]);
    }
    send("POST", "/pets", &[]);
    send("POST", "/pets", &[]);
    send("POST", "/pets", &[("x-api-key", GOOD_KEY)]);
    send("POST", "/pets", &[("x-api-key", GOOD_KEY)]);
    send("DELETE", "/admin/x/y", &[]);
    send("GET", "/limited", &[]);
    send("GET", "/limited", &[]);
    send("GET", "/nothing", &[]);
    send("PROPFIND", "/nothing", &[]);
    send("HEAD", "/pets/1", &[]);
    assert_eq!(
        statuses,
        [200, 200, 200, 403, 403, 200, 429, 403, 200, 429, 500, 500, 200]
    );

    let pets = "_pets_~7Bid~7D";
    let expected: Vec<(Series, f64)> = vec![
        (key("requests", pets, "GET"), 3.0),
        (key("4xx", pets, "GET"), 0.0),
        // HEAD reaches the GET route and has a series of its own there.
        (key("requests", pets, "HEAD"), 1.0),
        (key("requests", "_pets", "POST"), 4.0),
        (key("4xx", "_pets", "POST"), 3.0),
        (key("forbidden", "_pets", "POST"), 2.0),
        (key("quota_exceeded", "_pets", "POST"), 1.0),
        (key("throttled", "_pets", "POST"), 0.0),
        (key("requests", "_admin_~7Bproxy~2B~7D", "DELETE"), 1.0),
        (key("forbidden", "_admin_~7Bproxy~2B~7D", "DELETE"), 1.0),
        (key("requests", "_limited", "GET"), 2.0),
        (key("4xx", "_limited", "GET"), 1.0),
        (key("throttled", "_limited", "GET"), 1.0),
        (key("requests", "-", "GET"), 1.0),
        (key("5xx", "-", "GET"), 1.0),
        (key("requests", "-", "OTHER"), 1.0),
        (key("5xx", "-", "OTHER"), 1.0),
        (key("cache_hit", pets, "GET"), 0.0),
        (key("cache_miss", pets, "GET"), 0.0),
        // Histograms (ms): every request has a latency; only forwarded ones an integration.
        (key("latency_count", pets, "GET"), 3.0),
        (key("integration_latency_count", pets, "GET"), 3.0),
        (key("latency_count", "_pets", "POST"), 4.0),
        (key("integration_latency_count", "_pets", "POST"), 1.0),
        (key("integration_latency_count", "_limited", "GET"), 1.0),
        // The 429 above is a client over its limit, not a limit that could not be checked.
        (key("store_failures", "", ""), 0.0),
    ];
    // Histograms reach the admin endpoint at the next stats flush (250 ms here).
    let deadline = Instant::now() + Duration::from_secs(10);
    let samples = loop {
        let s = prometheus(&envoy);
        let all = expected.iter().all(|(k, v)| s.get(k) == Some(v));
        if all || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for (k, v) in &expected {
        assert_eq!(samples.get(k), Some(v), "{k:?}");
    }
    // Nothing else was counted anywhere.
    let total: f64 = samples
        .iter()
        .filter(|(k, _)| k.0 == "tollgate_requests")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 13.0);
    assert!(samples.keys().all(|k| k.1 == "prod"));
    assert!(
        !samples.contains_key(&key("requests", "_pets", "GET")),
        "an explicit-method route has no series for other methods"
    );
    // A route and method's series appear with its first request: the ANY route's TRACE and the
    // POST route's OPTIONS were never requested (before 2026-12-07 every series of the
    // configuration was defined at each load, at 0).
    for (route, method) in [("_admin_~7Bproxy~2B~7D", "TRACE"), ("_pets", "OPTIONS")] {
        for metric in ["requests", "4xx", "latency_count"] {
            assert!(
                !samples.contains_key(&key(metric, route, method)),
                "{metric} {route} {method}"
            );
        }
    }
    assert!(samples.contains_key(&key("store_failures", "", "")));
    assert!(records(&envoy).is_empty(), "info lines were off");

    // Back at info, the next request writes its record.
    let r = request(envoy.admin_port, "POST", "/logging?wasm=info", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(envoy.get("/pets/2", &[]).status, 200);
    let recs = wait_records(&envoy, 1);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["path"], "/pets/2");
    envoy.assert_no_wasm_failure();
}

#[test]
fn example_gateway_logs_filter_state_and_labels_its_metrics() {
    let yaml = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    // The example carries exactly the crate's stats tags.
    for (tag, regex) in tollgate::metrics::STATS_TAGS {
        assert!(
            yaml.contains(&format!("{{tag_name: {tag}, regex: '{regex}'}}")),
            "envoy/envoy.yaml lacks the {tag} tag"
        );
    }
    let dir = tempdir::Dir::new("obs-example");
    let file_log = dir.path().join("access.log");
    assert!(yaml.contains("path: /dev/stdout"));
    let (yaml, ports) = example_yaml("envoy.yaml");
    let (gw, admin) = (ports.gateway, ports.admin);
    let yaml = yaml.replace(
        "path: /dev/stdout",
        &format!("path: {}", file_log.display()),
    );
    let _envoy = YamlEnvoy::start(dir, &yaml, 1, admin);

    assert_eq!(request(gw, "GET", "/pets/1?x=1", &[]).status, 200);
    assert_eq!(request(gw, "POST", "/pets", &[]).status, 403);
    let lines = wait_file_log(&file_log, 2);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let ok = &lines[0];
    assert_eq!(ok["path"], "/pets/1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["stage"], "demo");
    assert_eq!(ok["resourcePath"], "/pets/{id}");
    assert_eq!(ok["error.responseType"], Value::Null);
    assert!(ok["integrationLatency"].is_string(), "{ok}");
    let denied = &lines[1];
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["resourcePath"], "/pets");
    assert_eq!(denied["error.responseType"], "INVALID_API_KEY");
    assert_eq!(denied["error.message"], "Forbidden");
    assert_eq!(denied["identity.sourceIp"], "127.0.0.1");

    let prom = String::from_utf8(request(admin, "GET", "/stats/prometheus", &[]).body).unwrap();
    for sample in [
        r#"tollgate_requests{stage="demo",route="_pets_~7Bid~7D",method="GET"} 1"#,
        r#"tollgate_requests{stage="demo",route="_pets",method="POST"} 1"#,
        r#"tollgate_forbidden{stage="demo",route="_pets",method="POST"} 1"#,
    ] {
        assert!(prom.lines().any(|l| l == sample), "{sample} missing");
    }
}

#[test]
fn an_upstream_timeout_is_an_integration_timeout() {
    // The upstream answers after 1.5 s; each Envoy below gives up sooner, in one of the ways a
    // platform team sets a deadline, and answers 504 itself.
    let up = Upstream::with(|_| {
        std::thread::sleep(Duration::from_millis(1500));
        Reply::ok("too late")
    });
    let route = |extra: Value| {
        let mut r = json!({"cluster": "upstream"});
        for (k, v) in extra.as_object().into_iter().flatten() {
            r[k] = v.clone();
        }
        json!({"virtual_hosts": [{
            "name": "all",
            "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": r}]
        }]})
    };
    let cases = [
        // The route's timeout: Envoy says `response_timeout`.
        (
            "route timeout",
            route(json!({"timeout": "0.2s"})),
            json!({}),
        ),
        // The connection manager's stream idle timeout with the route timeout off:
        // `stream_idle_timeout`.
        (
            "stream idle timeout",
            route(json!({"timeout": "0s"})),
            json!({"stream_idle_timeout": "0.3s"}),
        ),
        // The route's own idle timeout: also `stream_idle_timeout`.
        (
            "route idle timeout",
            route(json!({"timeout": "0s", "idle_timeout": "0.3s"})),
            json!({}),
        ),
        // The route's max stream duration: `max_duration_timeout`.
        (
            "max stream duration",
            route(json!({"timeout": "0s", "max_stream_duration": {"max_stream_duration": "0.3s"}})),
            json!({}),
        ),
    ];
    for (what, route_config, hcm) in cases {
        let cfg = json!({"stage": "prod", "access_log": {"format": "json"}});
        let mut opts = options(cfg, up.port);
        opts.hcm_extra["route_config"] = route_config;
        for (k, v) in hcm.as_object().into_iter().flatten() {
            opts.hcm_extra[k] = v.clone();
        }
        let dir = tempdir::Dir::new("obs-timeout");
        let file_log = dir.path().join("access.log");
        opts.access_log_path = Some(file_log.clone());
        let envoy = Envoy::start(&opts);
        let r = envoy.get("/slow", &[]);
        assert_eq!(r.status, 504, "{what}: {}", r.text());
        let recs = wait_records(&envoy, 1);
        let rec = find(&recs, "/slow", 504);
        assert_eq!(
            rec["error.responseType"], "INTEGRATION_TIMEOUT",
            "{what}: {rec}"
        );
        assert_eq!(
            rec["error.message"], "Endpoint request timed out",
            "{what}: {rec}"
        );
        // The same values reach Envoy's own access log through filter state.
        let lines = wait_file_log(&file_log, 1);
        assert_eq!(
            lines[0]["errorType"], "INTEGRATION_TIMEOUT",
            "{what}: {:?}",
            lines[0]
        );
        envoy.assert_no_wasm_failure();
    }
}

#[test]
fn a_reply_envoy_rewrites_is_logged_and_counted_as_the_client_got_it() {
    // Envoy's local_reply_config maps tollgate's 429 to a 503: the record and the metrics say
    // what the client got, not what tollgate sent.
    let up = Upstream::start();
    let mut opts = options(
        json!({
            "throttle": {"rate": 1, "burst": 1},
            "access_log": {"format": "json"}
        }),
        up.port,
    );
    opts.hcm_extra = json!({
        "delayed_close_timeout": "0s",
        "local_reply_config": {"mappers": [{
            "filter": {"status_code_filter": {"comparison": {
                "op": "EQ", "value": {"default_value": 429, "runtime_key": "tollgate_test.unused"}
            }}},
            "status_code": 503
        }]}
    });
    let envoy = Envoy::start(&opts);
    assert_eq!(envoy.get("/pets", &[]).status, 200);
    let r = envoy.get("/pets", &[]);
    assert_eq!(r.status, 503, "Envoy's mapper rewrote the 429");
    let recs = wait_records(&envoy, 2);
    let refused = recs.get(1).unwrap();
    assert_eq!(refused["status"], 503, "{refused}");
    assert_eq!(refused["error.responseType"], "THROTTLED", "{refused}");
    let stats = envoy.stats();
    let sum = |metric: &str| -> i64 {
        stats
            .iter()
            .filter(|(n, _)| {
                n.starts_with("wasmcustom.") && n.rsplit(['.', ';']).next() == Some(metric)
            })
            .map(|(_, v)| *v)
            .sum()
    };
    assert_eq!(sum("5xx"), 1);
    assert_eq!(sum("4xx"), 0);
    assert_eq!(sum("throttled"), 1);
    envoy.assert_no_wasm_failure();
}

/// A request refused in report-only mode and then failed by the integration: its record tells
/// the failure the client got (a 503), not the refusal it never saw.
#[test]
fn a_report_only_refusal_does_not_hide_an_integration_failure() {
    // Nothing listens on the upstream's port: Envoy answers 503 itself.
    let cfg = json!({"stage": "prod", "enforce": false, "access_log": {"format": "json"},
                     "throttle": {"rate": 0.001, "burst": 1}});
    let envoy = Envoy::start(&options(cfg, free_port()));
    for _ in 0..2 {
        assert_eq!(envoy.get("/dead", &[]).status, 503);
    }
    let recs = wait_records(&envoy, 2);
    assert_eq!(recs.len(), 2, "{recs:#?}");
    for r in &recs {
        assert_eq!(r["status"], 503, "{r}");
        assert_eq!(r["error.responseType"], "INTEGRATION_FAILURE", "{r}");
    }
    // The second request's report-only refusal, which its record cannot tell, is logged on
    // its own line.
    let log = envoy.wait_log("the report-only line", |l| l.contains("report-only: would"));
    assert_eq!(
        log.matches("report-only: would answer 429 THROTTLED on route (stage)")
            .count(),
        1,
        "{log}"
    );
    envoy.assert_no_wasm_failure();
}

/// A gRPC request whose upstream cannot be reached: Envoy answers `:status` 200 with
/// `grpc-status: 14`, and the record still tells the integration's failure (and a gRPC error
/// the upstream itself sends does not).
#[test]
fn a_grpc_integration_failure_is_told_behind_its_200() {
    let cfg = json!({"stage": "prod", "access_log": {"format": "json"}});
    let envoy = Envoy::start(&options(cfg, free_port()));
    let head = grpc_call(envoy.port, "/svc.Pets/Get", &[]);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("grpc-status: 14\r\n"), "{head}");
    let recs = wait_records(&envoy, 1);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(recs[0]["status"], 200, "{}", recs[0]);
    assert_eq!(
        recs[0]["error.responseType"], "INTEGRATION_FAILURE",
        "{}",
        recs[0]
    );
    envoy.assert_no_wasm_failure();
    // The upstream's own trailers-only NOT_FOUND is its answer, not an integration failure.
    let up = Upstream::with(|_| {
        Reply::ok("")
            .header("content-type", "application/grpc")
            .header("grpc-status", "5")
    });
    let cfg = json!({"stage": "prod", "access_log": {"format": "json"}});
    let envoy = Envoy::start(&options(cfg, up.port));
    let head = grpc_call(envoy.port, "/svc.Pets/Get", &[]);
    assert!(head.contains("grpc-status: 5\r\n"), "{head}");
    let recs = wait_records(&envoy, 1);
    assert_eq!(recs[0]["error.responseType"], Value::Null, "{}", recs[0]);
    assert_eq!(up.count(), 1);
    envoy.assert_no_wasm_failure();
}

/// A request Envoy answers before tollgate sees its headers (a 431 for headers over the limit):
/// its record still has its start and latency, from Envoy's own request time.
#[test]
fn a_request_envoy_answers_first_has_a_start_and_a_latency() {
    let up = Upstream::start();
    let cfg = json!({"stage": "prod", "access_log": {"format": "json"}});
    let envoy = Envoy::start(&options(cfg, up.port));
    let before = now_ms();
    let big = "x".repeat(70 * 1024);
    let r = try_request(envoy.port, "GET", "/big", &[("x-big", &big)], b"").unwrap();
    assert_eq!(r.status, 431);
    let recs = wait_records(&envoy, 1);
    let rec = recs.iter().find(|r| r["status"] == 431).expect("a record");
    let epoch = rec["requestTimeEpoch"].as_u64().expect("requestTimeEpoch");
    assert!(epoch + 1_000 >= before && epoch <= now_ms(), "{rec}");
    assert!(rec["responseLatency"].as_u64().is_some(), "{rec}");
    assert_eq!(up.count(), 0);
    envoy.assert_no_wasm_failure();
}

/// The record of each plugin line that carries one (the text after Envoy's `wasm log <names>: `
/// prefix), told apart as OBSERVABILITY.md tells log shippers: tollgate's other lines start
/// with `tollgate: `.
fn record_texts(envoy: &Envoy) -> Vec<String> {
    envoy
        .plugin_lines()
        .iter()
        .filter_map(|l| {
            let after = &l[l.find("wasm log ")? + "wasm log ".len()..];
            Some(after[after.find(": ")? + 2..].to_string())
        })
        .filter(|text| !text.starts_with("tollgate: "))
        .collect()
}

#[test]
fn every_format_parses_with_a_standard_reader_whatever_the_client_sends() {
    // What clients may put in the two headers a record shows (Envoy passes these bytes on).
    let agents: [&[u8]; 5] = [
        br#"x","ua2":"forged"#,
        br#"a,b\",\x0Aliteral\"#,
        b"<x>&amp;'\" ]]>",
        "caf\u{e9} \u{2028}\u{85}".as_bytes(),
        b"plain",
    ];
    let ids: [&[u8]; 5] = [
        br#"a b"c\d,e<f>"#,
        "abc\u{a0}200\u{2003}9\u{3000}9\u{202e}XYZ".as_bytes(),
        b"id-3",
        b"-",
        b"x\ty",
    ];
    let parse = r#"
import csv, json, re, sys, xml.etree.ElementTree as ET
fmt = sys.argv[1]
out = []
for line in sys.stdin.read().split("\n")[:-1]:
    if fmt == "csv":
        rows = list(csv.reader([line], strict=True))
        assert len(rows) == 1, line
        out.append(rows[0])
    elif fmt == "xml":
        out.append({e.tag: e.text or "" for e in ET.fromstring(line)})
    elif fmt == "clf":
        m = re.fullmatch(r'(\S+) (\S+) (\S+) \[([^\]]+)\] "([^"]*)" (\S+) (\S+) (\S+)', line)
        assert m, line
        out.append(list(m.groups()))
    else:
        out.append(json.loads(line))
print(json.dumps(out))
"#;
    let template =
        r#"{"ua":"$context.identity.userAgent","id":"$context.requestId","s":"$context.status"}"#;
    let up = Upstream::start();
    for format in ["csv", "xml", "clf", template] {
        let cfg = json!({"access_log": {"format": format}});
        let envoy = Envoy::start(&options(cfg, up.port));
        for (ua, id) in agents.iter().zip(ids) {
            let mut raw = b"GET /p HTTP/1.1\r\nhost: x\r\nuser-agent: ".to_vec();
            raw.extend_from_slice(ua);
            raw.extend_from_slice(b"\r\nx-request-id: ");
            raw.extend_from_slice(id);
            raw.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
            assert_eq!(raw_request(envoy.port, &raw).unwrap().status, 200);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let lines = record_texts(&envoy);
            if lines.len() >= agents.len() || Instant::now() > deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(
            lines.len(),
            agents.len(),
            "{format}: one line per request: {lines:#?}"
        );
        let output = run_with_input(
            std::process::Command::new("python3").args([
                "-c",
                parse,
                if format == template { "json" } else { format },
            ]),
            format!("{}\n", lines.join("\n")).as_bytes(),
        );
        assert!(
            output.status.success(),
            "{format} did not parse: {lines:#?}"
        );
        let parsed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        for (i, rec) in parsed.iter().enumerate() {
            let ua = String::from_utf8_lossy(agents[i]);
            let id = String::from_utf8_lossy(ids[i]);
            match format {
                "csv" => {
                    let fields = rec.as_array().unwrap();
                    assert_eq!(fields.len(), 18, "{rec}");
                    // Column 13 is the user agent; `\` and control characters read as `\xHH`.
                    let unescaped = fields[12].as_str().unwrap().replace("\\x5C", "\\");
                    if !ua.contains(['\u{2028}', '\u{85}']) {
                        assert_eq!(unescaped, *ua, "{rec}");
                    }
                    assert_eq!(fields[7], "200", "{rec}");
                }
                "xml" => {
                    assert_eq!(rec["status"], "200", "{rec}");
                    if !ua.contains('\u{2028}') {
                        assert_eq!(rec["identity.userAgent"], *ua, "{rec}");
                    }
                    assert_eq!(rec.as_object().unwrap().len(), 18, "{rec}");
                }
                "clf" => {
                    let f = rec.as_array().unwrap();
                    assert_eq!(f[5], "200", "{rec}");
                    assert!(
                        !f[7].as_str().unwrap().chars().any(char::is_whitespace),
                        "{rec}"
                    );
                }
                _ => {
                    let o = rec.as_object().unwrap();
                    assert_eq!(o.len(), 3, "{rec}");
                    assert_eq!(rec["ua"], *ua, "{rec}");
                    assert_eq!(rec["id"], *id, "{rec}");
                    assert_eq!(rec["s"], "200", "{rec}");
                }
            }
        }
        envoy.assert_no_wasm_failure();
    }
}
