//! tollgate behind Envoy's HTTP/3 (QUIC) listener: throttling, CORS, the access record and the
//! metrics over real HTTP/3 traffic (tests/h3/h3client.py, on aioquic).
//!
//! HTTP/3 is where Envoy 1.40 logs differently: a stream's access loggers run once the client
//! has acknowledged the response's last byte, and a Proxy-Wasm filter's `on_log` is not among
//! them (docs/OBSERVABILITY.md, "HTTP/3"): tollgate records the request when Envoy deletes its
//! context instead. So the record must still be whole then: status, length, latencies, the
//! client address and the protocol.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const ORIGIN: &str = "https://app.example.com";

/// A self-signed certificate for `localhost` (the client does not verify it).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The harness's bootstrap with its listener turned into an HTTP/3 one (UDP, QUIC, TLS).
fn http3_bootstrap(opts: &EnvoyOptions, cert: &Path, key: &Path) -> Value {
    let mut boot = bootstrap(opts);
    let listener = &mut boot["static_resources"]["listeners"][0];
    listener["address"]["socket_address"]["protocol"] = json!("UDP");
    listener["udp_listener_config"] = json!({"quic_options": {}});
    let chain = &mut listener["filter_chains"][0];
    chain["transport_socket"] = json!({
        "name": "envoy.transport_sockets.quic",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport",
            "downstream_tls_context": {"common_tls_context": {
                "alpn_protocols": ["h3"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": cert.display().to_string()},
                    "private_key": {"filename": key.display().to_string()}
                }]
            }}
        }
    });
    let hcm = &mut chain["filters"][0]["typed_config"];
    hcm["codec_type"] = json!("HTTP3");
    hcm["http3_protocol_options"] = json!({});
    boot
}

struct H3Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl H3Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request: method, path, headers.
type H3Request<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// Sends `requests` one after another on one HTTP/3 connection.
fn h3(port: u16, requests: &[H3Request]) -> Vec<H3Response> {
    let python = repo_root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing; run `make e2e` (it installs aioquic there)",
        python.display()
    );
    let input: Vec<Value> = requests
        .iter()
        .map(|(m, p, h)| json!({"method": m, "path": p, "headers": h}))
        .collect();
    let out = run_with_input(
        Command::new(python)
            .arg(repo_root().join("tests/h3/h3client.py"))
            .arg(port.to_string()),
        Value::Array(input).to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "h3client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    answers
        .iter()
        .map(|a| H3Response {
            status: u16::try_from(a["status"].as_u64().unwrap()).unwrap(),
            headers: a["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        h[1].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
            body: a["body"].as_str().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn throttle_cors_record_and_metrics_hold_over_http3() {
    let up = Upstream::with(|r| {
        if r.path.starts_with("/chunked") {
            return Reply::ok("chunked body").header("transfer-encoding", "chunked");
        }
        Reply::ok("hello")
    });
    let cfg = json!({
        "stage": "prod",
        "access_log": {"format": "json"},
        "cors": {"allow_origins": [ORIGIN], "allow_methods": ["GET"]},
        "routes": [
            {"match": "GET /pets/{id}"},
            {"match": "GET /chunked"},
            {"match": "GET /limited", "throttle": {"rate": 0.001, "burst": 2}}
        ]
    });
    let dir = tempdir::Dir::new("http3");
    let (cert, key) = certificate(dir.path());
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.stats_tags = true;
    // The examples' fail-closed guard: HTTP/3 requests tollgate lets through pass it.
    opts.extra_filters.push(guard_filter());
    let file_log = dir.path().join("access.log");
    opts.access_log_path = Some(file_log.clone());
    let envoy = Envoy::try_start_bootstrap(&http3_bootstrap(&opts, &cert, &key), 2)
        .unwrap_or_else(|f| panic!("Envoy did not start (exit {:?}):\n{}", f.exit, f.log));

    let origin: &[(&str, &str)] = &[("origin", ORIGIN), ("user-agent", "h3-test/1.0")];
    let none: &[(&str, &str)] = &[];
    let answers = h3(
        envoy.port,
        &[
            ("GET", "/pets/1", origin),
            ("GET", "/limited", none),
            ("GET", "/limited", none),
            ("GET", "/limited", none),
            ("GET", "/chunked", none),
            (
                "OPTIONS",
                "/pets/1",
                &[("origin", ORIGIN), ("access-control-request-method", "GET")],
            ),
        ],
    );
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429, 200, 204], "{statuses:?}");

    // CORS on an actual request and on a preflight.
    let get = &answers[0];
    assert_eq!(get.body, "hello");
    assert_eq!(get.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(get.header("vary"), Some("Origin"));
    let preflight = &answers[5];
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some(ORIGIN)
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("GET")),
        "{:?}",
        preflight.headers
    );

    // The throttle: two in the burst, then 429 with its headers, over one connection.
    for a in &answers[1..4] {
        assert!(a.header("ratelimit-policy").is_some(), "{:?}", a.headers);
    }
    assert!(
        answers[2]
            .header("ratelimit")
            .is_some_and(|v| v.contains(";r=0;")),
        "{:?}",
        answers[2].headers
    );
    let throttled = &answers[3];
    assert!(
        throttled.header("retry-after").is_some(),
        "{:?}",
        throttled.headers
    );
    assert!(
        throttled.body.contains("Too Many Requests"),
        "{}",
        throttled.body
    );
    assert_eq!(answers[4].body, "chunked body");

    // One record per request, written after the client acknowledged the response, and whole.
    let recs = wait_records(&envoy, answers.len());
    assert_eq!(recs.len(), answers.len(), "{recs:#?}");
    for r in &recs {
        assert_eq!(r["protocol"], "HTTP/3", "{r}");
        assert_eq!(r["identity.sourceIp"], "127.0.0.1", "{r}");
        assert_eq!(r["stage"], "prod", "{r}");
        assert!(r["responseLatency"].as_u64().is_some(), "{r}");
    }
    let find = |path: &str, status: u64| -> &Value {
        let found: Vec<&Value> = recs
            .iter()
            .filter(|r| r["path"] == path && r["status"] == status)
            .collect();
        assert_eq!(found.len(), 1, "one record for {path} {status}: {recs:#?}");
        found[0]
    };
    let r = find("/pets/1", 200);
    assert_eq!(r["httpMethod"], "GET");
    assert_eq!(r["resourcePath"], "/pets/{id}");
    assert_eq!(r["responseLength"], 5, "{r}");
    assert_eq!(r["identity.userAgent"], "h3-test/1.0");
    let integration = r["integrationLatency"].as_u64().unwrap();
    assert!(r["responseLatency"].as_u64().unwrap() >= integration, "{r}");
    let r = find("/limited", 429);
    assert_eq!(r["error.responseType"], "THROTTLED");
    assert_eq!(r["responseLength"], throttled.body.len(), "{r}");
    assert_eq!(r["integrationLatency"], Value::Null);
    // A chunked upstream answer: the length is Envoy's count of the body sent.
    let r = find("/chunked", 200);
    assert_eq!(r["responseLength"], "chunked body".len(), "{r}");
    let r = find("/pets/1", 204);
    assert_eq!(r["httpMethod"], "OPTIONS");

    // Envoy's own access log (deferred the same way) sees the filter state tollgate exported.
    let lines = wait_file_log(&file_log, answers.len());
    for rec in &recs {
        let line = lines
            .iter()
            .find(|l| l["request_id"] == rec["requestId"])
            .unwrap_or_else(|| panic!("no Envoy log line for {rec} in {lines:#?}"));
        assert_eq!(line["status"], rec["status"], "{line}");
        assert_eq!(line["stage"], "prod", "{line}");
        assert_eq!(line["resourcePath"], rec["resourcePath"], "{line}");
        assert_eq!(line["errorType"], rec["error.responseType"], "{line}");
    }

    // The metrics counted every request.
    let prom = envoy.admin("/stats/prometheus");
    let sum = |metric: &str| -> u64 {
        prom.lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("tollgate_requests"), sum("tollgate_4xx")),
        (6, 1),
        "{prom}"
    );
    envoy.assert_no_wasm_failure();
}

/// Caching behind an HTTP/3 listener: the second request is answered by Envoy's cache filter,
/// and tollgate tells the two apart in the record, the metrics and the filter state.
#[test]
fn cache_hits_are_told_over_http3() {
    let up = Upstream::with(|r| Reply::ok(&format!("{} {}", r.method, r.path)));
    let cfg = json!({"cache": {"ttl": 60}, "access_log": {"format": "json"}});
    let dir = tempdir::Dir::new("http3-cache");
    let (cert, key) = certificate(dir.path());
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.cache = true;
    let file_log = dir.path().join("access.log");
    opts.access_log_path = Some(file_log.clone());
    let envoy = Envoy::try_start_bootstrap(&http3_bootstrap(&opts, &cert, &key), 2)
        .unwrap_or_else(|f| panic!("Envoy did not start (exit {:?}):\n{}", f.exit, f.log));
    let none: &[(&str, &str)] = &[];
    let first = h3(envoy.port, &[("GET", "/pets/1", none)]);
    assert_eq!(first[0].status, 200);
    // Envoy's cache filter commits the entry as the response ends, and may finish that after
    // the client has it: under load a request at once could still miss (CI saw it once).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = h3(envoy.port, &[("GET", "/pets/1", none)]);
    assert_eq!(second[0].body, "GET /pets/1");
    assert!(second[0].header("age").is_some(), "{:?}", second[0].headers);
    assert_eq!(up.count(), 1);

    let recs = wait_records(&envoy, 2);
    let status: Vec<&Value> = recs.iter().map(|r| &r["cacheStatus"]).collect();
    assert_eq!(status, [&json!("miss"), &json!("hit")], "{recs:#?}");
    let lines = wait_file_log(&file_log, 2);
    let status: Vec<&Value> = lines.iter().map(|l| &l["cacheStatus"]).collect();
    assert_eq!(status, [&json!("miss"), &json!("hit")], "{lines:#?}");
    let stats = envoy.stats();
    let sum = |suffix: &str| -> i64 {
        stats
            .iter()
            .filter(|(n, _)| n.starts_with("wasmcustom.tollgate") && n.ends_with(suffix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        (sum(";cache_hit"), sum(";cache_miss")),
        (1, 1),
        "{stats:#?}"
    );
    envoy.assert_no_wasm_failure();
}

/// Envoy's internal redirect over HTTP/3: the client's one request is charged once and logged
/// once (tests/redirect.rs does it over HTTP/1.1).
#[test]
fn a_followed_redirect_is_charged_and_logged_once_over_http3() {
    let up = Upstream::with(|r| {
        if r.path.starts_with("/start") {
            return Reply::ok("moved")
                .status(302)
                .header("location", "https://localhost/final");
        }
        Reply::ok("final")
    });
    let cfg = json!({
        "stage": "prod",
        "access_log": {"format": "json"},
        "throttle": {"rate": 0.001, "burst": 2}
    });
    let dir = tempdir::Dir::new("http3-redirect");
    let (cert, key) = certificate(dir.path());
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.hcm_extra = json!({"route_config": {"virtual_hosts": [{
        "name": "all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {
            "cluster": "upstream",
            "internal_redirect_policy": {"redirect_response_codes": [302]}
        }}]
    }]}});
    let envoy = Envoy::try_start_bootstrap(&http3_bootstrap(&opts, &cert, &key), 2)
        .unwrap_or_else(|f| panic!("Envoy did not start (exit {:?}):\n{}", f.exit, f.log));
    let none: &[(&str, &str)] = &[];
    let answers = h3(
        envoy.port,
        &[
            ("GET", "/start", none),
            ("GET", "/start", none),
            ("GET", "/start", none),
        ],
    );
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 200, 429], "{statuses:?}");
    assert_eq!(answers[0].body, "final");
    assert_eq!(up.count(), 4, "two requests followed a redirect");
    wait_records(&envoy, 3);
    // Time for a record too many to show up.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let recs = records(&envoy);
    let statuses: Vec<u64> = recs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 429], "{recs:#?}");
    envoy.assert_no_wasm_failure();
}
