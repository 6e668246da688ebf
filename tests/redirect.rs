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
    // The examples' fail-closed guard after tollgate: every leg tollgate lets through passes it.
    opts.extra_filters.push(guard_filter());
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
                // (The guard after it too, as SECURITY.md says.)
                {"match": {"prefix": "/untolled"}, "route": {"cluster": "upstream"},
                 "typed_per_filter_config": {
                     "envoy.filters.http.wasm": {
                         "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                         "disabled": true},
                     "tollgate_guard": {
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

/// Starts Envoy with `filter` first in the chain, before tollgate.
fn start_with_filter_first(opts: &EnvoyOptions, filter: Value, concurrency: u32) -> Envoy {
    let mut boot = bootstrap(opts);
    boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"]
        .as_array_mut()
        .unwrap()
        .insert(0, filter);
    Envoy::try_start_bootstrap(&boot, concurrency).unwrap_or_else(|f| {
        panic!(
            "Envoy did not start (exit {:?}):
{}",
            f.exit, f.log
        )
    })
}

/// RBAC denying every path under `/final` (a redirect's next leg), for the front of the chain.
fn rbac_denying_final() -> Value {
    json!({"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "DENY", "policies": {"no-final": {
            "permissions": [{"url_path": {"path": {"prefix": "/final"}}}],
            "principals": [{"any": true}]
        }}}
    }})
}

/// tollgate's `requests` series that counted anything: (stat name, count).
fn counted_requests(envoy: &Envoy) -> Vec<(String, i64)> {
    envoy
        .stats()
        .into_iter()
        .filter(|(k, v)| k.starts_with("wasmcustom.tollgate") && k.ends_with(";requests") && *v > 0)
        .collect()
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

/// The stage bucket's remaining tokens, told by a plain request (which takes one).
fn stage_remaining(envoy: &Envoy) -> u64 {
    let r = envoy.get("/plain", &[]);
    let v = r.header("ratelimit").unwrap_or_default().to_string();
    let r = v
        .strip_prefix(r#""stage";r="#)
        .and_then(|rest| rest.split(';').next())
        .unwrap_or_else(|| panic!("no stage item in {v:?}"));
    r.parse().unwrap()
}

/// An external authorization filter before tollgate holds every leg for 200 ms, so second
/// legs reach tollgate late, after other requests on the same worker: each is still matched to
/// its own first leg.
#[test]
fn second_legs_held_by_an_earlier_filter_are_still_charged_once() {
    let up = redirecting_upstream();
    let authz = Upstream::with(|_| {
        std::thread::sleep(std::time::Duration::from_millis(200));
        Reply::ok("")
    });
    let cfg = json!({
        "stage": "prod",
        "throttle": {"rate": 0.001, "burst": 100},
        "access_log": {"format": "json"}
    });
    let mut opts = options(cfg, up.port);
    opts.extra_clusters = vec![json!({
        "name": "authz", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": authz.port}}}}
        ]}]}
    })];
    let ext_authz = json!({"name": "envoy.filters.http.ext_authz", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "http_service": {"server_uri": {
            "uri": format!("http://127.0.0.1:{}", authz.port),
            "cluster": "authz",
            "timeout": "5s"
        }}
    }});
    let envoy = start_with_filter_first(&opts, ext_authz, 1);
    let port = envoy.port;
    let mut paths = vec!["/start"; 12];
    paths.extend(["/plain"; 4]);
    let clients: Vec<_> = paths
        .into_iter()
        .map(|p| std::thread::spawn(move || request(port, "GET", p, &[]).status))
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    // 16 client requests took 16 tokens; the 17th, plain, sees 100 - 17 left.
    assert_eq!(stage_remaining(&envoy), 83);
    wait_records(&envoy, 17);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let recs = records(&envoy);
    assert_eq!(recs.len(), 17, "{recs:#?}");
    assert!(recs.iter().all(|r| r["status"] == 200), "{recs:#?}");
    envoy.assert_no_wasm_failure();
}

/// Envoy's custom_response filter (after tollgate) turns an upstream 500 into a redirect to
/// an error page: an internal redirect without `x-envoy-original-url`. Still one charge and
/// one record per client request.
#[test]
fn a_custom_response_redirect_is_charged_and_logged_once() {
    let up = Upstream::with(|r| {
        if r.path.starts_with("/boom") {
            Reply::ok("broken").status(500)
        } else {
            Reply::ok("error page")
        }
    });
    let cfg = json!({
        "stage": "prod",
        "throttle": {"rate": 0.001, "burst": 100},
        "access_log": {"format": "json"}
    });
    let mut opts = options(cfg, up.port);
    opts.extra_filters = vec![json!({
        "name": "envoy.filters.http.custom_response",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.custom_response.v3.CustomResponse",
            "custom_response_matcher": {"matcher_list": {"matchers": [{
                "predicate": {"single_predicate": {
                    "input": {"name": "status_code", "typed_config": {
                        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpResponseStatusCodeMatchInput"}},
                    "value_match": {"exact": "500"}}},
                "on_match": {"action": {"name": "redirect", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.custom_response.redirect_policy.v3.RedirectPolicy",
                    "status_code": 503,
                    "uri": "http://localhost/error-page"}}}
            }]}}
        }
    })];
    let envoy = Envoy::start(&opts);
    for _ in 0..2 {
        let r = envoy.get("/boom", &[]);
        assert_eq!((r.status, r.text().as_str()), (503, "error page"));
    }
    assert_eq!(up.count(), 4, "two legs per request");
    assert_eq!(stage_remaining(&envoy), 97);
    wait_records(&envoy, 3);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let recs = records(&envoy);
    let statuses: Vec<u64> = recs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [503, 503, 200], "{recs:#?}");
    envoy.assert_no_wasm_failure();
}

/// An RBAC filter before tollgate denies the location the upstream redirects to: the client
/// gets RBAC's 403, which tollgate logs and counts once, as the request its first leg started.
#[test]
fn a_next_leg_denied_before_tollgate_is_logged_once_as_the_clients_request() {
    let up = redirecting_upstream();
    let cfg = json!({
        "stage": "prod",
        "throttle": {"rate": 0.001, "burst": 100},
        "access_log": {"format": "json"},
        "routes": [{"match": "GET /start"}]
    });
    let mut opts = options(cfg, up.port);
    opts.stats_tags = true;
    let rbac = rbac_denying_final();
    let envoy = start_with_filter_first(&opts, rbac, 2);
    let r = envoy.get("/start", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 1, "the upstream saw the first leg only");
    wait_records(&envoy, 1);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let recs = records(&envoy);
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let rec = &recs[0];
    assert_eq!(rec["status"], 403, "{rec}");
    assert_eq!(rec["resourcePath"], "/start", "{rec}");
    assert!(rec["requestTimeEpoch"].as_u64().is_some(), "{rec}");
    // Counted once, under the first leg's route.
    let counted = counted_requests(&envoy);
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(counted[0].0.contains("_start"), "{counted:?}");
    assert_eq!(counted[0].1, 1, "{counted:?}");
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_redirected_preflight_that_tollgate_answers_keeps_what_its_first_leg_took() {
    // The upstream answers preflights on /legacy (CORS off there) and sends them on to /new
    // with a 307, which keeps the method: Envoy follows it, and tollgate answers the preflight
    // for /new. The first leg reached the upstream, so its charge stays.
    let up = Upstream::with(|r| {
        if r.path.starts_with("/legacy") {
            Reply::ok("moved")
                .status(307)
                .header("location", "http://localhost/new")
        } else {
            Reply::ok("ok")
        }
    });
    let cfg = json!({
        "throttle": {"rate": 0.001, "burst": 1},
        "cors": {"allow_origins": ["https://app.example.com"]},
        "routes": [{"match": "GET /legacy", "cors": false}],
    });
    let mut opts = options(cfg, up.port);
    opts.hcm_extra["route_config"]["virtual_hosts"][0]["routes"][1]["route"]
        ["internal_redirect_policy"]["redirect_response_codes"] = json!([307]);
    let envoy = Envoy::start(&opts);
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "GET"),
    ];
    let r = envoy.send("OPTIONS", "/legacy", &preflight);
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // The upstream saw the first leg only.
    assert_eq!(up.count(), 1);
    // The stage's one token stays spent.
    let next = envoy.get("/x", &[]);
    assert_eq!(next.status, 429, "{}", next.text());
    envoy.assert_no_wasm_failure();
}

#[test]
fn an_order_whose_confirmation_page_is_refused_is_still_charged() {
    // POST /orders makes an order and answers 303 to its page, which Envoy follows as a GET;
    // that GET is throttled. The POST reached the upstream, so it is charged: a quota of 3
    // lets 3 orders through, not one per attempt.
    let up = Upstream::with(|r| {
        if r.method == "POST" {
            Reply::ok("made")
                .status(303)
                .header("location", "http://localhost/orders/1")
        } else {
            Reply::ok("your order")
        }
    });
    let cfg = json!({
        "api_key": {"keys": [{"id": "a", "value": "k-a-0123456789", "usage_plan": "p"},
                             {"id": "b", "value": "k-b-0123456789"}]},
        "usage_plans": {"p": {"quota": {"limit": 3, "period": "DAY"}}},
        "routes": [
            {"match": "POST /orders", "api_key_required": true},
            {"match": "GET /orders/{id}", "api_key_required": true,
             "throttle": {"rate": 0.001, "burst": 1}}
        ],
    });
    let mut opts = options(cfg, up.port);
    opts.hcm_extra["route_config"]["virtual_hosts"][0]["routes"][1]["route"]
        ["internal_redirect_policy"]["redirect_response_codes"] = json!([303]);
    let envoy = Envoy::start(&opts);
    // The page's one token goes to another client.
    let r = envoy.get("/orders/0", &[("x-api-key", "k-b-0123456789")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            envoy
                .send("POST", "/orders", &[("x-api-key", "k-a-0123456789")])
                .status
        })
        .collect();
    // Three orders made (their pages refused: 429), then the quota refuses the POST itself.
    assert_eq!(statuses, [429, 429, 429, 429, 429, 429]);
    let posts = up.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 3, "a quota of 3 lets 3 orders reach the upstream");
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_post_redirected_with_303_and_denied_before_tollgate_is_counted_under_its_own_route() {
    // The upstream answers a POST with 303: Envoy follows it as a GET, which RBAC denies before
    // tollgate sees it. The client's request was the POST: counted once under POST /start
    // (whose route has no GET series).
    let up = Upstream::with(|r| {
        if r.path.starts_with("/start") {
            Reply::ok("see other")
                .status(303)
                .header("location", "http://localhost/final")
        } else {
            Reply::ok("final")
        }
    });
    let cfg = json!({"stage": "prod", "routes": [{"match": "POST /start"}]});
    let mut opts = options(cfg, up.port);
    opts.stats_tags = true;
    opts.hcm_extra["route_config"]["virtual_hosts"][0]["routes"][1]["route"]
        ["internal_redirect_policy"]["redirect_response_codes"] = json!([303]);
    let rbac = rbac_denying_final();
    let envoy = start_with_filter_first(&opts, rbac, 1);
    let r = envoy.send("POST", "/start", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(up.count(), 1, "the upstream saw the POST only");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let counted = counted_requests(&envoy);
        if !counted.is_empty() || std::time::Instant::now() > deadline {
            assert_eq!(counted.len(), 1, "{counted:?}");
            assert!(
                counted[0].0.contains("_start") && counted[0].0.contains("method=.=POST"),
                "{counted:?}"
            );
            assert_eq!(counted[0].1, 1, "{counted:?}");
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    envoy.assert_no_wasm_failure();
}
