//! A configuration pushed to a running Envoy through xDS (here LDS from a file, which Envoy
//! watches) reconfigures the plugin without resetting its counters: they live in shared data,
//! created at configure time only when absent (docs/CONFIGURATION.md, "Counters in shared data").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The LDS resource: one listener on `port` with tollgate configured with `plugin`.
fn listener(port: u16, plugin: &Value) -> Value {
    let opts = EnvoyOptions::new(plugin.clone(), 0);
    let mut boot = bootstrap(&opts);
    let mut l = boot["static_resources"]["listeners"][0].take();
    l["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    l["address"]["socket_address"]["port_value"] = json!(port);
    json!({"resources": [l]})
}

/// Replaces the watched file the way Envoy expects: written aside, then moved over.
fn publish(dir: &std::path::Path, lds: &Value) {
    let tmp = dir.join("lds.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(lds).unwrap()).unwrap();
    std::fs::rename(&tmp, dir.join("lds.json")).unwrap();
}

fn lds_updates(envoy: &Envoy) -> i64 {
    envoy
        .stats()
        .get("listener_manager.lds.update_success")
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_reconfigured_plugin_keeps_its_counters() {
    let up = Upstream::start();
    let port = free_port();
    let dir = tempdir::Dir::new("reload");
    let v1 = json!({"stage": "prod", "throttle": {"rate": 0.001, "burst": 5}});
    publish(dir.path(), &listener(port, &v1));

    let mut boot = bootstrap(&EnvoyOptions::new(json!({}), up.port));
    boot["static_resources"]["listeners"] = json!([]);
    boot["node"] = json!({"id": "tollgate-test", "cluster": "tollgate-test"});
    boot["dynamic_resources"] = json!({"lds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": dir.path().join("lds.json").display().to_string()}
    }});
    let envoy = Envoy::try_start_bootstrap(&boot, 2).unwrap();
    assert_eq!(envoy.port, port);

    for _ in 0..3 {
        let r = envoy.get("/pets", &[]);
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_some());
    }

    // Same bucket, other settings: the headers switch to X-RateLimit-*, a route appears.
    let v2 = json!({"stage": "prod", "throttle": {"rate": 0.001, "burst": 5},
                    "rate_limit_headers": "x-ratelimit",
                    "routes": [{"match": "GET /pets"}]});
    let before = lds_updates(&envoy);
    publish(dir.path(), &listener(port, &v2));
    let deadline = Instant::now() + Duration::from_secs(15);
    while lds_updates(&envoy) <= before {
        assert!(Instant::now() < deadline, "no LDS update:\n{}", envoy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The workers pick the new listener up right after the update.
    std::thread::sleep(Duration::from_millis(300));
    let r = envoy.get("/pets/7", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("ratelimit").is_none(), "{:?}", r.headers);
    // The fourth request the bucket saw: the counter carried over.
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"), "{:?}", r.headers);
    assert_eq!(
        r.header("x-ratelimit-remaining"),
        Some("1"),
        "{:?}",
        r.headers
    );
    // One token left, then the limit holds: 5 in all, across both configurations.
    assert_eq!(envoy.get("/pets", &[]).status, 200);
    let r = envoy.get("/pets", &[]);
    assert_eq!(r.status, 429);
    assert_eq!(up.count(), 5);
    envoy.assert_no_wasm_failure();
}
