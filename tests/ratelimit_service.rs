//! Fleet-wide limits on a real rate limit service (issue 9, docs/RATE_LIMIT_SERVICE.md).
//!
//! The service is `tests/rls-server`: Envoy's `RateLimitService` on Kuadrant's `limitador`
//! crate with its Redis storage, against Debian's `redis-server`, both started here on loopback
//! (`make rls-server` builds it; the Makefile's `e2e` target depends on that). Envoy is the real
//! Envoy 1.40 with the built module, as in every end-to-end test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// --- the service -------------------------------------------------------------------------------

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_bin() -> PathBuf {
    PathBuf::from(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
}

fn rls_bin() -> PathBuf {
    match std::env::var("RLS_SERVER") {
        Ok(p) => PathBuf::from(p),
        Err(_) => repo_root().join("target/rls-server/debug/rls-server"),
    }
}

/// `redis-server` on a free loopback port, no persistence.
struct Redis {
    port: u16,
    _proc: Proc,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let child = Command::new(redis_bin())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", redis_bin().display()));
        let proc = Proc(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, _proc: proc }
    }
}

/// The rate limit service on Redis, with `limits` (tests/rls-server's JSON format).
struct Rls {
    port: u16,
    _proc: Proc,
    _dir: tempdir::Dir,
}

impl Rls {
    fn start(redis: &Redis, limits: &Value, delay_ms: u64) -> Rls {
        Rls::start_with(redis, limits, delay_ms, &[])
    }

    fn start_with(redis: &Redis, limits: &Value, delay_ms: u64, extra: &[&str]) -> Rls {
        let dir = tempdir::Dir::new("rls");
        let limits_path = dir.path().join("limits.json");
        std::fs::write(&limits_path, limits.to_string()).unwrap();
        let mut child = Command::new(rls_bin())
            .args(["--grpc", "127.0.0.1:0"])
            .args(["--redis", &format!("redis://127.0.0.1:{}", redis.port)])
            .arg("--limits")
            .arg(&limits_path)
            .args(["--delay-ms", &delay_ms.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (make rls-server): {e}",
                    rls_bin().display()
                )
            });
        let stdout = child.stdout.take().unwrap();
        let proc = Proc(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("listening 127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("rls-server said {line:?}"));
        Rls {
            port,
            _proc: proc,
            _dir: dir,
        }
    }
}

// --- Envoy -------------------------------------------------------------------------------------

/// One key on a plan with a quota of 10 a day, delegated to the service.
fn plugin(service: Value) -> Value {
    json!({
        "stage": "prod",
        "api_key": {"keys": [
            {"id": "team-a", "value": "k-team-a", "usage_plan": "gold"},
            {"id": "team-b", "value": "k-team-b", "usage_plan": "gold"}
        ]},
        "usage_plans": {"gold": {"quota": {"limit": 10, "period": "DAY"}}},
        "routes": [{"match": "ANY /{proxy+}", "api_key_required": true}],
        "rate_limit_service": service
    })
}

fn service(failure_mode: &str, timeout_ms: u64) -> Value {
    json!({"cluster": "ratelimit", "domain": "tollgate", "failure_mode": failure_mode,
           "timeout_ms": timeout_ms, "checks": ["quota"]})
}

/// The quota of the plan above, per key, fleet-wide: 10 a day.
fn quota_limits() -> Value {
    json!([{
        "namespace": "tollgate",
        "max_value": 10,
        "seconds": 86400,
        "conditions": [
            "descriptors[0].stage == 'prod'",
            "descriptors[0].usage_plan == 'gold'",
            "descriptors[0].quota == 'DAY'"
        ],
        "variables": ["descriptors[0].api_key_id"]
    }])
}

fn envoy(cfg: Value, upstream: u16, rls_port: u16) -> Envoy {
    let mut opts = EnvoyOptions::new(cfg, upstream);
    opts.extra_clusters = vec![grpc_cluster("ratelimit", rls_port)];
    opts.stats_tags = true;
    Envoy::start(&opts)
}

fn stat(envoy: &Envoy, counter: &str) -> i64 {
    // /stats shows the full name, tags included (Prometheus shows them as labels).
    let name = format!("wasmcustom.tollgate.stage=.=prod;.;{counter}");
    envoy.stats().get(&name).copied().unwrap_or(0)
}

// --- tests -------------------------------------------------------------------------------------

#[test]
fn service_down_follows_failure_mode() {
    let up = Upstream::start();
    // A cluster on a port nobody listens on.
    let dead = free_port();
    for (mode, want) in [("allow", 200), ("deny", 429)] {
        let envoy = envoy(plugin(service(mode, 200)), up.port, dead);
        let r = envoy.get("/pets", &[("x-api-key", "k-team-a")]);
        assert_eq!(r.status, want, "{mode}: {}", r.text());
        if want == 429 {
            assert_eq!(r.json(), json!({"message": "Too Many Requests"}));
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        let line = envoy.wait_log("the failure warning", |l| {
            l.contains("tollgate: rate limit service: grpc_error")
        });
        assert!(line.contains(&format!("failure_mode {mode}")), "{line}");
        assert_eq!(stat(&envoy, "rate_limit_service_failure_grpc_error"), 1);
        envoy.assert_no_wasm_failure();
    }
}

#[test]
fn an_unknown_cluster_is_a_failure_not_a_crash() {
    let up = Upstream::start();
    let mut svc = service("deny", 100);
    svc["cluster"] = json!("no-such-cluster");
    let envoy = envoy(plugin(svc), up.port, free_port());
    for _ in 0..3 {
        let r = envoy.get("/pets", &[("x-api-key", "k-team-a")]);
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    // Envoy refuses to start a call to a cluster it does not know.
    envoy.wait_log("the failure warning", |l| {
        l.contains(
            "rate limit service: grpc_error (the call could not be started: is there a cluster \"no-such-cluster\"?); failure_mode deny",
        )
    });
    assert_eq!(stat(&envoy, "rate_limit_service_failure_grpc_error"), 3);
    // Requests the service is not asked about still work.
    assert_eq!(envoy.get("/pets", &[]).status, 403);
    envoy.assert_no_wasm_failure();
    assert_eq!(up.count(), 0);
}

#[test]
fn two_envoys_share_one_quota_of_10() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &quota_limits(), 0);
    let up = Upstream::start();
    let a = envoy(plugin(service("deny", 1000)), up.port, rls.port);
    let b = envoy(plugin(service("deny", 1000)), up.port, rls.port);
    let mut admitted = 0;
    let mut refused = Vec::new();
    for i in 0..30 {
        let envoy = if i % 2 == 0 { &a } else { &b };
        let r = envoy.get("/pets", &[("x-api-key", "k-team-a")]);
        match r.status {
            200 => admitted += 1,
            429 => refused.push(r),
            s => panic!("request {i}: {s} {}", r.text()),
        }
    }
    assert_eq!(admitted, 10, "exactly the fleet-wide quota");
    assert_eq!(up.count(), 10);
    // The contract's 429 for a spent quota, with the service's numbers in the headers.
    let r = &refused[0];
    assert_eq!(r.json(), json!({"message": "Limit Exceeded"}));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86400).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-policy"), Some("\"quota\";q=10;w=86400"));
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"quota\";r=0;t="),
        "{:?}",
        r.headers
    );
    // The service's own response headers are passed on.
    assert_eq!(r.header("x-rls-server"), Some("limitador"));
    // Another key has its own quota.
    assert_eq!(a.get("/pets", &[("x-api-key", "k-team-b")]).status, 200);
    let total_ok = stat(&a, "rate_limit_service_ok") + stat(&b, "rate_limit_service_ok");
    let total_over =
        stat(&a, "rate_limit_service_over_limit") + stat(&b, "rate_limit_service_over_limit");
    assert_eq!((total_ok, total_over), (11, 20));
    a.assert_no_wasm_failure();
    b.assert_no_wasm_failure();
}

#[test]
fn an_admitted_request_carries_the_services_ratelimit_headers() {
    let redis = Redis::start();
    let rls = Rls::start(&redis, &quota_limits(), 0);
    let up = Upstream::start();
    let envoy = envoy(plugin(service("deny", 1000)), up.port, rls.port);
    let r = envoy.get("/pets", &[("x-api-key", "k-team-a")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("ratelimit-policy"), Some("\"quota\";q=10;w=86400"));
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with("\"quota\";r=9;t="),
        "{:?}",
        r.headers
    );
    assert_eq!(r.header("x-rls-server"), Some("limitador"));
    // The upstream saw the request once, unchanged.
    assert_eq!(up.count(), 1);
}

#[test]
fn the_services_own_ratelimit_headers_never_double_tollgates() {
    // Limitador's draft-03 headers (--rate-limit-headers) with tollgate in x-ratelimit mode:
    // each header once, tollgate's; the service's other headers are added; a refused origin
    // gets no CORS headers on the 429.
    let redis = Redis::start();
    let limits = json!([{
        "namespace": "tollgate", "max_value": 1, "seconds": 60,
        "conditions": ["descriptors[0].quota == 'DAY'"],
        "variables": ["descriptors[0].api_key_id"]
    }]);
    let rls = Rls::start_with(&redis, &limits, 0, &["--rate-limit-headers"]);
    let up = Upstream::with(|_| Reply::ok("up").header("set-cookie", "session=1"));
    let mut cfg = plugin(service("deny", 2000));
    cfg["rate_limit_headers"] = json!("x-ratelimit");
    cfg["cors"] = json!({"allow_origins": ["https://app.example.com"]});
    let envoy = envoy(cfg, up.port, rls.port);
    let headers = [
        ("x-api-key", "k-team-a"),
        ("origin", "https://evil.example.net"),
    ];
    let ok = envoy.get("/pets", &headers);
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(
        ok.all("set-cookie"),
        ["session=1"],
        "the upstream's cookie kept"
    );
    assert_eq!(ok.header("x-rls-server"), Some("limitador"));
    let over = envoy.get("/pets", &headers);
    assert_eq!(over.status, 429, "{}", over.text());
    for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "retry-after"] {
        assert_eq!(over.all(name).len(), 1, "{name}: {:?}", over.headers);
    }
    assert_eq!(over.header("x-rls-server"), Some("limitador"));
    assert!(
        !over
            .headers
            .iter()
            .any(|(n, _)| n.starts_with("access-control-")),
        "{:?}",
        over.headers
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_slow_service_is_cut_off_at_the_timeout() {
    let redis = Redis::start();
    // The service answers after 600 ms; tollgate waits 100 ms.
    let rls = Rls::start(&redis, &quota_limits(), 600);
    let up = Upstream::start();
    for (mode, want) in [("allow", 200), ("deny", 429)] {
        let envoy = envoy(plugin(service(mode, 100)), up.port, rls.port);
        let t = Instant::now();
        // Keep-alive, so that the connection's own close does not count.
        let mut conn = KeepAlive::connect(envoy.port);
        let status = conn.get("/pets", &[("x-api-key", "k-team-a")]);
        let took = t.elapsed();
        assert_eq!(status, want, "{mode}");
        assert!(took >= Duration::from_millis(90), "{mode}: {took:?}");
        assert!(
            took < Duration::from_millis(450),
            "{mode}: not cut off: {took:?}"
        );
        envoy.wait_log("the timeout warning", |l| {
            l.contains("rate limit service: timeout (after ")
                && l.contains(&format!("failure_mode {mode}"))
        });
        assert_eq!(stat(&envoy, "rate_limit_service_failure_timeout"), 1);
        envoy.assert_no_wasm_failure();
    }
}

#[test]
fn the_example_fleet_shares_the_free_plans_quota() {
    // envoy/envoy-ratelimit.yaml twice (as `make run-ratelimit` starts it, ports moved), with
    // envoy/ratelimit-limits.json in the service.
    let redis = Redis::start();
    let limits: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("envoy/ratelimit-limits.json")).unwrap(),
    )
    .unwrap();
    let rls = Rls::start(&redis, &limits, 0);
    let start = |tag: &str| {
        let (yaml, ports) = example_yaml("envoy-ratelimit.yaml");
        let yaml = yaml.replace("port_value: 8081", &format!("port_value: {}", rls.port));
        (
            ports.gateway,
            YamlEnvoy::start(tempdir::Dir::new(tag), &yaml, 2, ports.admin),
        )
    };
    let (a, _ea) = start("fleet-a");
    let (b, _eb) = start("fleet-b");
    let codes: Vec<u16> = (0..14)
        .map(|i| {
            let port = if i % 2 == 0 { a } else { b };
            request(port, "GET", "/pets/1", &[("x-api-key", "dev-key-123")]).status
        })
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 10, "{codes:?}");
    assert_eq!(&codes[10..], &[429, 429, 429, 429], "{codes:?}");
    let r = request(b, "GET", "/pets/1", &[("x-api-key", "dev-key-123")]);
    assert_eq!(r.text(), r#"{"message":"Limit Exceeded"}"#);
    // The gold key has its own quota.
    let r = request(a, "GET", "/pets/1", &[("x-api-key", "partner-a-secret")]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_request_body_waits_for_the_answer_too() {
    // One request a minute for the key; the service answers after 300 ms. A POST's body must
    // not carry the request past the filter while it waits.
    let redis = Redis::start();
    let limits = json!([{
        "namespace": "tollgate", "max_value": 1, "seconds": 60,
        "conditions": ["descriptors[0].quota == 'DAY'"],
        "variables": ["descriptors[0].api_key_id"]
    }]);
    let rls = Rls::start(&redis, &limits, 300);
    let up = Upstream::start();
    let mut cfg = plugin(service("deny", 2000));
    cfg["access_log"] = json!({"format": "json"});
    let envoy = envoy(cfg, up.port, rls.port);
    let key = [("x-api-key", "k-team-a")];
    let t = Instant::now();
    let r = try_request(envoy.port, "POST", "/pets", &key, b"first body").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t.elapsed()
    );
    // The wait is the response's latency, not the integration's: that starts with the answer.
    let line = envoy.wait_log("the access record", |l| l.contains("\"requestId\""));
    let record = line
        .lines()
        .find_map(|l| l.find("{\"requestId\"").map(|i| &l[i..]))
        .unwrap();
    let record: Value = serde_json::from_str(record).unwrap();
    assert!(
        record["responseLatency"].as_u64().unwrap() >= 290,
        "{record}"
    );
    assert!(
        record["integrationLatency"].as_u64().unwrap() < 250,
        "{record}"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].body, b"first body",
        "the body went on whole after the answer"
    );
    // Over the limit: the body never reaches the upstream, even when it arrives on its own
    // while the filter waits for the service.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
    s.write_all(b"POST /pets HTTP/1.1\r\nhost: localhost\r\nx-api-key: k-team-a\r\ncontent-length: 11\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(b"second body").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    let r = parse_response(&buf[..n]).unwrap();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(
        up.count(),
        1,
        "a refused request's body reached the upstream"
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_client_that_leaves_while_the_service_thinks_is_still_counted_and_logged() {
    // The service answers after 1.5 s; the client hangs up after 300 ms.
    let redis = Redis::start();
    let rls = Rls::start(&redis, &quota_limits(), 1500);
    let up = Upstream::start();
    let mut cfg = plugin(service("deny", 3000));
    cfg["access_log"] = json!({"format": "json"});
    // A local plan bucket of one token, taken before the call: the abandoned request, which
    // never went upstream, gives it back.
    cfg["usage_plans"]["gold"]["throttle"] = json!({"rate": 0.001, "burst": 1});
    let envoy = envoy(cfg, up.port, rls.port);
    let requests = |envoy: &Envoy| -> i64 {
        envoy
            .stats()
            .iter()
            .filter(|(n, _)| n.starts_with("wasmcustom.") && n.ends_with("requests"))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(requests(&envoy), 0);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", envoy.port)).unwrap();
    s.write_all(b"GET /pets/left HTTP/1.1\r\nhost: localhost\r\nx-api-key: k-team-a\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    let line = envoy.wait_log("the abandoned request's record", |l| {
        l.contains("\"requestId\"") && l.contains("/pets/left")
    });
    assert!(line.contains("\"identity.apiKeyId\":\"team-a\""), "{line}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while requests(&envoy) != 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(requests(&envoy), 1, "the abandoned request was not counted");
    assert_eq!(up.count(), 0);
    // The late answer finds no request and breaks nothing; the plan's token is back.
    std::thread::sleep(Duration::from_millis(1500));
    let r = try_request(
        envoy.port,
        "GET",
        "/pets",
        &[("x-api-key", "k-team-a")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    envoy.assert_no_wasm_failure();
}

/// Envoy's stream idle timeout fires while the filter waits for the service: Envoy answers
/// 504, and the record tells no integration (the upstream was never asked), neither a
/// latency nor an INTEGRATION_TIMEOUT.
#[test]
fn a_timeout_while_waiting_for_the_service_is_not_the_integrations() {
    let redis = Redis::start();
    let limits = json!([{
        "namespace": "tollgate", "max_value": 100, "seconds": 60,
        "conditions": ["descriptors[0].quota == 'DAY'"],
        "variables": ["descriptors[0].api_key_id"]
    }]);
    let rls = Rls::start(&redis, &limits, 1500);
    let up = Upstream::start();
    let mut cfg = plugin(service("deny", 5000));
    cfg["access_log"] = json!({"format": "json"});
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.extra_clusters = vec![grpc_cluster("ratelimit", rls.port)];
    opts.hcm_extra = json!({"stream_idle_timeout": "0.3s", "delayed_close_timeout": "0s"});
    let envoy = Envoy::start(&opts);
    let r = envoy.get("/pets", &[("x-api-key", "k-team-a")]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(up.count(), 0);
    let recs = wait_records(&envoy, 1);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let rec = &recs[0];
    assert_eq!(rec["status"], 504, "{rec}");
    assert_eq!(rec["integrationLatency"], Value::Null, "{rec}");
    assert_eq!(rec["error.responseType"], Value::Null, "{rec}");
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_redirect_cannot_skip_a_route_limit_the_service_holds() {
    // /v1 has no throttle and its upstream redirects to /v2, whose route throttle only the
    // service holds (local_first off): Envoy's second leg must be asked about /v2.
    let redis = Redis::start();
    let limits = json!([{
        "namespace": "tollgate",
        "max_value": 1,
        "seconds": 60,
        "conditions": ["descriptors[0].route == 'ANY /v2'"],
        "variables": []
    }]);
    let rls = Rls::start(&redis, &limits, 0);
    let up = Upstream::with(|r| {
        if r.path.starts_with("/v1") {
            Reply::ok("moved")
                .status(302)
                .header("location", "http://localhost/v2")
        } else {
            Reply::ok("v2-ok")
        }
    });
    let cfg = json!({
        "stage": "prod",
        "routes": [
            {"match": "ANY /v1"},
            {"match": "ANY /v2", "throttle": {"rate": 0.001, "burst": 100}}
        ],
        "rate_limit_service": {"cluster": "ratelimit", "domain": "tollgate",
                               "failure_mode": "deny", "timeout_ms": 1000,
                               "checks": ["route"], "local_first": false}
    });
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.extra_clusters = vec![grpc_cluster("ratelimit", rls.port)];
    opts.hcm_extra = json!({"route_config": {"virtual_hosts": [{
        "name": "all", "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {
            "cluster": "upstream",
            "internal_redirect_policy": {"redirect_response_codes": [302]}
        }}]
    }]}});
    let envoy = Envoy::start(&opts);
    let first = envoy.get("/v2", &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(envoy.get("/v2", &[]).status, 429);
    let redirected = envoy.get("/v1", &[]);
    assert_eq!(redirected.status, 429, "{}", redirected.text());
    assert_eq!(
        up.requests()
            .iter()
            .filter(|r| r.path.starts_with("/v2"))
            .count(),
        1,
        "the second leg never reached /v2's upstream"
    );
    envoy.assert_no_wasm_failure();
}
