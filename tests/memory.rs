//! Bounded memory: per-client buckets live in a fixed set of shared-data slots, so Envoy's
//! memory after 200,000 distinct clients equals its memory after 10,000.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;
use serde_json::{json, Value};

/// Sends one request from each client address in `range` (taken from X-Forwarded-For, which
/// this Envoy trusts for one hop), over a few keep-alive connections.
fn clients(port: u16, range: std::ops::Range<u32>) {
    let threads = 4;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let range = range.clone();
            std::thread::spawn(move || {
                let mut conn = KeepAlive::connect(port);
                for i in range.filter(|i| i % threads == t) {
                    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
                    let status = conn.get("/", &[("x-forwarded-for", &ip)]);
                    assert_eq!(status, 200, "client {ip}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

fn allocated(envoy: &Envoy) -> u64 {
    let v: Value = serde_json::from_str(&envoy.admin("/memory")).unwrap();
    v["allocated"].as_str().unwrap().parse().unwrap()
}

#[test]
fn memory_stays_flat_over_200k_distinct_clients() {
    let up = Upstream::start();
    let cfg = json!({"client_throttle": {"by": "ip", "rate": 100, "burst": 100, "slots": 4096}});
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.hcm_extra = json!({"use_remote_address": true, "xff_num_trusted_hops": 1});
    let envoy = Envoy::start(&opts);

    clients(envoy.port, 0..10_000);
    let (heap_10k, rss_10k) = (allocated(&envoy), rss_kib(envoy.pid()));
    clients(envoy.port, 10_000..200_000);
    let (heap_200k, rss_200k) = (allocated(&envoy), rss_kib(envoy.pid()));
    eprintln!(
        "heap: {heap_10k} -> {heap_200k} bytes; RSS: {rss_10k} -> {rss_200k} KiB after 10k -> 200k clients"
    );
    // One shared-data entry per new client would be ~100 bytes x 190,000 = ~19 MB. Allow
    // 1 MiB of noise (stats, connection buffers) and require no growth beyond it.
    assert!(
        heap_200k <= heap_10k + (1 << 20),
        "heap grew from {heap_10k} to {heap_200k} bytes"
    );
    assert!(
        rss_200k <= rss_10k + 4096,
        "RSS grew from {rss_10k} to {rss_200k} KiB"
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn per_client_buckets_really_follow_the_forwarded_address() {
    // The control for the test above: the buckets are keyed by the XFF-derived client address.
    let up = Upstream::start();
    let cfg = json!({"client_throttle": {"by": "ip", "rate": 0.001, "burst": 1}});
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.hcm_extra = json!({"use_remote_address": true, "xff_num_trusted_hops": 1});
    let envoy = Envoy::start(&opts);
    let mut conn = KeepAlive::connect(envoy.port);
    assert_eq!(conn.get("/", &[("x-forwarded-for", "10.0.0.1")]), 200);
    assert_eq!(conn.get("/", &[("x-forwarded-for", "10.0.0.1")]), 429);
    assert_eq!(conn.get("/", &[("x-forwarded-for", "10.0.0.2")]), 200);
    // IPv6 forms of IPv4 clients (NAT64, mapped, compatible): each its IPv4 client, not one
    // /64 they all share.
    assert_eq!(
        conn.get("/", &[("x-forwarded-for", "64:ff9b::1.2.3.4")]),
        200
    );
    assert_eq!(
        conn.get("/", &[("x-forwarded-for", "64:ff9b::5.6.7.8")]),
        200
    );
    assert_eq!(conn.get("/", &[("x-forwarded-for", "::9.9.9.9")]), 200);
    assert_eq!(conn.get("/", &[("x-forwarded-for", "::8.8.8.8")]), 200);
    assert_eq!(
        conn.get("/", &[("x-forwarded-for", "::ffff:10.0.0.1")]),
        429
    );
    assert_eq!(
        conn.get("/", &[("x-forwarded-for", "64:ff9b::1.2.3.4")]),
        429
    );
    // An IPv6 /64 is still one client.
    assert_eq!(
        conn.get("/", &[("x-forwarded-for", "2001:db8:1:2::1")]),
        200
    );
    assert_eq!(
        conn.get("/", &[("x-forwarded-for", "2001:db8:1:2::2")]),
        429
    );
}
