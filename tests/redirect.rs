//! Envoy's internal redirects: a route with `internal_redirect_policy` follows the upstream's
//! 302 itself and runs the filter chain again for the new location. The client made one
//! request: tollgate charges it once, logs and counts it once, and a client cannot pass as such
//! a second leg to skip its limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;
use serde_json::{json, Value};

/// The upstream sends `/start` on to `/final` (an internal redirect) after 150 ms and answers
/// the rest at once.
fn redirecting_upstream() -> Upstream {
    Upstream::with(|r| {
        if r.path.starts_with("/away") {
            Reply::ok("moved")
                .status(302)
                .header("location", "http://localhost/untolled")
        } else if r.path.starts_with("/start") {
            std::thread::sleep(std::time::Duration::from_millis(150));
            Reply::ok("moved")
                .status(302)
                .header("location", "http://localhost/final")
        } else {
            Reply::ok("final")
        }
    })
}

fn options(cfg: Value, upstream_port: u16) -> EnvoyOptions {
    let mut opts = EnvoyOptions::new(cfg, upstream_port);
    opts.hcm_extra = json!({
        "delayed_close_timeout": "0s",
        // Loopback clients count as internal: Envoy keeps their x-envoy-* headers, so a client
        // can send its own x-envoy-original-url.
        "use_remote_address": true,
        "route_config": {"virtual_hosts": [{
            "name": "all",
            "domains": ["*"],
            "routes": [
                // tollgate is off here: a redirect's second leg to it never reaches tollgate.
                {"match": {"prefix": "/untolled"}, "route": {"cluster": "upstream"},
                 "typed_per_filter_config": {"envoy.filters.http.wasm": {
                     "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                     "disabled": true}}},
                {"match": {"prefix": "/"}, "route": {
                    "cluster": "upstream",
                    "internal_redirect_policy": {"redirect_response_codes": [302]}
                }}
            ]
        }]}
    });
    opts
}

#[test]
fn a_followed_redirect_is_charged_logged_and_counted_once() {
    let up = redirecting_upstream();
    let cfg = json!({
        "stage": "prod",
        "throttle": {"rate": 0.001, "burst": 3},
        "api_key": {"keys": [{"id": "q", "value": "k-quota", "usage_plan": "small"}]},
        "usage_plans": {"small": {"quota": {"limit": 2, "period": "DAY"}}},
        "access_log": {"format": "json"},
    });
    let envoy = Envoy::start(&options(cfg, up.port));
    let key = [("x-api-key", "k-quota")];

    let first = envoy.get("/start", &key);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.text(), "final");
    // Envoy followed the redirect: the upstream saw both legs.
    assert_eq!(up.count(), 2);
    // The client's answer tells what its one request spent.
    let ratelimit = first.header("ratelimit").unwrap_or_default();
    assert!(ratelimit.contains(r#""quota";r=1"#), "{ratelimit}");
    assert!(ratelimit.contains(r#""stage";r=2"#), "{ratelimit}");

    // The quota allows two requests a day: the second redirected request is the second.
    let second = envoy.get("/start", &key);
    assert_eq!(second.status, 200, "{}", second.text());
    let third = envoy.get("/start", &key);
    assert_eq!(third.status, 429, "{}", third.text());

    // One record per client request, none for the leg Envoy followed.
    let recs = wait_records(&envoy, 3);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let recs_after = records(&envoy);
    assert_eq!(recs.len(), recs_after.len(), "{recs_after:#?}");
    let statuses: Vec<u64> = recs_after
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 200, 429], "{recs_after:#?}");
    // The latency is the client's: it includes the first leg (the upstream took 150 ms there).
    for rec in &recs_after[..2] {
        assert_eq!(rec["path"], "/final", "{rec}");
        let latency = rec["responseLatency"].as_u64().unwrap();
        assert!((150..5_000).contains(&latency), "{rec}");
    }
    // Counted once each too.
    let stats = envoy.stats();
    let requests: i64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with("wasmcustom.tollgate") && k.ends_with(";requests"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(requests, 3, "{stats:?}");
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_client_cannot_pass_as_a_followed_redirect() {
    let up = redirecting_upstream();
    let cfg = json!({"throttle": {"rate": 0.001, "burst": 2}});
    let envoy = Envoy::start(&options(cfg, up.port));
    // A redirect whose second leg tollgate never sees (tollgate is off on its route): its
    // handover waits, unclaimed.
    let r = envoy.get("/away", &[("x-request-id", "rid-forged")]);
    assert_eq!((r.status, r.text().as_str()), (200, "final"));
    // The client sends what Envoy sets on a followed redirect, and the same request id:
    // still charged.
    let forged = [
        ("x-envoy-original-url", "http://localhost/away"),
        ("x-request-id", "rid-forged"),
    ];
    assert_eq!(envoy.get("/final", &forged).status, 200);
    assert_eq!(envoy.get("/final", &forged).status, 429);
    assert_eq!(envoy.get("/final", &[]).status, 429);
    envoy.assert_no_wasm_failure();
}
