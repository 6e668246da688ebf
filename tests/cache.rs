//! API caching end to end: Envoy 1.40's own cache filter (`envoy.filters.http.cache` with its
//! in-memory cache) after tollgate in the listener, and tollgate's upstream role on the cluster,
//! as docs/CACHING.md places them. The upstream numbers its answers, so a body tells which
//! upstream call produced it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn start(cfg: Value, up: &Upstream) -> Envoy {
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.cache = true;
    Envoy::start(&opts)
}

/// Answers `n=<call number> <method> <path>`; the path picks response headers:
/// `/nostore` no-store, `/private` private, `/own` its own max-age, `/cookie` a Set-Cookie,
/// `/error` a 500, `/vary` a `Vary: Accept-Encoding`, `/off` a long max-age (that a route with
/// caching off must not honour).
fn upstream() -> Upstream {
    let n = Arc::new(AtomicUsize::new(0));
    Upstream::with(move |r| {
        let k = n.fetch_add(1, Ordering::SeqCst) + 1;
        let reply = Reply::ok(&format!("n={k} {} {}", r.method, r.path));
        let p = r.path.as_str();
        if p.starts_with("/nostore") {
            reply.header("cache-control", "no-store")
        } else if p.starts_with("/private") {
            reply.header("cache-control", "private, max-age=60")
        } else if p.starts_with("/own") {
            reply.header("cache-control", "max-age=5, must-revalidate")
        } else if p.starts_with("/cookie") {
            reply.header("set-cookie", "session=s3cret")
        } else if p.starts_with("/error") {
            reply.status(500)
        } else if p.starts_with("/vary") {
            reply.header("vary", "Accept-Encoding")
        } else if p.starts_with("/off") {
            reply.header("cache-control", "public, max-age=600")
        } else {
            reply
        }
    })
}

/// Nothing of tollgate's internal protocol reached the upstream or the client, and no request
/// carried the bypass validator upstream.
fn assert_clean(up: &Upstream, responses: &[&Response]) {
    for r in up.requests() {
        for (name, value) in &r.headers {
            assert!(!name.starts_with("x-tollgate"), "upstream saw {name}");
            assert!(
                !String::from_utf8_lossy(value).contains("tollgate-cache-bypass"),
                "upstream saw {name}: {}",
                String::from_utf8_lossy(value)
            );
        }
    }
    for r in responses {
        for (name, _) in &r.headers {
            assert!(!name.starts_with("x-tollgate"), "client saw {name}");
        }
    }
}

/// `(path, cacheStatus)` of the plugin's access log lines, once `n` are written.
fn cache_statuses(envoy: &Envoy, n: usize) -> Vec<(String, Value)> {
    let lines = |log: &str| -> Vec<Value> {
        log.lines()
            .filter(|l| l.contains("wasm log tollgate") && l.contains("\"cacheStatus\""))
            .filter_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
            .collect()
    };
    let log = envoy.wait_log("access log lines", |log| lines(log).len() >= n);
    lines(&log)
        .into_iter()
        .map(|v| {
            (
                v["path"].as_str().unwrap_or("").to_string(),
                v["cacheStatus"].clone(),
            )
        })
        .collect()
}

/// Sum of tollgate's counters of one metric (the last element of the name), over every series.
fn metric_sum(envoy: &Envoy, metric: &str) -> i64 {
    envoy
        .stats()
        .iter()
        .filter(|(n, _)| {
            n.starts_with("wasmcustom.tollgate.") && n.rsplit(['.', ';']).next() == Some(metric)
        })
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn envoys_file_system_cache_with_a_size_limit_works_the_same() {
    // The production choice (docs/CACHING.md): Envoy's in-memory cache never evicts.
    let up = upstream();
    let dir = tempdir::Dir::new("fs-cache");
    let mut opts = EnvoyOptions::new(
        json!({"cache": {"ttl": 60}, "access_log": {"format": "json"}}),
        up.port,
    );
    opts.cache = true;
    opts.cache_dir = Some(dir.path().to_path_buf());
    let envoy = Envoy::start(&opts);
    let first = envoy.get("/pets/1", &[]);
    assert_eq!(first.text(), "n=1 GET /pets/1");
    // The entry is written by the cache's own thread, after the response.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_dir(dir.path()).unwrap().count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing stored on disk"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let second = envoy.get("/pets/1", &[]);
    assert_eq!(second.text(), "n=1 GET /pets/1");
    assert!(second.header("age").is_some(), "{:?}", second.headers);
    assert_eq!(up.count(), 1);
    assert_clean(&up, &[&first, &second]);
    let statuses = cache_statuses(&envoy, 2);
    let s: Vec<&str> = statuses.iter().map(|(_, s)| s.as_str().unwrap()).collect();
    assert_eq!(s, ["miss", "hit"], "{statuses:?}");
    envoy.assert_no_wasm_failure();
}

#[test]
fn hit_within_ttl_is_served_by_the_cache_with_age() {
    let up = upstream();
    let envoy = start(
        json!({"cache": {"ttl": 60}, "access_log": {"format": "json"}}),
        &up,
    );
    let first = envoy.get("/pets/1", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "n=1 GET /pets/1");
    // The upstream sent no Cache-Control; the client gets none either (the TTL is the cache's).
    assert_eq!(first.header("cache-control"), None);
    assert_eq!(first.header("age"), None);
    let second = envoy.get("/pets/1", &[]);
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), "n=1 GET /pets/1");
    let age: u64 = second.header("age").expect("age on a hit").parse().unwrap();
    assert!(age <= 2, "{age}");
    assert_eq!(second.header("cache-control"), None);
    // HEAD is answered from the GET entry; Envoy never stores HEAD responses.
    let head = envoy.send("HEAD", "/pets/1", &[]);
    assert_eq!(head.status, 200);
    assert!(head.header("age").is_some(), "{:?}", head.headers);
    assert_eq!(up.count(), 1);
    // Another resource is another entry.
    assert_eq!(envoy.get("/pets/2", &[]).text(), "n=2 GET /pets/2");
    assert_eq!(up.count(), 2);
    assert_clean(&up, &[&first, &second, &head]);

    let statuses = cache_statuses(&envoy, 4);
    let s: Vec<&str> = statuses.iter().map(|(_, s)| s.as_str().unwrap()).collect();
    assert_eq!(s, ["miss", "hit", "hit", "miss"], "{statuses:?}");
    envoy.assert_no_wasm_failure();
}

#[test]
fn entries_expire_after_the_ttl() {
    let up = upstream();
    let envoy = start(
        json!({"cache": {"ttl": 300}, "routes": [{"match": "GET /short/{id}", "cache": {"ttl": 1}}]}),
        &up,
    );
    assert_eq!(envoy.get("/short/1", &[]).text(), "n=1 GET /short/1");
    assert_eq!(envoy.get("/short/1", &[]).text(), "n=1 GET /short/1");
    std::thread::sleep(Duration::from_millis(2100));
    let fresh = envoy.get("/short/1", &[]);
    assert_eq!(fresh.text(), "n=2 GET /short/1");
    assert_eq!(fresh.header("age"), None);
    assert_eq!(envoy.get("/short/1", &[]).text(), "n=2 GET /short/1");
    assert_eq!(up.count(), 2);
    // Envoy revalidated the stale entry with the upstream (If-Modified-Since from the stored
    // Date); this upstream ignores validators and answered 200, which replaced the entry.
    let seen = up.requests();
    assert!(
        seen[1].header("if-modified-since").is_some(),
        "{:?}",
        seen[1].headers
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn post_and_ttl_zero_routes_are_never_cached() {
    let up = upstream();
    let envoy = start(
        json!({
            "cache": {"ttl": 60},
            "access_log": {"format": "json"},
            "routes": [
                {"match": "GET /off/{id}", "cache": {"ttl": 0}},
                {"match": "GET /offtoo/{id}", "cache": false},
                {"match": "GET /pets/{id}", "cache": {"methods": ["GET"]}}
            ]
        }),
        &up,
    );
    let a = try_request(envoy.port, "POST", "/pets", &[], b"{}").unwrap();
    let b = try_request(envoy.port, "POST", "/pets", &[], b"{}").unwrap();
    assert_eq!(
        (a.text().as_str(), b.text().as_str()),
        ("n=1 POST /pets", "n=2 POST /pets")
    );
    // The upstream's own max-age does not make a route with caching off cacheable.
    let c = envoy.get("/off/1", &[]);
    let d = envoy.get("/off/1", &[]);
    assert_eq!(
        (c.text().as_str(), d.text().as_str()),
        ("n=3 GET /off/1", "n=4 GET /off/1")
    );
    assert_eq!(d.header("cache-control"), Some("public, max-age=600"));
    assert_eq!(d.header("age"), None);
    assert_eq!(envoy.get("/offtoo/1", &[]).text(), "n=5 GET /offtoo/1");
    assert_eq!(envoy.get("/offtoo/1", &[]).text(), "n=6 GET /offtoo/1");
    // A client's own validator still reaches the upstream on a route without caching.
    let e = envoy.get("/off/2", &[("if-none-match", "\"v1\"")]);
    assert_eq!(e.text(), "n=7 GET /off/2");
    assert_eq!(
        up.requests()[6].header("if-none-match").as_deref(),
        Some("\"v1\"")
    );
    // `methods: ["GET"]`: HEAD goes around the cache, even when a GET entry exists.
    assert_eq!(envoy.get("/pets/1", &[]).text(), "n=8 GET /pets/1");
    let head = envoy.send("HEAD", "/pets/1", &[]);
    assert_eq!(head.header("age"), None);
    assert_eq!(up.count(), 9);
    assert_clean(&up, &[&a, &b, &c, &d, &e, &head]);
    let statuses = cache_statuses(&envoy, 9);
    let s: Vec<&str> = statuses.iter().map(|(_, s)| s.as_str().unwrap()).collect();
    let mut want = ["bypass"; 9];
    want[7] = "miss";
    assert_eq!(s, want, "{statuses:?}");
    envoy.assert_no_wasm_failure();
}

#[test]
fn the_upstream_can_refuse_storage_and_keeps_its_cache_control() {
    let up = upstream();
    let envoy = start(json!({"cache": {"ttl": 60}}), &up);
    for (path, cc) in [
        ("/nostore", Some("no-store")),
        ("/private", Some("private, max-age=60")),
        ("/cookie", None),
        ("/error", None),
        // Envoy's cache filter stores a response with Vary only for headers listed in its
        // allowed_vary_headers (none here).
        ("/vary", None),
    ] {
        let first = envoy.get(path, &[]);
        let second = envoy.get(path, &[]);
        assert_ne!(
            first.text(),
            second.text(),
            "{path} was served from the cache"
        );
        assert_eq!(second.header("age"), None, "{path}");
        assert_eq!(second.header("cache-control"), cc, "{path}");
    }
    assert_eq!(up.count(), 10);
    // An upstream max-age is replaced by the route's TTL for the cache, and given back to the
    // client as the upstream wrote it.
    let a = envoy.get("/own", &[]);
    let b = envoy.get("/own", &[]);
    assert_eq!(a.text(), b.text());
    assert_eq!(
        a.header("cache-control"),
        Some("max-age=5, must-revalidate")
    );
    assert_eq!(
        b.header("cache-control"),
        Some("max-age=5, must-revalidate")
    );
    assert!(b.header("age").is_some());
    assert_eq!(up.count(), 11);
    assert_clean(&up, &[&a, &b]);
    envoy.assert_no_wasm_failure();
}

#[test]
fn only_key_parameters_split_the_cache_and_the_upstream_gets_the_original_query() {
    let up = upstream();
    let envoy = start(
        json!({
            "cache": {"ttl": 60},
            "routes": [{"match": "GET /pets", "cache": {
                "key_parameters": ["querystring.page", "header.accept-language"]
            }}]
        }),
        &up,
    );
    let a = envoy.get("/pets?page=1&utm_source=mail&x=%2F", &[]);
    assert_eq!(a.text(), "n=1 GET /pets?page=1&utm_source=mail&x=%2F");
    // Other parameters, in another order: the same entry.
    let b = envoy.get("/pets?utm_source=ad&page=1", &[]);
    assert_eq!(b.text(), "n=1 GET /pets?page=1&utm_source=mail&x=%2F");
    assert!(b.header("age").is_some());
    // Another page, or no page: other entries.
    assert_eq!(
        envoy.get("/pets?page=2&utm_source=ad", &[]).text(),
        "n=2 GET /pets?page=2&utm_source=ad"
    );
    assert_eq!(
        envoy.get("/pets?utm_source=x", &[]).text(),
        "n=3 GET /pets?utm_source=x"
    );
    assert_eq!(envoy.get("/pets", &[]).text(), "n=3 GET /pets?utm_source=x");
    // A key header splits the entries too.
    let fr = envoy.get("/pets?page=1", &[("accept-language", "fr")]);
    assert_eq!(fr.text(), "n=4 GET /pets?page=1");
    let fr2 = envoy.get("/pets?page=1&z=9", &[("accept-language", "fr")]);
    assert_eq!(fr2.text(), "n=4 GET /pets?page=1");
    assert_eq!(
        envoy
            .get("/pets?page=1", &[("accept-language", "de")])
            .text(),
        "n=5 GET /pets?page=1"
    );
    // Without key parameters (stage defaults), any query shares the path's entry.
    assert_eq!(
        envoy.get("/items/1?v=1", &[]).text(),
        "n=6 GET /items/1?v=1"
    );
    assert_eq!(
        envoy.get("/items/1?v=2", &[]).text(),
        "n=6 GET /items/1?v=1"
    );
    assert_eq!(up.count(), 6);
    // The upstream saw every query exactly as sent, and the key header untouched.
    let seen = up.requests();
    assert_eq!(seen[3].path, "/pets?page=1");
    assert_eq!(seen[3].header("accept-language").as_deref(), Some("fr"));
    assert_clean(&up, &[&a, &b, &fr, &fr2]);
    envoy.assert_no_wasm_failure();
}

#[test]
fn key_headers_stay_out_of_paths_and_the_routes_ttl_wins_over_an_upstream_age() {
    // The API key splits the cache (a response per key), and an upstream that is itself a
    // cache says its copy is 120 s old.
    let up = Upstream::with(|r| {
        let key = r.header("x-api-key").unwrap_or_default();
        Reply::ok(&format!("{} for {key}", r.path)).header("age", "120")
    });
    let cfg = json!({
        "api_key": {"keys": [
            {"id": "a", "value": "key-a-s3cret"},
            {"id": "b", "value": "key-b-s3cret"}
        ]},
        "cache": {"ttl": 60, "key_parameters": ["header.x-api-key", "querystring.page"]}
    });
    let envoy = start(cfg, &up);
    let a = [("x-api-key", "key-a-s3cret")];
    let first = envoy.get("/pets?page=1&utm=x", &a);
    assert_eq!(first.text(), "/pets?page=1&utm=x for key-a-s3cret");
    // Within the route's TTL, whatever age the upstream claimed: a hit.
    let hit = envoy.get("/pets?utm=y&page=1", &a);
    assert_eq!(hit.text(), "/pets?page=1&utm=x for key-a-s3cret");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age < 60, "{:?}", hit.headers);
    let b = envoy.get("/pets?page=1", &[("x-api-key", "key-b-s3cret")]);
    assert_eq!(
        b.text(),
        "/pets?page=1 for key-b-s3cret",
        "another key, another entry"
    );
    assert_eq!(up.count(), 2);
    // The upstream got each client's own query, never the cache key.
    for seen in up.requests() {
        assert!(!seen.path.contains("~h."), "{}", seen.path);
    }
    assert!(!envoy.log().contains("stashed query does not match"));
    envoy.assert_no_wasm_failure();
}

fn invalidation_config() -> Value {
    json!({
        "api_key": {"keys": [
            {"id": "admin", "value": "k-admin", "invalidate_cache": true},
            {"id": "user", "value": "k-user"}
        ]},
        "cache": {"ttl": 60, "require_authorization": true},
        "access_log": {"format": "json"},
        "routes": [
            {"match": "GET /warn/{id}"},
            {"match": "GET /silent/{id}", "cache": {"unauthorized_strategy": "SUCCEED_WITHOUT_RESPONSE_HEADER"}},
            {"match": "GET /fail/{id}", "cache": {"unauthorized_strategy": "FAIL_WITH_403"}},
            {"match": "GET /open/{id}", "cache": {"require_authorization": false}}
        ]
    })
}

/// A denied invalidation gives back the throttle token it took, and its 403 counts it so.
#[test]
fn a_denied_invalidation_tells_the_token_it_gave_back() {
    let up = upstream();
    let mut cfg = invalidation_config();
    cfg["throttle"] = json!({"rate": 0.001, "burst": 10});
    let envoy = start(cfg, &up);
    let r = envoy.get("/fail/1", &[]);
    assert_eq!(r.status, 200);
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""stage";r=9;"#));
    let r = envoy.get("/fail/1", &[("cache-control", "no-cache")]);
    assert_eq!(r.status, 403);
    assert!(
        r.header("ratelimit")
            .unwrap()
            .starts_with(r#""stage";r=9;"#),
        "{:?}",
        r.headers
    );
    let r = envoy.get("/fail/1", &[]);
    assert_eq!(r.status, 200);
    assert!(r
        .header("ratelimit")
        .unwrap()
        .starts_with(r#""stage";r=8;"#));
    envoy.assert_no_wasm_failure();
}

#[test]
fn unauthorized_invalidation_follows_the_strategy() {
    let up = upstream();
    let envoy = start(invalidation_config(), &up);
    for p in ["/warn/1", "/silent/1", "/fail/1"] {
        envoy.get(p, &[]);
    }
    assert_eq!(up.count(), 3);
    let fresh = [("cache-control", "max-age=0")];
    let user = [("cache-control", "max-age=0"), ("x-api-key", "k-user")];

    // SUCCEED_WITH_RESPONSE_HEADER (the default): served from the cache, with a Warning.
    let r = envoy.get("/warn/1", &fresh);
    assert_eq!(r.text(), "n=1 GET /warn/1");
    assert!(r.header("age").is_some());
    assert!(
        r.header("warning").unwrap().starts_with("199 "),
        "{:?}",
        r.headers
    );
    let r = envoy.get(
        "/warn/1",
        &[("cache-control", "no-cache"), ("x-api-key", "k-user")],
    );
    assert_eq!(r.text(), "n=1 GET /warn/1");
    assert!(r.header("warning").is_some());
    let r = envoy.get("/warn/1", &[("pragma", "no-cache")]);
    assert_eq!(r.text(), "n=1 GET /warn/1");
    assert!(r.header("warning").is_some());
    // Without a request for a fresh response there is no Warning.
    assert!(envoy.get("/warn/1", &[]).header("warning").is_none());

    // SUCCEED_WITHOUT_RESPONSE_HEADER: served from the cache, silently.
    let r = envoy.get("/silent/1", &user);
    assert_eq!(r.text(), "n=2 GET /silent/1");
    assert!(r.header("age").is_some());
    assert!(r.header("warning").is_none());

    // FAIL_WITH_403: the contract's 403.
    let r = envoy.get("/fail/1", &user);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    // Any other client directive is dropped, never passed to the cache.
    let r = envoy.get("/fail/1", &[("cache-control", "max-age=1, min-fresh=100")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "n=3 GET /fail/1");

    assert_eq!(up.count(), 3);
    let statuses = cache_statuses(&envoy, 10);
    let fail = statuses
        .iter()
        .filter(|(p, _)| p == "/fail/1")
        .map(|(_, s)| s.clone())
        .collect::<Vec<_>>();
    // The 403 never reached the cache.
    assert_eq!(
        fail,
        [json!("miss"), Value::Null, json!("hit")],
        "{statuses:?}"
    );
    envoy.wait_log("the denied invalidation", |l| {
        l.contains("CACHE_INVALIDATION_DENIED")
    });
    envoy.assert_no_wasm_failure();
}

#[test]
fn authorized_invalidation_refetches_even_a_fresh_entry() {
    let up = upstream();
    let envoy = start(invalidation_config(), &up);
    assert_eq!(envoy.get("/fail/1", &[]).text(), "n=1 GET /fail/1");
    // Same second: Envoy's cache would serve this entry to a plain `max-age=0` (its age is 0).
    let r = envoy.get(
        "/fail/1",
        &[("cache-control", "max-age=0"), ("x-api-key", "k-admin")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "n=2 GET /fail/1");
    assert!(r.header("warning").is_none());
    // The refreshed response replaced the entry.
    let r = envoy.get("/fail/1", &[]);
    assert_eq!(r.text(), "n=2 GET /fail/1");
    assert!(r.header("age").is_some());
    // `no-cache` works too, and so does anybody's on a route without require_authorization.
    let r = envoy.get(
        "/fail/1",
        &[("cache-control", "no-cache"), ("x-api-key", "k-admin")],
    );
    assert_eq!(r.text(), "n=3 GET /fail/1");
    assert_eq!(envoy.get("/open/1", &[]).text(), "n=4 GET /open/1");
    let r = envoy.get("/open/1", &[("cache-control", "max-age=0")]);
    assert_eq!(r.text(), "n=5 GET /open/1");
    assert_eq!(envoy.get("/open/1", &[]).text(), "n=5 GET /open/1");
    assert_eq!(up.count(), 5);
    assert_clean(&up, &[&r]);
    let statuses = cache_statuses(&envoy, 7);
    let s: Vec<&str> = statuses.iter().map(|(_, s)| s.as_str().unwrap()).collect();
    assert_eq!(
        s,
        ["miss", "miss", "hit", "miss", "miss", "miss", "hit"],
        "{statuses:?}"
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn keys_and_throttles_apply_before_the_cache_and_count_hits() {
    let up = upstream();
    let envoy = start(
        json!({
            "api_key": {"keys": [{"id": "k1", "value": "good"}]},
            "cache": {"ttl": 60},
            "routes": [
                {"match": "GET /pets/{id}", "throttle": {"rate": 0.001, "burst": 3}},
                {"match": "GET /secret", "api_key_required": true}
            ]
        }),
        &up,
    );
    let codes: Vec<u16> = (0..5).map(|_| envoy.get("/pets/1", &[]).status).collect();
    assert_eq!(codes, [200, 200, 200, 429, 429]);
    assert_eq!(up.count(), 1);
    // A key-required route: the key is checked before the cache, on hits too.
    assert_eq!(envoy.get("/secret", &[("x-api-key", "good")]).status, 200);
    let r = envoy.get("/secret", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    let r = envoy.get("/secret", &[("x-api-key", "good")]);
    assert_eq!((r.status, r.header("age").is_some()), (200, true));
    assert_eq!(up.count(), 2);
    // Envoy's cache filter neither answers nor stores requests with Authorization.
    let bearer = [("authorization", "Bearer t")];
    assert_eq!(envoy.get("/me", &bearer).text(), "n=3 GET /me");
    assert_eq!(envoy.get("/me", &bearer).text(), "n=4 GET /me");
    assert_eq!(envoy.get("/me", &[]).text(), "n=5 GET /me");
    envoy.assert_no_wasm_failure();
}

/// A request with a body goes around Envoy's cache filter, so its `Cache-Control` asks the cache
/// for nothing: `FAIL_WITH_403` does not refuse it (as it does not refuse one with
/// `Authorization`).
#[test]
fn a_request_with_a_body_is_not_refused_for_asking_a_fresh_answer() {
    let up = upstream();
    let envoy = start(
        json!({"cache": {"ttl": 60, "unauthorized_strategy": "FAIL_WITH_403"}}),
        &up,
    );
    let fresh = [("cache-control", "max-age=0")];
    assert_eq!(envoy.get("/pets/1", &fresh).status, 403);
    let r = try_request(envoy.port, "GET", "/pets/1", &fresh, b"x").unwrap();
    assert_eq!((r.status, r.text()), (200, "n=1 GET /pets/1".to_string()));
    let r = try_request(envoy.port, "GET", "/pets/1", &[], b"x").unwrap();
    assert_eq!(
        r.text(),
        "n=2 GET /pets/1",
        "a request with a body is never a hit"
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn clients_cannot_speak_for_tollgate() {
    // A client sending tollgate's internal headers can neither change what the upstream gets
    // nor what the cache stores; an upstream sending them cannot fake a hit.
    let evil = Upstream::with(|r| {
        Reply::ok(&format!("{} {}", r.method, r.path))
            .header("x-tollgate-cache", "0000000000000000")
            .header("x-tollgate-cache-control", "=public, max-age=999")
    });
    let envoy = start(
        json!({"cache": {"ttl": 60}, "access_log": {"format": "json"},
               "routes": [{"match": "GET /pets", "cache": {"key_parameters": ["querystring.page"]}}]}),
        &evil,
    );
    let r = envoy.get(
        "/pets?page=1",
        &[
            ("x-tollgate-cache", "0000000000000000 0"),
            ("x-tollgate-cache-query", "?page=1&admin=true"),
        ],
    );
    assert_eq!(r.text(), "GET /pets?page=1");
    assert_eq!(r.header("cache-control"), None);
    let r2 = envoy.get("/pets?page=1", &[]);
    assert_eq!(r2.text(), "GET /pets?page=1");
    assert_eq!(evil.count(), 1);
    assert_clean(&evil, &[&r, &r2]);
    let statuses = cache_statuses(&envoy, 2);
    let s: Vec<&str> = statuses.iter().map(|(_, s)| s.as_str().unwrap()).collect();
    assert_eq!(s, ["miss", "hit"]);
    envoy.assert_no_wasm_failure();
}

#[test]
fn hits_and_misses_are_counted_in_metrics() {
    let up = upstream();
    let envoy = start(json!({"stage": "prod", "cache": {"ttl": 60}}), &up);
    for _ in 0..3 {
        assert_eq!(envoy.get("/pets/1", &[]).status, 200);
    }
    assert_eq!(envoy.get("/pets/2", &[]).status, 200);
    assert_eq!(up.count(), 2);
    // Metrics are written when a stream ends (on_log), just after the response.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while metric_sum(&envoy, "cache_hit") < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric_sum(&envoy, "cache_hit"), 2);
    assert_eq!(metric_sum(&envoy, "cache_miss"), 2);
    envoy.assert_no_wasm_failure();
}

#[test]
fn the_upstream_role_finds_the_key_whatever_its_route_order() {
    // The main role's configuration and the upstream role's list the routes differently, as
    // they may between two pushes (the listener and the cluster update apart).
    let pets =
        json!({"match": "GET /pets", "cache": {"ttl": 60, "key_parameters": ["querystring.page"]}});
    let other =
        json!({"match": "GET /other", "cache": {"ttl": 60, "key_parameters": ["querystring.q"]}});
    let up = upstream();
    let mut opts = EnvoyOptions::new(json!({"routes": [pets, other]}), up.port);
    opts.cache = true;
    opts.upstream_config = Some(json!({"routes": [other, pets]}));
    let envoy = Envoy::start(&opts);
    let a = envoy.get("/pets?page=1&utm=x", &[]);
    assert_eq!(a.text(), "n=1 GET /pets?page=1&utm=x");
    let b = envoy.get("/pets?utm=y&page=1", &[]);
    assert_eq!(
        b.text(),
        "n=1 GET /pets?page=1&utm=x",
        "stored under the key"
    );
    assert_eq!(up.requests()[0].path, "/pets?page=1&utm=x");
    assert_clean(&up, &[&a, &b]);
    envoy.assert_no_wasm_failure();

    // The upstream role's `cache` sections lack the key the main role used: the upstream still
    // gets the client's query, and the response is not stored under a key nothing vouched for.
    let up = upstream();
    let changed = json!({"match": "GET /pets", "cache": {"ttl": 60, "key_parameters": ["querystring.page", "querystring.lang"]}});
    let mut opts = EnvoyOptions::new(json!({"routes": [pets, other]}), up.port);
    opts.cache = true;
    opts.upstream_config = Some(json!({"routes": [changed, other]}));
    let envoy = Envoy::start(&opts);
    let a = envoy.get("/pets?page=1&utm=x", &[]);
    assert_eq!(a.text(), "n=1 GET /pets?page=1&utm=x");
    assert!(a.header("cache-control").is_none(), "{:?}", a.headers);
    let b = envoy.get("/pets?utm=y&page=1", &[]);
    assert_eq!(b.text(), "n=2 GET /pets?utm=y&page=1", "not stored");
    envoy.wait_log("the warning", |l| {
        l.contains("key parameters are in no cache section")
    });
    assert_clean(&up, &[&a, &b]);
    envoy.assert_no_wasm_failure();

    // The upstream role's configuration caches nothing yet (caching just turned on, the
    // cluster not updated): the same, the internal headers never reach the upstream.
    let up = upstream();
    let mut opts = EnvoyOptions::new(json!({"routes": [pets, other]}), up.port);
    opts.cache = true;
    opts.upstream_config = Some(json!({}));
    let envoy = Envoy::start(&opts);
    let a = envoy.get("/pets?page=1&utm=x", &[]);
    assert_eq!(a.text(), "n=1 GET /pets?page=1&utm=x");
    let b = envoy.get("/pets?utm=y&page=1", &[]);
    assert_eq!(b.text(), "n=2 GET /pets?utm=y&page=1", "not stored");
    assert_clean(&up, &[&a, &b]);
    envoy.assert_no_wasm_failure();
}

/// The listener's tollgate caches nothing (caching just turned off there, or only there) while
/// the cluster's upstream role still has a `cache` section, and Envoy's cache filter is in the
/// chain. The marker's query id is a function of the public configuration: a client that
/// forges it must not get a response stored for everyone.
#[test]
fn a_forged_marker_cannot_poison_the_cache_when_the_listener_caches_nothing() {
    let up =
        Upstream::with(|r| Reply::ok(&format!("for {}", r.header("x-user").unwrap_or_default())));
    let upstream_cfg = json!({"stage": "prod", "cache": {"enabled": true, "ttl": 300}});
    let parsed = tollgate::config::Config::from_json(upstream_cfg.to_string().as_bytes()).unwrap();
    let query_id = parsed.cache_policies().next().unwrap().query_id;
    let marker = format!("attacker 300 {query_id:016x}");
    let mut opts = EnvoyOptions::new(json!({"stage": "prod"}), up.port);
    opts.cache = true;
    opts.upstream_config = Some(upstream_cfg);
    let envoy = Envoy::start(&opts);
    let forged = envoy.get(
        "/account",
        &[
            ("x-tollgate-cache", &marker),
            ("x-tollgate-cache-query", "?x=1"),
            ("x-user", "mallory"),
        ],
    );
    assert_eq!(forged.text(), "for mallory");
    std::thread::sleep(Duration::from_millis(300));
    let victim = envoy.get("/account", &[("x-user", "alice")]);
    assert_eq!(
        victim.text(),
        "for alice",
        "the attacker's response was stored"
    );
    assert_eq!(up.count(), 2);
    assert_eq!(up.requests()[0].path, "/account");
    assert_clean(&up, &[&forged, &victim]);
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_revalidation_that_sets_a_cookie_is_not_stored_for_other_clients() {
    // The upstream validates: a conditional request gets a 304, which sets a session cookie
    // for a client that has none. Envoy's cache filter merges a 304 into the stale entry and
    // stores it; a cookie stored so would reach every later client.
    let n = Arc::new(AtomicUsize::new(0));
    let up = Upstream::with(move |r| {
        let k = n.fetch_add(1, Ordering::SeqCst) + 1;
        if r.header("if-none-match").is_some() || r.header("if-modified-since").is_some() {
            let reply = Reply::ok("").status(304);
            if r.header("cookie").is_none() {
                return reply
                    .header("set-cookie", &format!("sid=secret-{k}"))
                    .header("cache-control", "private");
            }
            return reply;
        }
        Reply::ok(&format!("n={k}"))
            .header("etag", "\"v1\"")
            .header("cache-control", "max-age=5, must-revalidate")
    });
    let envoy = start(json!({"cache": {"ttl": 1}}), &up);
    assert_eq!(envoy.get("/session", &[]).text(), "n=1");
    std::thread::sleep(Duration::from_millis(2200));
    // Stale: revalidated; this client gets its cookie with the cached body, and the entry's
    // own entity tag.
    let first = envoy.get("/session", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "n=1");
    assert_eq!(first.header("set-cookie"), Some("sid=secret-2"));
    assert_eq!(first.header("etag"), Some("\"v1\""));
    assert_eq!(up.count(), 2);
    // Another client: the entry was not refreshed with the cookie, so it is revalidated again,
    // and the 304 it gets (no cookie) refreshes the entry.
    let other = envoy.get("/session", &[("cookie", "mine=1")]);
    assert_eq!(other.text(), "n=1");
    assert_eq!(other.header("set-cookie"), None, "{:?}", other.headers);
    assert_eq!(other.header("etag"), Some("\"v1\""));
    assert_eq!(up.count(), 3);
    let hit = envoy.get("/session", &[("cookie", "mine=1")]);
    assert_eq!(hit.text(), "n=1");
    assert_eq!(hit.header("set-cookie"), None, "{:?}", hit.headers);
    assert_eq!(up.count(), 3, "served from the refreshed entry");
    // The cookie's 304 said `private`: that client gets it (not the entry's, which a cache
    // in front would take as leave to store the cookie). The other 304 sent no Cache-Control:
    // the entry keeps the upstream's own, which clients get.
    assert_eq!(first.header("cache-control"), Some("private"));
    for r in [&other, &hit] {
        assert_eq!(
            r.header("cache-control"),
            Some("max-age=5, must-revalidate")
        );
    }
    assert_clean(&up, &[&first, &other, &hit]);
    envoy.assert_no_wasm_failure();
}

#[test]
fn every_copy_of_a_key_header_and_an_ambiguous_query_split_or_skip_the_cache() {
    // The upstream answers for every copy of the key header, and (like Rack 2 or Python's old
    // parse_qs) reads `;` as a parameter separator.
    let up = Upstream::with(|r| {
        let tenants: Vec<String> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-tenant"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        Reply::ok(&format!("{} for {}", r.path, tenants.join("+")))
    });
    let cfg =
        json!({"cache": {"ttl": 60, "key_parameters": ["header.x-tenant", "querystring.page"]}});
    let envoy = start(cfg, &up);
    let both = envoy.get("/t", &[("x-tenant", "victim"), ("x-tenant", "evil")]);
    assert_eq!(both.text(), "/t for victim+evil");
    // The victim alone is another entry: not served the answer made for both copies.
    let victim = envoy.get("/t", &[("x-tenant", "victim")]);
    assert_eq!(victim.text(), "/t for victim");
    assert_eq!(up.count(), 2);
    // Both copies again: their own entry.
    let again = envoy.get("/t", &[("x-tenant", "victim"), ("x-tenant", "evil")]);
    assert_eq!(again.text(), "/t for victim+evil");
    assert!(again.header("age").is_some(), "{:?}", again.headers);
    assert_eq!(up.count(), 2);

    // `;` in the query: whether `page` is a parameter depends on the upstream, so the request
    // goes around the cache, neither stored nor served from it.
    let t = [("x-tenant", "a")];
    let odd = envoy.get("/p?x=1;page=2", &t);
    assert_eq!(odd.text(), "/p?x=1;page=2 for a");
    let plain = envoy.get("/p", &t);
    assert_eq!(plain.text(), "/p for a");
    assert_eq!(up.count(), 4);
    let odd_again = envoy.get("/p?x=1;page=2", &t);
    assert_eq!(odd_again.header("age"), None, "{:?}", odd_again.headers);
    assert_eq!(up.count(), 5);
    // `Page` beside `page` (one parameter to ASP.NET), and a broken escape (dropped by Go):
    // around the cache too, so the entry for `?page=1` keeps the upstream's answer for it.
    let page1 = envoy.get("/p?page=1", &t);
    assert_eq!(page1.text(), "/p?page=1 for a");
    for odd in ["/p?page=1&Page=99", "/p?page=1%zz"] {
        let r = envoy.get(odd, &t);
        assert_eq!(r.text(), format!("{odd} for a"));
        assert_eq!(r.header("age"), None, "{odd}: {:?}", r.headers);
    }
    let page1_again = envoy.get("/p?page=1", &t);
    assert_eq!(page1_again.text(), "/p?page=1 for a");
    assert!(
        page1_again.header("age").is_some(),
        "{:?}",
        page1_again.headers
    );
    assert_eq!(up.count(), 8);
    assert_clean(&up, &[&both, &victim, &again, &odd, &plain, &odd_again]);
    envoy.assert_no_wasm_failure();
}

/// Envoy's cache filter placed before tollgate sends every GET and HEAD upstream (or answers it
/// from its store) itself: tollgate never sees those requests, so no key or throttle applies.
/// tollgate cannot stop that, but says so: one warning a second per worker.
#[test]
fn a_cache_filter_before_tollgate_is_reported() {
    let up = upstream();
    let cfg = json!({"cache": {"ttl": 60},
                     "routes": [{"match": "GET /own/{id}", "throttle": {"rate": 0.001, "burst": 1}}]});
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.cache = true;
    let mut boot = bootstrap(&opts);
    let filters = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"]
        .as_array_mut()
        .unwrap();
    assert_eq!(filters[1]["name"], "envoy.filters.http.cache");
    filters.swap(0, 1);
    let envoy = Envoy::try_start_bootstrap(&boot, 1).unwrap_or_else(|f| panic!("{}", f.log));
    // Unchecked: the route's one-token throttle never applies.
    for _ in 0..3 {
        assert_eq!(envoy.get("/own/1", &[]).status, 200);
    }
    let line = envoy.wait_log("the unchecked-request warning", |l| {
        l.contains("to a request tollgate never saw")
    });
    assert!(
        line.contains("put tollgate before envoy.filters.http.cache"),
        "{line}"
    );
    // One line a second per worker: a second later, the next is reported. (Nothing is stored
    // meanwhile: tollgate's upstream role finds no marker on these requests.)
    std::thread::sleep(Duration::from_millis(1100));
    let r = envoy.get("/own/1", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("age").is_none(), "{:?}", r.headers);
    let warned = |envoy: &Envoy| {
        envoy
            .log()
            .lines()
            .filter(|l| l.contains("to a request tollgate never saw"))
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while warned(&envoy) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(warned(&envoy), 2, "{}", envoy.log());
    envoy.assert_no_wasm_failure();
    // Filters in the documented order: no such warning.
    let mut opts = EnvoyOptions::new(json!({"cache": {"ttl": 60}, "access_log": {}}), up.port);
    opts.cache = true;
    let envoy = Envoy::start(&opts);
    assert_eq!(envoy.get("/own/2", &[]).status, 200);
    assert_eq!(envoy.get("/own/2", &[]).status, 200);
    assert_eq!(wait_records(&envoy, 2).len(), 2);
    assert_eq!(warned(&envoy), 0);
    envoy.assert_no_wasm_failure();
}
