//! The example gateway in envoy/envoy.yaml, started as `make run` starts it (ports moved to free
//! ones), answering the curl lines the README shows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;

#[test]
fn example_gateway_serves_the_readme_walkthrough() {
    let (yaml, ports) = example_yaml("envoy.yaml");
    let gw = ports.gateway;
    let envoy = YamlEnvoy::start(tempdir::Dir::new("example"), &yaml, 2, ports.admin);
    // An edge proxy's connections are bounded (Envoy warns at start-up when they are not).
    assert!(
        !envoy
            .log()
            .contains("no configured limit to the number of allowed active downstream"),
        "{}",
        envoy.log()
    );
    let stats = request(ports.admin, "GET", "/stats?filter=overload", &[]).text();
    assert!(
        stats.contains("global_downstream_max_connections"),
        "{stats}"
    );

    let r = request(gw, "GET", "/pets/1", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("Rex"));
    assert!(r.header("ratelimit").is_some());

    let r = request(gw, "POST", "/pets", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    let r = request(gw, "POST", "/pets", &[("x-api-key", "dev-key-123")]);
    assert_eq!(r.status, 200);
    let r = request(gw, "POST", "/pets", &[("x-api-key", "partner-a-secret")]);
    assert_eq!(r.status, 200);

    // The free plan's burst of 5 (one already spent above) trips within eight requests
    // (it refills at 1/s, so a slow machine may see a token come back in between).
    let responses: Vec<Response> = (0..8)
        .map(|_| request(gw, "GET", "/pets/1", &[("x-api-key", "dev-key-123")]))
        .collect();
    let codes: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(&codes[..4], &[200, 200, 200, 200], "{codes:?}");
    let limited = responses.iter().find(|r| r.status == 429).expect("a 429");
    assert_eq!(limited.text(), r#"{"message":"Too Many Requests"}"#);
    assert_eq!(limited.header("retry-after"), Some("1"));

    let r = request(
        gw,
        "OPTIONS",
        "/pets/1",
        &[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "PUT"),
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://localhost:3000")
    );

    // Caching: GET /pets/{id} is cached for 60 s; the demo upstream stamps when it answered.
    let a = request(gw, "GET", "/pets/7", &[]);
    let b = request(gw, "GET", "/pets/7", &[]);
    assert!(a.header("x-demo-generated-at").is_some(), "{:?}", a.headers);
    assert_eq!(
        a.header("x-demo-generated-at"),
        b.header("x-demo-generated-at")
    );
    assert!(b.header("age").is_some(), "{:?}", b.headers);
    // Anyone asking for a fresh copy gets the cached one with a Warning; partner-a's key
    // (invalidate_cache) gets a fresh one.
    let r = request(gw, "GET", "/pets/7", &[("cache-control", "max-age=0")]);
    assert!(r.header("age").is_some());
    assert!(r.header("warning").is_some());
    let r = request(
        gw,
        "GET",
        "/pets/7",
        &[
            ("cache-control", "max-age=0"),
            ("x-api-key", "partner-a-secret"),
        ],
    );
    assert_eq!(r.status, 200);
    assert!(r.header("age").is_none(), "{:?}", r.headers);

    // HEAD and HTTP/2 requests pass tollgate and its guard alike. (HTTP/1.0 gets Envoy's own
    // 426 before any filter: `accept_http_10` is off.)
    assert_eq!(request(gw, "HEAD", "/pets/1", &[]).status, 200);
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("--http2-prior-knowledge")
        .arg(format!("http://127.0.0.1:{gw}/pets/2"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // The fail-closed guard after tollgate let every request tollgate passed through and
    // refused none: each worker has its VM here.
    let stats = request(ports.admin, "GET", "/stats?filter=tollgate_guard", &[]).text();
    let count = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("http.gateway.rbac.tollgate_guard.{name}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stats}"))
    };
    assert_eq!(count("denied"), 0, "{stats}");
    assert!(count("allowed") >= 10, "{stats}");
}
