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

/// Publishes the LDS resource file Envoy watches.
fn publish(dir: &std::path::Path, lds: &Value) {
    publish_file(&dir.join("lds.json"), lds);
}

/// Envoy on LDS from a file in `dir`, first serving tollgate with `plugin` on `port`.
fn lds_envoy(dir: &std::path::Path, port: u16, upstream_port: u16, plugin: &Value) -> Envoy {
    publish(dir, &listener(port, plugin));
    let mut boot = bootstrap(&EnvoyOptions::new(json!({}), upstream_port));
    boot["static_resources"]["listeners"] = json!([]);
    boot["node"] = json!({"id": "tollgate-test", "cluster": "tollgate-test"});
    boot["dynamic_resources"] = json!({"lds_config": {
        "resource_api_version": "V3",
        "path_config_source": {"path": dir.join("lds.json").display().to_string()}
    }});
    let envoy = Envoy::try_start_bootstrap(&boot, 2).unwrap();
    assert_eq!(envoy.port, port);
    envoy
}

/// Pushes `plugin` on `port` through LDS and waits until Envoy took it (and its workers).
fn push_lds(envoy: &Envoy, dir: &std::path::Path, port: u16, plugin: &Value) {
    let before = lds_updates(envoy);
    publish(dir, &listener(port, plugin));
    let deadline = Instant::now() + Duration::from_secs(15);
    while lds_updates(envoy) <= before {
        assert!(Instant::now() < deadline, "no LDS update:\n{}", envoy.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The workers pick the new listener up right after the update.
    std::thread::sleep(Duration::from_millis(300));
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
    let envoy = lds_envoy(dir.path(), port, up.port, &v1);

    for _ in 0..3 {
        let r = envoy.get("/pets", &[]);
        assert_eq!(r.status, 200);
        assert!(r.header("ratelimit").is_some());
    }

    // Same bucket, other settings: the headers switch to X-RateLimit-*, a route appears.
    let v2 = json!({"stage": "prod", "throttle": {"rate": 0.001, "burst": 5},
                    "rate_limit_headers": "x-ratelimit",
                    "routes": [{"match": "GET /pets"}]});
    push_lds(&envoy, dir.path(), port, &v2);
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

const KEYS_V1: &str = r#"{"stage": "prod", "throttle": {"rate": 0.001, "burst": 10},
    "api_key": {"keys": [
    {"id": "k1", "value": "key-one-0123456789"}, {"id": "k2", "value": "key-two-0123456789"}]},
    "routes": [{"match": "GET /q", "api_key_required": true}]}"#;
/// k1 revoked.
const KEYS_V2: &str = r#"{"stage": "prod", "throttle": {"rate": 0.001, "burst": 10},
    "api_key": {"keys": [
    {"id": "k2", "value": "key-two-0123456789"}]},
    "routes": [{"match": "GET /q", "api_key_required": true}]}"#;

/// The ECDS resource: tollgate's filter with the plugin configuration `plugin` (JSON text).
fn ecds_resource(plugin: &str) -> Value {
    let plugin: Value = serde_json::from_str(plugin).unwrap();
    ecds_file(
        "tollgate",
        &wasm_filter(&plugin, &wasm_path(), "tollgate")["typed_config"],
    )
}

fn wait_stat(envoy: &Envoy, stat: &str, above: i64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while envoy.stats().get(stat).copied().unwrap_or(0) <= above {
        assert!(
            Instant::now() < deadline,
            "{stat} stayed at {above}:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pushed through ECDS (the filter's `config_discovery`, as Istio delivers a WasmPlugin), a
/// configuration applies to the next request, on connections already open too: a revoked
/// key is refused at once. A configuration tollgate rejects leaves the last good one serving.
#[test]
fn an_ecds_push_applies_to_open_connections_at_once() {
    let up = Upstream::start();
    let dir = tempdir::Dir::new("reload-ecds");
    let ecds = dir.path().join("ecds.json");
    publish_file(&ecds, &ecds_resource(KEYS_V1));
    let mut opts = EnvoyOptions::new(json!({}), up.port);
    opts.concurrency = 2;
    let boot = ecds_bootstrap(&opts, "tollgate", &ecds);
    let envoy = Envoy::try_start_bootstrap(&boot, 2).unwrap_or_else(|f| panic!("{}", f.log));
    let reloads = "extension_config_discovery.http_filter.tollgate.config_reload";

    let mut open = KeepAlive::connect(envoy.port);
    assert_eq!(open.get("/q", &[("x-api-key", "key-one-0123456789")]), 200);
    let before = envoy.stats().get(reloads).copied().unwrap_or(0);
    publish_file(&ecds, &ecds_resource(KEYS_V2));
    wait_stat(&envoy, reloads, before);
    // The workers get the new filter configuration right after the main thread.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        open.get("/q", &[("x-api-key", "key-one-0123456789")]),
        403,
        "the revoked key on the connection opened before the push"
    );
    assert_eq!(open.get("/q", &[("x-api-key", "key-two-0123456789")]), 200);
    assert_eq!(
        envoy
            .get("/q", &[("x-api-key", "key-one-0123456789")])
            .status,
        403
    );
    // The stage bucket carried over: two tokens taken, one before the push and one after
    // (refused requests take none), and this request the third.
    let r = envoy.get("/q", &[("x-api-key", "key-two-0123456789")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit"),
        Some(r#""stage";r=7;t=1000"#),
        "{:?}",
        r.headers
    );

    // A configuration tollgate refuses: Envoy rejects the update, the last good one serves.
    let rejected = "extension_config_discovery.http_filter.tollgate.config_fail";
    let failed_before = envoy.stats().get(rejected).copied().unwrap_or(0);
    publish_file(
        &ecds,
        &ecds_resource(r#"{"stage": "prod", "throttle": {"rate": -1, "burst": 1}}"#),
    );
    wait_stat(&envoy, rejected, failed_before);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open.get("/q", &[("x-api-key", "key-one-0123456789")]), 403);
    assert_eq!(open.get("/q", &[("x-api-key", "key-two-0123456789")]), 200);
    assert_eq!(open.get("/q", &[]), 403);
    // The refusal is tollgate's, naming the field (Envoy then logs "Wasm VM failed Failed to
    // configure base Wasm plugin" for the rejected update); nothing trapped.
    let log = envoy.log();
    assert!(log.contains("throttle.rate"), "{log}");
    assert!(
        !log.contains("panicked at") && !log.contains("Uncaught RuntimeError"),
        "{log}"
    );
}

/// Pushed through LDS, a configuration is a new listener: connections opened before the push
/// stay on the old one (and its plugin configuration) until Envoy drains them, so a revoked key
/// still passes there for up to `--drain-time-s` (600 s by default). docs/CONFIGURATION.md
/// says to push through ECDS.
#[test]
fn an_lds_push_leaves_open_connections_on_the_old_configuration() {
    let up = Upstream::start();
    let port = free_port();
    let dir = tempdir::Dir::new("reload-lds-drain");
    let v1: Value = serde_json::from_str(KEYS_V1).unwrap();
    let envoy = lds_envoy(dir.path(), port, up.port, &v1);

    let mut open = KeepAlive::connect(port);
    assert_eq!(open.get("/q", &[("x-api-key", "key-one-0123456789")]), 200);
    push_lds(
        &envoy,
        dir.path(),
        port,
        &serde_json::from_str(KEYS_V2).unwrap(),
    );
    // A new connection gets the new listener; the open one keeps the old.
    assert_eq!(
        envoy
            .get("/q", &[("x-api-key", "key-one-0123456789")])
            .status,
        403
    );
    assert_eq!(
        open.get("/q", &[("x-api-key", "key-one-0123456789")]),
        200,
        "the connection opened before the LDS push is on the old listener"
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_configuration_with_an_access_log_says_when_envoy_would_drop_its_records() {
    // Envoy's wasm component at warning: records are never written. A configuration with an
    // access log says so when it loads (and each load is logged once, with its digest).
    let up = Upstream::start();
    let dir = tempdir::Dir::new("reload-level");
    let ecds = dir.path().join("ecds.json");
    publish_file(&ecds, &ecds_resource(KEYS_V1));
    let opts = EnvoyOptions::new(json!({}), up.port);
    let boot = ecds_bootstrap(&opts, "tollgate", &ecds);
    let envoy = Envoy::try_start_bootstrap(&boot, 2).unwrap_or_else(|f| panic!("{}", f.log));
    let reloads = "extension_config_discovery.http_filter.tollgate.config_reload";
    assert_eq!(
        raw_request(
            envoy.admin_port,
            b"POST /logging?wasm=warning HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .unwrap()
        .status,
        200
    );
    let before = envoy.stats().get(reloads).copied().unwrap_or(0);
    let with_log = KEYS_V1.replacen('{', r#"{"access_log": {"format": "json"}, "#, 1);
    publish_file(&ecds, &ecds_resource(&with_log));
    wait_stat(&envoy, reloads, before);
    let log = envoy.wait_log("the level warning", |l| {
        l.contains("tollgate: access_log is set, but Envoy logs the wasm component above info")
    });
    assert_eq!(
        log.matches("access_log is set, but Envoy logs").count(),
        1,
        "{log}"
    );
    // The first load was logged at info (before the level changed), the second not at all.
    assert_eq!(
        log.matches("tollgate: configuration loaded").count(),
        1,
        "{log}"
    );
}
