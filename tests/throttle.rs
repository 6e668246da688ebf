//! Throttling, API keys, usage plans and quotas through the real Envoy at --concurrency 2.
//! Buckets use a negligible refill rate (0.001/s) so counts are exact, not timing-dependent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;
use serde_json::{json, Value};

fn keys_config(extra: Value) -> Value {
    let mut cfg = json!({
        "api_key": {"keys": [
            {"id": "gold-1", "value": "k-gold-1", "usage_plan": "gold"},
            {"id": "gold-2", "value": "k-gold-2", "usage_plan": "gold"},
            {"id": "free-1", "sha256": "e1e9c2ab8e7ba2a4ba1a28ed8e20f3f1bfb1ad0f1ca7a1a8a66c1a6f4dc1ea53", "usage_plan": "free"},
            {"id": "quota-1", "value": "k-quota-1", "usage_plan": "tiny"}
        ]},
        "usage_plans": {
            "gold": {"throttle": {"rate": 0.001, "burst": 3}},
            "free": {"throttle": {"rate": 0.001, "burst": 2}},
            "tiny": {"quota": {"limit": 4, "period": "DAY"}}
        },
        "routes": [
            {"match": "POST /pets", "api_key_required": true},
            {"match": "ANY /admin/{proxy+}", "api_key_required": true}
        ]
    });
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    cfg
}

#[test]
fn concurrent_burst_admits_exactly_burst() {
    let up = Upstream::start();
    let cfg = json!({"throttle": {"rate": 0.001, "burst": 20}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    let statuses = concurrent(envoy.port, 100, 16, "/pets", &[]);
    assert_eq!(statuses.len(), 100);
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (20, 80), "{statuses:?}");
    assert_eq!(up.count(), 20);
    envoy.assert_no_wasm_failure();
}

#[test]
fn throttled_response_is_the_contract_429() {
    let up = Upstream::start();
    let cfg = json!({"throttle": {"rate": 0.5, "burst": 1}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    assert_eq!(envoy.get("/", &[]).status, 200);
    let r = envoy.get("/", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), r#"{"message":"Too Many Requests"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    // One token comes back every 2 s.
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(r.header("ratelimit-policy"), Some(r#""stage";q=1;w=2"#));
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""stage";r=0;t="#));
}

/// An upstream's own RateLimit headers are replaced by tollgate's, never duplicated: with CORS on,
/// the filter reads the response's header map and adds only the headers it lacks; with CORS off
/// it reads no map and replaces. Vary, which the upstream also sends, is merged, not repeated.
#[test]
fn upstream_ratelimit_headers_are_replaced_never_duplicated() {
    let up = Upstream::with(|_| {
        Reply::ok("upstream")
            .header("ratelimit", "\"upstream\";r=7;t=9")
            .header("ratelimit-policy", "\"upstream\";q=8;w=9")
            .header("ratelimit-policy", "\"other\";q=9;w=9")
            .header("vary", "Accept")
    });
    let app = "https://app.example.com";
    let cfg = json!({
        "throttle": {"rate": 0.001, "burst": 50},
        "cors": {"allow_origins": [app], "expose_headers": ["x-request-id"]},
        "routes": [{"match": "ANY /plain/{proxy+}", "cors": false}]
    });
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for (path, origin) in [
        ("/pets", Some(app)),
        ("/pets", None),
        ("/plain/x", Some(app)),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        let r = envoy.get(path, &headers);
        let case = format!("{path} origin {origin:?}: {:?}", r.headers);
        assert_eq!(r.status, 200, "{case}");
        assert_eq!(
            r.all("ratelimit-policy"),
            [r#""stage";q=50;w=50000"#],
            "{case}"
        );
        let limit = r.all("ratelimit");
        assert_eq!(limit.len(), 1, "{case}");
        assert!(limit[0].starts_with(r#""stage";r="#), "{case}");
        let vary = r.all("vary");
        if path == "/plain/x" {
            assert_eq!(vary, ["Accept"], "{case}");
            assert!(r.all("access-control-allow-origin").is_empty(), "{case}");
        } else {
            assert_eq!(vary, ["Accept, Origin"], "{case}");
            let allow = r.all("access-control-allow-origin");
            assert_eq!(allow, origin.into_iter().collect::<Vec<_>>(), "{case}");
        }
    }
    envoy.assert_no_wasm_failure();
}

#[test]
fn api_keys_gate_key_routes() {
    let up = Upstream::start();
    let envoy = Envoy::start(&EnvoyOptions::new(keys_config(json!({})), up.port));
    for (method, path, key, want) in [
        ("POST", "/pets", None, 403),
        ("POST", "/pets", Some("wrong"), 403),
        ("GET", "/open", Some("wrong"), 403),
        ("DELETE", "/admin/users/1", None, 403),
        ("POST", "/pets", Some("k-quota-1"), 200),
        ("GET", "/open", None, 200),
    ] {
        let h: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        let r = envoy.send(method, path, &h);
        assert_eq!(r.status, want, "{method} {path} {key:?}");
        if want == 403 {
            assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
    }
    assert_eq!(up.count(), 2);
    // The plain `value` warning, once, though Envoy configures a root context per worker (2),
    // one on the main thread and a canary, and one line for all three keys given as values.
    let warnings = envoy.log().matches("key given as plain `value`").count();
    assert_eq!(
        warnings, 1,
        "one line for the keys, not per key or per context"
    );
    assert!(envoy
        .log()
        .contains("api_key.keys[0] (gold-1): key given as plain `value` (3 in all)"));
    // The upstream still receives the key header (the service may want the key id; it is
    // never logged by tollgate).
    assert!(
        envoy.log().find("k-quota-1").is_none(),
        "a key value reached the log"
    );
}

/// A key header sent twice names no one key: tollgate would check one value while the upstream
/// sees both (joined by some frameworks, the last taken by others). Refused, whatever the
/// values and their order, and nothing is charged.
#[test]
fn a_key_header_sent_twice_is_refused() {
    let up = Upstream::start();
    let envoy = Envoy::start(&EnvoyOptions::new(keys_config(json!({})), up.port));
    for (path, first, second) in [
        ("/pets", "k-gold-1", "k-quota-1"),
        ("/pets", "k-gold-1", "junk"),
        ("/pets", "junk", "k-gold-1"),
        ("/open", "k-gold-1", "k-gold-1"),
    ] {
        let r = envoy.get(path, &[("x-api-key", first), ("X-Api-Key", second)]);
        assert_eq!(r.status, 403, "{path} {first} {second}");
        assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    }
    assert_eq!(up.count(), 0);
    // gold-1's burst of 3 is whole.
    for _ in 0..3 {
        assert_eq!(envoy.get("/pets", &[("x-api-key", "k-gold-1")]).status, 200);
    }
    assert_eq!(envoy.get("/pets", &[("x-api-key", "k-gold-1")]).status, 429);
}

/// `tollgate hash-key` with `input` on stdin: its exit code and what it printed.
fn hash_key(input: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(input.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (out.status.code(), text)
}

/// Two listeners, each with a tollgate of the same plugin name and VM id (one shared data) and
/// its own stage, as copying the example's filter to a second listener gives: every counter is
/// the stage's own, a key's usage plan quota included.
#[test]
fn stages_sharing_a_plugin_name_keep_their_own_buckets() {
    let up = Upstream::start();
    let stage = |name: &str| {
        json!({"stage": name, "throttle": {"rate": 0.001, "burst": 5},
               "api_key": {"keys": [{"id": "k", "value": "k-1", "usage_plan": "p"}]},
               "usage_plans": {"p": {"quota": {"limit": 2, "period": "DAY"}}}})
    };
    let mut boot = bootstrap(&EnvoyOptions::new(stage("prod"), up.port));
    let beta_port = free_port();
    let mut beta = boot["static_resources"]["listeners"][0].clone();
    beta["name"] = json!("beta");
    beta["address"]["socket_address"]["port_value"] = json!(beta_port);
    let filters = &mut beta["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"];
    assert_eq!(filters[0]["name"], "envoy.filters.http.wasm");
    filters[0] = wasm_filter(&stage("beta"), &wasm_path(), "tollgate");
    boot["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(beta);
    let envoy = Envoy::try_start_bootstrap(&boot, 2).unwrap();
    let prod = |h: &[(&str, &str)]| envoy.get("/pets", h);
    let beta = |h: &[(&str, &str)]| request(beta_port, "GET", "/pets", h);
    // The key's quota of 2 is per stage: two under each (shared, beta's would be refused).
    let key = [("x-api-key", "k-1")];
    for r in [prod(&key), prod(&key), beta(&key), beta(&key)] {
        assert_eq!(r.status, 200);
    }
    for r in [prod(&key), beta(&key)] {
        assert_eq!(
            (r.status, r.text()),
            (429, r#"{"message":"Limit Exceeded"}"#.into())
        );
    }
    // Each stage has spent 2 of its own burst of 5 (the refused requests gave theirs back).
    let prod: Vec<u16> = (0..4).map(|_| prod(&[]).status).collect();
    let beta: Vec<u16> = (0..4).map(|_| beta(&[]).status).collect();
    assert_eq!(prod, [200, 200, 200, 429]);
    assert_eq!(beta, [200, 200, 200, 429], "beta has its own stage bucket");
}

#[test]
fn sha256_key_form_matches() {
    let up = Upstream::start();
    let key = "free-key-from-vault";
    let (code, digest) = hash_key(key);
    assert_eq!(code, Some(0));
    // A terminal's newline is not part of the key; whitespace Envoy would trim is refused, as
    // its digest could never match.
    assert_eq!(hash_key(&format!("{key}\r\n")), (Some(0), digest.clone()));
    for bad in [" k", "k ", "k\t\n", "a\u{1}b", ""] {
        assert_eq!(hash_key(bad), (Some(2), String::new()), "{bad:?}");
    }
    let cfg = json!({"api_key": {"keys": [{"id": "vault", "sha256": digest}]},
                     "routes": [{"match": "ANY /{proxy+}", "api_key_required": true}]});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    assert_eq!(envoy.get("/x", &[("x-api-key", key)]).status, 200);
    assert_eq!(
        envoy
            .get("/x", &[("x-api-key", "free-key-from-vaulT")])
            .status,
        403
    );
    // No start-up warning for the sha256 form.
    assert!(!envoy.log().contains("plain `value`"));
}

#[test]
fn plan_burst_is_per_key_and_keys_are_independent() {
    let up = Upstream::start();
    let envoy = Envoy::start(&EnvoyOptions::new(keys_config(json!({})), up.port));
    for key in ["k-gold-1", "k-gold-2"] {
        let statuses = concurrent(envoy.port, 8, 4, "/pets/1", &[("x-api-key", key)]);
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(ok, 3, "{key}: {statuses:?}");
    }
    // Anonymous traffic is not held back by the keys' plans.
    for _ in 0..5 {
        assert_eq!(envoy.get("/pets/1", &[]).status, 200);
    }
    let r = envoy.get("/pets/1", &[("x-api-key", "k-gold-1")]);
    assert_eq!(r.status, 429);
    assert!(r
        .header("ratelimit-policy")
        .unwrap()
        .contains(r#""plan";q=3"#));
}

#[test]
fn quota_per_key_counts_admitted_requests_only() {
    let up = Upstream::start();
    let cfg = keys_config(json!({"client_throttle": {"by": "api_key", "rate": 0.001, "burst": 3}}));
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    let key = [("x-api-key", "k-quota-1")];
    // The client bucket (per key) admits 3; the 4th..6th are throttled and must not count
    // against the quota of 4.
    let codes: Vec<u16> = (0..6).map(|_| envoy.get("/q", &key).status).collect();
    assert_eq!(codes, vec![200, 200, 200, 429, 429, 429]);
    let r = envoy.get("/q", &key);
    assert_eq!(r.text(), r#"{"message":"Too Many Requests"}"#);
    // Quota remaining is 1, shown in the headers of an admitted request of another key? No:
    // quotas are per key; restart the check on a config without the client bucket.
    drop(envoy);
    let up = Upstream::start();
    let envoy = Envoy::start(&EnvoyOptions::new(keys_config(json!({})), up.port));
    let codes: Vec<u16> = (0..6).map(|_| envoy.get("/q", &key).status).collect();
    assert_eq!(codes, vec![200, 200, 200, 200, 429, 429]);
    let r = envoy.get("/q", &key);
    assert_eq!(r.text(), r#"{"message":"Limit Exceeded"}"#);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    assert!(r
        .header("ratelimit-policy")
        .unwrap()
        .contains(r#""quota";q=4;w=86400"#));
    // Another key is not affected.
    assert_eq!(envoy.get("/q", &[("x-api-key", "k-gold-1")]).status, 200);
    assert_eq!(up.count(), 5);
}

#[test]
fn rate_limit_header_modes() {
    let up = Upstream::start();
    let base = json!({"throttle": {"rate": 0.001, "burst": 2}});
    let mut x = base.clone();
    x["rate_limit_headers"] = json!("x-ratelimit");
    let mut none = base.clone();
    none["rate_limit_headers"] = json!("none");

    let e = Envoy::start(&EnvoyOptions::new(base, up.port));
    let r = e.get("/", &[]);
    assert_eq!(r.header("ratelimit-policy"), Some(r#""stage";q=2;w=2000"#));
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""stage";r=1;t="#));
    assert!(r.header("x-ratelimit-limit").is_none());
    drop(e);

    let e = Envoy::start(&EnvoyOptions::new(x, up.port));
    let r = e.get("/", &[]);
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("1"));
    assert!(r.header("x-ratelimit-reset").is_some());
    assert!(r.header("ratelimit").is_none());
    e.get("/", &[]);
    let r = e.get("/", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // The reset is the next token's (draft-10's "until additional quota"), as Retry-After
    // says, not the 2,000 s until the bucket is full.
    assert_eq!(r.header("retry-after"), Some("1000"));
    assert_eq!(r.header("x-ratelimit-reset"), Some("1000"));
    drop(e);

    let e = Envoy::start(&EnvoyOptions::new(none, up.port));
    let r = e.get("/", &[]);
    assert!(r.header("ratelimit").is_none() && r.header("x-ratelimit-limit").is_none());
    e.get("/", &[]);
    let r = e.get("/", &[]);
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(r.header("ratelimit").is_none());
}

#[test]
fn retry_after_is_the_longest_wait_of_the_checks_that_apply() {
    // The route refuses, the stage behind it is empty too: a client that waits the route's
    // second must not meet the stage's 429.
    let up = Upstream::start();
    let cfg = json!({"throttle": {"rate": 0.01, "burst": 2},
                     "routes": [{"match": "GET /r", "throttle": {"rate": 1, "burst": 1}}]});
    let e = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    assert_eq!(e.get("/", &[]).status, 200);
    assert_eq!(e.get("/r", &[]).status, 200);
    let r = e.get("/r", &[]);
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((99..=100).contains(&retry), "{:?}", r.headers);
    assert_eq!(up.count(), 2);
    e.assert_no_wasm_failure();
}

#[test]
fn report_only_passes_everything_but_reports() {
    let up = Upstream::start();
    let cfg = keys_config(json!({"enforce": false, "throttle": {"rate": 0.001, "burst": 2}}));
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for _ in 0..5 {
        assert_eq!(envoy.get("/", &[]).status, 200);
    }
    assert_eq!(envoy.send("POST", "/pets", &[]).status, 200);
    assert_eq!(up.count(), 6);
    let log = envoy.wait_log("report-only lines", |l| {
        l.matches("report-only: would answer 429 THROTTLED").count() >= 3
            && l.contains("report-only: would answer 403 INVALID_API_KEY on route POST /pets")
    });
    assert_eq!(
        log.matches("would answer 429 THROTTLED").count(),
        3,
        "{log}"
    );
    // Rate-limit headers still tell the client where it stands.
    let r = envoy.get("/", &[]);
    assert!(r.header("ratelimit").unwrap().contains("r=0"));
    drop(envoy);

    // With the access log on, the record tells it, and no other line joins the records (a
    // log shipper parses every one of them).
    let cfg = json!({"enforce": false, "throttle": {"rate": 0.001, "burst": 2},
                     "access_log": {"format": "json"}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for _ in 0..5 {
        assert_eq!(envoy.get("/", &[]).status, 200);
    }
    let log = envoy.wait_log("five records", |l| l.matches("\"requestId\"").count() >= 5);
    assert_eq!(
        log.matches("\"error.responseType\":\"THROTTLED\"").count(),
        3,
        "{log}"
    );
    assert!(!log.contains("report-only: would"), "{log}");
    drop(envoy);

    // A format without `error.responseType` (clf) leaves the decision to a line of its own.
    let cfg = json!({"enforce": false, "throttle": {"rate": 0.001, "burst": 2},
                     "access_log": {"format": "clf"}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for _ in 0..5 {
        assert_eq!(envoy.get("/", &[]).status, 200);
    }
    let log = envoy.wait_log("three report-only lines", |l| {
        l.matches("report-only: would answer 429 THROTTLED").count() >= 3
    });
    assert_eq!(log.matches("report-only: would").count(), 3, "{log}");
}

#[test]
fn a_report_only_stage_keeps_an_enforced_route_closed_to_ambiguous_paths() {
    // The stage only reports; the admin route enforces. A path whose route depends on how the
    // upstream reads `;` cannot be told to be off that route, so it is refused.
    let up = Upstream::start();
    let cfg = keys_config(json!({
        "enforce": false,
        "routes": [{"match": "ANY /admin/{proxy+}", "api_key_required": true, "enforce": true}]
    }));
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    assert_eq!(envoy.get("/admin/users", &[]).status, 403);
    for path in ["/;x/admin/users", "/admin/%2e%2e;/admin/users"] {
        let raw = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        let r = raw_request(envoy.port, raw.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.text());
    }
    assert_eq!(up.count(), 0);
    assert_eq!(envoy.get("/pets", &[]).status, 200);
    envoy.assert_no_wasm_failure();
}

#[test]
fn client_throttle_by_header_and_ip() {
    let up = Upstream::start();
    let cfg = json!({"client_throttle": {"by": "header:x-tenant", "rate": 0.001, "burst": 2}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for t in ["a", "b", "c"] {
        let codes: Vec<u16> = (0..3)
            .map(|_| envoy.get("/", &[("x-tenant", t)]).status)
            .collect();
        assert_eq!(codes, vec![200, 200, 429], "tenant {t}");
    }
    drop(envoy);
    // By IP: distinct loopback addresses are distinct clients.
    let cfg = json!({"client_throttle": {"by": "ip", "rate": 0.001, "burst": 2}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for ip in ["127.0.0.2", "127.0.0.3"] {
        let codes: Vec<u16> = (0..3).map(|_| get_from(ip, envoy.port, "/")).collect();
        assert_eq!(codes, vec![200, 200, 429], "{ip}");
    }
}

#[test]
fn client_slots_are_secret_and_the_same_in_every_worker() {
    // Who knows how clients are placed in slots can pick a value that shares another client's
    // slot and drain its bucket. Placed by FNV-1a (tollgate before 0.1 placed them so, as a
    // public, unkeyed hash), a twin of "victim" takes a search of about 65,536 values.
    let fnv = |d: &[u8]| {
        d.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let slots = 65_536u64;
    // (A header's client identity is `hdr:` and its value.)
    let victim = fnv(b"hdr:victim") % slots;
    let twin = (0u64..)
        .map(|i| format!("t{i}"))
        .find(|t| fnv(format!("hdr:{t}").as_bytes()) % slots == victim)
        .unwrap();
    let up = Upstream::start();
    let cfg = json!({"client_throttle": {"by": "header:x-tenant", "rate": 0.001, "burst": 2, "slots": 65536}});
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    // The twin's requests, each on a connection of its own, spread over both workers: one
    // bucket for it in every worker (the placement is the process's, not the worker's).
    let codes: Vec<u16> = (0..12)
        .map(|_| envoy.get("/", &[("x-tenant", twin.as_str())]).status)
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 2, "{codes:?}");
    // The victim's bucket is its own (a secret seed, made at start-up, places clients; the
    // twin shares its slot with a chance of one in 65,536).
    assert_eq!(envoy.get("/", &[("x-tenant", "victim")]).status, 200);
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_client_over_its_limit_leaves_the_stage_to_others() {
    // Requests the client bucket refuses give back the stage token they took: one busy client
    // cannot throttle everyone through the shared stage bucket.
    let up = Upstream::start();
    let cfg = json!({
        "throttle": {"rate": 0.001, "burst": 10},
        "client_throttle": {"by": "ip", "rate": 0.001, "burst": 3}
    });
    let mut opts = EnvoyOptions::new(cfg, up.port);
    // Close at once after a local reply: the test reads each answer to EOF.
    opts.hcm_extra = json!({"delayed_close_timeout": "0s"});
    let envoy = Envoy::start(&opts);
    let codes: Vec<u16> = (0..20)
        .map(|_| get_from("127.0.0.2", envoy.port, "/"))
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 3, "{codes:?}");
    for ip in ["127.0.0.3", "127.0.0.4"] {
        let codes: Vec<u16> = (0..3).map(|_| get_from(ip, envoy.port, "/")).collect();
        assert_eq!(codes, vec![200, 200, 200], "{ip}");
    }
    // 9 of the stage's 10 spent: one more request from anyone, then 429.
    assert_eq!(get_from("127.0.0.5", envoy.port, "/"), 200);
    assert_eq!(get_from("127.0.0.6", envoy.port, "/"), 429);
    envoy.assert_no_wasm_failure();
}

/// A GET from a given loopback source address.
fn get_from(source_ip: &str, port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = connect_from(source_ip, port);
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    parse_response(&buf).unwrap().status
}

/// A gRPC client (HTTP/2, `application/grpc`) gets Envoy's trailers-only answer for tollgate's
/// refusals: RESOURCE_EXHAUSTED (8) for a throttle, as Envoy's own rate limit filters can be
/// set to answer, not UNAVAILABLE (14), which gRPC clients retry at once.
#[test]
fn grpc_clients_get_resource_exhausted_when_throttled() {
    let up = Upstream::start();
    let cfg = keys_config(json!({"throttle": {"rate": 0.001, "burst": 1}}));
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    let grpc = |path: &str, key: Option<&str>| -> String {
        let headers: Vec<(&str, &str)> = key.map(|k| ("x-api-key", k)).into_iter().collect();
        grpc_call(envoy.port, path, &headers)
    };
    let first = grpc("/svc.Pets/Get", None);
    assert!(first.starts_with("http/2 200"), "{first}");
    let throttled = grpc("/svc.Pets/Get", None);
    assert!(throttled.starts_with("http/2 200"), "{throttled}");
    assert!(throttled.contains("grpc-status: 8\r\n"), "{throttled}");
    assert!(throttled.contains("retry-after: "), "{throttled}");
    assert!(
        throttled.contains("content-type: application/grpc\r\n"),
        "{throttled}"
    );
    // A missing key stays PERMISSION_DENIED (Envoy's mapping of 403).
    let denied = grpc("/pets", None);
    assert!(denied.contains("grpc-status: 7\r\n"), "{denied}");
    envoy.assert_no_wasm_failure();
}

/// A gRPC-Web client (a browser, `application/grpc-web*`, here over HTTP/1.1) gets tollgate's
/// refusals trailers-only in its own form: `:status` 200, `grpc-status` 8 for a throttle and 7
/// for a missing key, as a gRPC client does. Envoy sends its gRPC form to gRPC requests only,
/// so a gRPC-Web client got a bare 429 (UNAVAILABLE to it; with Envoy's `grpc_web` filter in
/// front, `grpc-status` 14), which clients retry at once.
#[test]
fn grpc_web_clients_get_resource_exhausted_when_throttled() {
    for grpc_web_filter in [false, true] {
        let up = Upstream::start();
        let cfg = keys_config(json!({"throttle": {"rate": 0.001, "burst": 1}}));
        let mut boot = bootstrap(&EnvoyOptions::new(cfg, up.port));
        if grpc_web_filter {
            boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"]["http_filters"]
                .as_array_mut()
                .unwrap()
                .insert(
                    0,
                    json!({"name": "envoy.filters.http.grpc_web", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"}}),
                );
        }
        let envoy = Envoy::try_start_bootstrap(&boot, 1).unwrap_or_else(|f| panic!("{}", f.log));
        let call = |path: &str, content_type: &str| {
            try_request(
                envoy.port,
                "POST",
                path,
                &[("content-type", content_type), ("x-grpc-web", "1")],
                b"",
            )
            .unwrap()
        };
        let what = format!("grpc_web filter: {grpc_web_filter}");
        assert_eq!(
            call("/svc.Pets/Get", "application/grpc-web+proto").status,
            200,
            "{what}"
        );
        for ct in ["application/grpc-web+proto", "application/grpc-web-text"] {
            let r = call("/svc.Pets/Get", ct);
            assert_eq!(r.status, 200, "{what} {ct}: {:?}", r.headers);
            assert_eq!(
                r.header("grpc-status"),
                Some("8"),
                "{what} {ct}: {:?}",
                r.headers
            );
            assert!(r.header("retry-after").is_some(), "{what}: {:?}", r.headers);
            assert_eq!(
                r.header("grpc-message"),
                Some(r#"{"message":"Too Many Requests"}"#),
                "{what}"
            );
        }
        let r = call("/pets", "application/grpc-web+proto");
        assert_eq!(r.status, 200, "{what}: {:?}", r.headers);
        assert_eq!(
            r.header("grpc-status"),
            Some("7"),
            "{what}: {:?}",
            r.headers
        );
        assert_eq!(up.count(), 1, "{what}");
        envoy.assert_no_wasm_failure();
    }
}
