//! The foundation, end to end: the real Envoy 1.40 loads tollgate.wasm.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn empty_config_passes_traffic_untouched() {
    let up = Upstream::with(|r| {
        Reply::ok(&format!("seen {} {}", r.method, r.path))
            .header("x-upstream", "yes")
            .header("cache-control", "no-cache")
    });
    let envoy = Envoy::start(&EnvoyOptions::new(json!({}), up.port));
    let r = envoy.get(
        "/pets/1?x=%2F&y=2",
        &[("x-custom", "abc"), ("origin", "https://a.example")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "seen GET /pets/1?x=%2F&y=2");
    // Paths tollgate refuses as ambiguous where routes exist: without routes, untouched too
    // (the example listener normalises paths: `%2e%2e;` reaches tollgate as `..;`).
    for p in ["/app/;jsessionid=ABC", "/admin/%2e%2e;/x"] {
        let r = envoy.get(p, &[]);
        assert_eq!(r.status, 200, "{p}: {}", r.text());
    }
    let forwarded = up.requests().len();
    assert_eq!(forwarded, 3);
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(r.header("ratelimit").is_none());
    assert!(r.header("access-control-allow-origin").is_none());
    assert!(r.header("vary").is_none());
    let body = b"{\"name\":\"rex\"}";
    let r = try_request(
        envoy.port,
        "POST",
        "/pets",
        &[("content-type", "application/json")],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = up.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].header("x-custom").as_deref(), Some("abc"));
    assert_eq!(
        seen[0].header("origin").as_deref(),
        Some("https://a.example")
    );
    assert_eq!(seen[3].body, body);
    // An OPTIONS with no CORS configured is an ordinary request.
    let r = envoy.send(
        "OPTIONS",
        "/pets",
        &[
            ("origin", "https://a.example"),
            ("access-control-request-method", "PUT"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 5);
    envoy.assert_no_wasm_failure();
}

#[test]
fn bad_config_is_refused_with_the_field_path() {
    let up = Upstream::start();
    let cfg = json!({"routes": [
        {"match": "GET /a"},
        {"match": "GET /b", "throttle": {"rate": 0, "burst": 5}}
    ]});
    let failure = match Envoy::try_start(&EnvoyOptions::new(cfg, up.port)) {
        Ok(_) => panic!("Envoy must refuse a bad plugin configuration"),
        Err(f) => f,
    };
    assert!(
        failure.log.contains(
            "tollgate: invalid configuration: routes[1].throttle.rate: must be a positive number"
        ),
        "{}",
        failure.log
    );
    // One line names the problem.
    assert_eq!(
        failure
            .log
            .matches("tollgate: invalid configuration")
            .count(),
        1,
        "{}",
        failure.log
    );
    assert_ne!(failure.exit, Some(0));
}

#[test]
fn unknown_fields_and_bad_values_are_refused() {
    let up = Upstream::start();
    for (cfg, says) in [
        (
            json!({"stage": "prod", "throtle": {}}),
            "unknown field `throtle`",
        ),
        (
            json!({"cors": {"allow_origins": ["*"], "allow_credentials": true}}),
            "cors.allow_origins[0]",
        ),
        (
            json!({"cache": {"ttl": 7200}}),
            "cache.ttl: must be a whole number of seconds from 0 (no caching) to 3600",
        ),
    ] {
        let f = Envoy::try_start(&EnvoyOptions::new(cfg.clone(), up.port))
            .err()
            .unwrap_or_else(|| panic!("{cfg} must be refused"));
        assert!(
            f.log.contains(says),
            "{cfg}: expected {says:?} in\n{}",
            f.log
        );
    }
}

#[test]
fn route_table_loads_and_serves() {
    let up = Upstream::start();
    let cfg = json!({
        "stage": "prod",
        "routes": [
            {"match": "GET /pets/{id}"},
            {"match": "ANY /admin/{proxy+}"},
            {"match": "POST /pets"}
        ]
    });
    let envoy = Envoy::start(&EnvoyOptions::new(cfg, up.port));
    for (m, p) in [
        ("GET", "/pets/1"),
        ("POST", "/pets"),
        ("DELETE", "/admin/a/b"),
        ("GET", "/other"),
    ] {
        assert_eq!(envoy.send(m, p, &[]).status, 200, "{m} {p}");
    }
    assert_eq!(up.count(), 4);
    envoy.assert_no_wasm_failure();
}

#[test]
fn config_as_struct_is_accepted() {
    // Envoy users may give the configuration as a protobuf Struct instead of a JSON string.
    let up = Upstream::start();
    let mut boot = bootstrap(&EnvoyOptions::new(json!({}), up.port));
    let filter = &mut boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"][0]["typed_config"]["config"];
    filter["configuration"] = json!({
        "@type": "type.googleapis.com/google.protobuf.Struct",
        "value": {"stage": "struct", "throttle": {"rate": 0.001, "burst": 1}}
    });
    let envoy = Envoy::try_start_bootstrap(&boot, 1).unwrap_or_else(|f| panic!("{}", f.log));
    assert_eq!(envoy.get("/", &[]).status, 200);
    assert_eq!(envoy.get("/", &[]).status, 429);
}

/// Sets every `root_id` in an Envoy configuration.
fn set_root_ids(v: &mut Value, root_id: &str) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "root_id" {
                    *child = json!(root_id);
                } else {
                    set_root_ids(child, root_id);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| set_root_ids(c, root_id)),
        _ => {}
    }
}

#[test]
fn each_load_is_logged_once_and_a_misspelt_upstream_root_id_is_refused() {
    let up = Upstream::start();
    // `{}` at two workers: one line says what was loaded, one warning that it checks nothing
    // (a configuration forgotten in Istio's pluginConfig reads the same), for the whole
    // process, not per worker.
    let envoy = Envoy::start(&EnvoyOptions::new(json!({}), up.port));
    assert_eq!(envoy.get("/", &[]).status, 200);
    let log = envoy.wait_log("the load line", |l| {
        l.contains("tollgate: configuration loaded: stage \"default\", 0 route(s)")
    });
    assert_eq!(
        log.matches("tollgate: configuration loaded").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("tollgate: the configuration checks nothing")
            .count(),
        1,
        "{log}"
    );
    drop(envoy);

    // The upstream role's root_id spelt with a dash would make a main role of it (on a
    // cluster: every cache fill charged twice): refused, naming the spelling.
    let mut config = bootstrap(&EnvoyOptions::new(
        json!({"throttle": {"rate": 1, "burst": 1}}),
        up.port,
    ));
    set_root_ids(&mut config, "tollgate-upstream");
    let failure = match Envoy::try_start_bootstrap(&config, 1) {
        Ok(_) => panic!("Envoy must refuse a misspelt upstream root_id"),
        Err(f) => f,
    };
    assert!(
        failure.log.contains(
            "tollgate: invalid configuration: root_id \"tollgate-upstream\" is not the upstream role's, \"tollgate_upstream\" exactly"
        ),
        "{}",
        failure.log
    );
}
