//! CORS end to end through the real Envoy: preflights answered by the filter (204 or 403, never
//! forwarded, no API key, no throttle token), actual responses decorated (upstream CORS headers
//! replaced, `Vary: Origin` merged), the filter's own 403/429 readable cross-origin, origin
//! matching, hostile `Origin` values, per-route `cors`, and Private Network Access.
//! Throttled cases use a negligible refill rate (0.001/s) so they are exact, not timing-bound.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;
use serde_json::{json, Value};

const APP: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.org";
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";
const PREFLIGHT_VARY_PNA: &str = "Origin, Access-Control-Request-Method, \
     Access-Control-Request-Headers, Access-Control-Request-Private-Network";

/// The contract's example policy.
fn policy() -> Value {
    json!({
        "allow_origins": [APP, "https://*.example.com", "http://localhost:3000"],
        "allow_methods": ["GET", "POST", "PUT", "DELETE"],
        "allow_headers": ["content-type", "authorization", "x-api-key"],
        "expose_headers": ["x-request-id"],
        "max_age": 600,
        "allow_credentials": true
    })
}

fn with(extra: Value) -> Value {
    let mut cfg = json!({"cors": policy()});
    if let (Some(c), Some(e)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    cfg
}

/// Envoy with tollgate configured by `cfg`. Envoy's delayed close (it waits up to 1 s for the
/// client to hang up after a local reply to `connection: close`) is turned off: this suite reads
/// every response to EOF and makes many local replies.
fn start(cfg: Value, upstream: &Upstream) -> Envoy {
    let mut opts = EnvoyOptions::new(cfg, upstream.port);
    opts.hcm_extra = json!({"delayed_close_timeout": "0s"});
    Envoy::start(&opts)
}

/// `OPTIONS path` with `Origin`, `Access-Control-Request-Method` and `extra` headers.
fn preflight(
    envoy: &Envoy,
    path: &str,
    origin: &str,
    method: &str,
    extra: &[(&str, &str)],
) -> Response {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    h.extend_from_slice(extra);
    envoy.send("OPTIONS", path, &h)
}

fn cors_headers(r: &Response) -> Vec<&(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| n.starts_with("access-control-"))
        .collect()
}

#[track_caller]
fn assert_no_cors(r: &Response, what: &str) {
    assert!(
        cors_headers(r).is_empty(),
        "{what}: expected no CORS headers, got {:?}",
        r.headers
    );
}

/// The value of a header that must appear exactly once.
#[track_caller]
fn once<'a>(r: &'a Response, name: &str) -> &'a str {
    let all = r.all(name);
    assert_eq!(all.len(), 1, "{name} must appear once: {:?}", r.headers);
    all[0]
}

/// A denied preflight: 403 JSON, no `Access-Control-Allow-*` at all.
#[track_caller]
fn assert_denied(r: &Response, what: &str) {
    assert_eq!(r.status, 403, "{what}: {:?} {}", r.headers, r.text());
    assert_eq!(r.json(), json!({"message": "Forbidden"}), "{what}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    assert!(
        !r.headers
            .iter()
            .any(|(n, _)| n.starts_with("access-control-allow-")),
        "{what}: a denied preflight carries no Access-Control-Allow-*: {:?}",
        r.headers
    );
}

#[test]
fn allowed_preflight_is_answered_204_by_the_filter_without_key_or_token() {
    let up = Upstream::start();
    let cfg = with(json!({
        "api_key": {"keys": [{"id": "k", "value": "key-1"}]},
        "throttle": {"rate": 0.001, "burst": 1},
        "routes": [{"match": "PUT /pets/{id}", "api_key_required": true}]
    }));
    let envoy = start(cfg, &up);

    let r = preflight(
        &envoy,
        "/pets/1",
        APP,
        "PUT",
        &[("access-control-request-headers", "Content-Type, X-API-Key")],
    );
    assert_eq!(r.status, 204, "{:?} {}", r.headers, r.text());
    assert!(r.body.is_empty());
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert_eq!(once(&r, "access-control-allow-credentials"), "true");
    // The method and headers asked about (browsers reuse every one named for the whole URL).
    assert_eq!(once(&r, "access-control-allow-methods"), "PUT");
    assert_eq!(
        once(&r, "access-control-allow-headers"),
        "content-type, x-api-key"
    );
    assert_eq!(once(&r, "access-control-max-age"), "600");
    assert_eq!(once(&r, "vary"), PREFLIGHT_VARY);
    assert!(r.header("access-control-expose-headers").is_none());
    assert!(r.header("access-control-allow-private-network").is_none());
    assert!(r.header("ratelimit").is_none(), "{:?}", r.headers);

    // A subdomain origin is echoed; no requested headers, none allowed.
    let r = preflight(&envoy, "/pets/1", "https://x.y.example.com", "DELETE", &[]);
    assert_eq!(r.status, 204);
    assert_eq!(
        once(&r, "access-control-allow-origin"),
        "https://x.y.example.com"
    );
    assert_eq!(once(&r, "access-control-allow-methods"), "DELETE");
    assert!(
        r.header("access-control-allow-headers").is_none(),
        "{:?}",
        r.headers
    );

    // Many preflights: no key needed, never forwarded, no throttle token taken (burst is 1).
    for _ in 0..5 {
        let r = preflight(&envoy, "/pets/1", "http://localhost:3000", "PUT", &[]);
        assert_eq!(r.status, 204);
    }
    assert_eq!(up.count(), 0, "a preflight is never forwarded upstream");

    // The bucket is still full: one actual request passes, the next is throttled.
    assert_eq!(envoy.get("/pets/1", &[]).status, 200);
    assert_eq!(envoy.get("/pets/1", &[]).status, 429);
    assert_eq!(up.count(), 1);
    envoy.assert_no_wasm_failure();
}

#[test]
fn denied_preflight_is_403_without_any_allow_header() {
    let up = Upstream::start();
    let envoy = start(with(json!({})), &up);
    let acrh = "access-control-request-headers";
    let pna = "access-control-request-private-network";
    let none = ("", "");
    // (origin, requested method, one more request header)
    let cases = [
        (EVIL, "PUT", none),
        (EVIL, "GET", none),
        ("https://example.com", "GET", none),
        ("http://app.example.com", "GET", none),
        ("https://app.example.com:8443", "GET", none),
        ("null", "GET", none),
        (APP, "PATCH", none),
        (APP, "put", none),
        (APP, "PUT", (acrh, "x-other")),
        (APP, "PUT", (acrh, "content-type, x-other")),
        (APP, "GET", (acrh, "x-api-key, authorization, cookie2")),
        (APP, "GET", (pna, "true")),
    ];
    for (origin, method, extra) in cases {
        let extra: &[(&str, &str)] = if extra == none { &[] } else { &[extra] };
        let r = preflight(&envoy, "/pets/1", origin, method, extra);
        assert_denied(&r, &format!("{origin} {method} {extra:?}"));
    }
    // At most 128 header names, listed or not: 4,000 (40 KiB, under Envoy's 60 KiB of request
    // headers) are denied, not checked one by one.
    let names = |n: usize| vec!["x-api-key"; n].join(", ");
    let r = preflight(&envoy, "/pets/1", APP, "PUT", &[(acrh, &names(128))]);
    assert_eq!(r.status, 204, "128 names: {:?}", r.headers);
    for n in [129, 4000] {
        let r = preflight(&envoy, "/pets/1", APP, "PUT", &[(acrh, &names(n))]);
        assert_denied(&r, &format!("{n} header names"));
    }
    assert_eq!(up.count(), 0, "a denied preflight is never forwarded");
    envoy.assert_no_wasm_failure();
}

#[test]
fn options_without_the_preflight_headers_is_an_ordinary_request() {
    let up = Upstream::with(|r| Reply::ok(&format!("seen {} {}", r.method, r.path)));
    let envoy = start(with(json!({})), &up);

    // Origin but no Access-Control-Request-Method: forwarded, decorated as an actual request.
    let r = envoy.send("OPTIONS", "/pets", &[("origin", APP)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "seen OPTIONS /pets");
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert!(r.header("access-control-allow-methods").is_none());

    // Access-Control-Request-Method but no Origin: forwarded, no CORS headers.
    let r = envoy.send(
        "OPTIONS",
        "/pets",
        &[("access-control-request-method", "PUT")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "seen OPTIONS /pets");
    assert_no_cors(&r, "no Origin");

    // Neither.
    let r = envoy.send("OPTIONS", "/pets", &[]);
    assert_eq!(r.status, 200);
    assert_no_cors(&r, "plain OPTIONS");

    assert_eq!(up.count(), 3);
    assert!(up.requests().iter().all(|s| s.method == "OPTIONS"));
    envoy.assert_no_wasm_failure();
}

#[test]
fn actual_response_gets_cors_headers_and_origin_merged_into_vary() {
    let up = Upstream::with(|r| {
        let reply = Reply::ok("upstream").header("x-request-id", "r-1");
        match r.path.as_str() {
            "/vary" => reply.header("vary", "Accept-Encoding"),
            "/vary2" => reply
                .header("vary", "Accept-Encoding")
                .header("vary", "Accept-Language"),
            "/vary-origin" => reply.header("vary", "origin, Accept"),
            "/vary-star" => reply.header("vary", "*"),
            _ => reply,
        }
    });
    let envoy = start(with(json!({})), &up);

    let r = envoy.get("/vary", &[("origin", APP)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream");
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert_eq!(once(&r, "access-control-allow-credentials"), "true");
    assert_eq!(once(&r, "access-control-expose-headers"), "x-request-id");
    assert_eq!(once(&r, "vary"), "Accept-Encoding, Origin");
    for preflight_only in [
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
        "access-control-allow-private-network",
    ] {
        assert!(r.header(preflight_only).is_none(), "{preflight_only}");
    }
    // The request itself went on unchanged.
    let seen = up.requests();
    assert_eq!(seen[0].header("origin").as_deref(), Some(APP));

    let r = envoy.get("/plain", &[("origin", APP)]);
    assert_eq!(once(&r, "vary"), "Origin");
    let r = envoy.get("/vary2", &[("origin", APP)]);
    assert_eq!(once(&r, "vary"), "Accept-Encoding, Accept-Language, Origin");
    let r = envoy.get("/vary-origin", &[("origin", APP)]);
    assert_eq!(once(&r, "vary"), "origin, Accept", "no duplicate Origin");
    let r = envoy.get("/vary-star", &[("origin", APP)]);
    assert_eq!(once(&r, "vary"), "*");

    // Other methods too, with a body.
    let r = try_request(
        envoy.port,
        "POST",
        "/vary",
        &[("origin", "https://a.example.com")],
        b"{}",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        once(&r, "access-control-allow-origin"),
        "https://a.example.com"
    );
    envoy.assert_no_wasm_failure();
}

#[test]
fn upstream_cors_headers_are_replaced_never_duplicated() {
    let up = Upstream::with(|_| {
        Reply::ok("upstream")
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-origin", "https://other.example.net")
            .header("access-control-allow-credentials", "false")
            .header("access-control-expose-headers", "x-upstream-secret")
            .header("access-control-allow-methods", "PATCH")
            .header("access-control-allow-headers", "x-anything")
            .header("access-control-max-age", "99999")
            .header("access-control-allow-private-network", "true")
            .header("vary", "Origin")
    });
    let cfg = with(json!({"routes": [{"match": "ANY /admin/{proxy+}", "cors": false}]}));
    let envoy = start(cfg, &up);

    let r = envoy.get("/pets/1", &[("origin", APP)]);
    assert_eq!(r.status, 200);
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert_eq!(once(&r, "access-control-allow-credentials"), "true");
    assert_eq!(once(&r, "access-control-expose-headers"), "x-request-id");
    assert_eq!(once(&r, "vary"), "Origin");
    assert_eq!(cors_headers(&r).len(), 3, "{:?}", r.headers);

    // On a CORS route the policy owns these headers: a disallowed or absent origin gets none,
    // whatever the upstream said.
    let r = envoy.get("/pets/1", &[("origin", EVIL)]);
    assert_eq!(r.status, 200);
    assert_no_cors(&r, "disallowed origin, upstream CORS headers");
    assert_eq!(once(&r, "vary"), "Origin");
    let r = envoy.get("/pets/1", &[]);
    assert_no_cors(&r, "no origin, upstream CORS headers");

    // With `"cors": false` the route is the upstream's business: its headers pass untouched.
    let r = envoy.get("/admin/users", &[("origin", APP)]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("PATCH"),
        "{:?}",
        r.headers
    );
    assert!(r
        .header("access-control-allow-origin")
        .is_some_and(|v| v.contains('*')));
    assert_eq!(r.header("access-control-allow-credentials"), Some("false"));
    envoy.assert_no_wasm_failure();
}

#[test]
fn disallowed_origins_pass_through_without_cors_headers() {
    let up = Upstream::with(|r| Reply::ok(&format!("seen {} {}", r.method, r.path)));
    let envoy = start(with(json!({})), &up);
    for origin in [
        EVIL,
        "https://example.com",
        "http://app.example.com",
        "null",
    ] {
        let r = envoy.get("/pets/1", &[("origin", origin)]);
        assert_eq!(r.status, 200, "{origin}");
        assert_eq!(r.text(), "seen GET /pets/1");
        assert_no_cors(&r, origin);
        // The answer depends on Origin, so shared caches must key on it.
        assert_eq!(once(&r, "vary"), "Origin");
    }
    let r = try_request(envoy.port, "PUT", "/pets/1", &[("origin", EVIL)], b"x").unwrap();
    assert_eq!(r.status, 200);
    assert_no_cors(&r, "PUT from a disallowed origin");
    let seen = up.requests();
    assert_eq!(
        seen.len(),
        5,
        "requests from disallowed origins are not blocked"
    );
    assert_eq!(seen[0].header("origin").as_deref(), Some(EVIL));
    assert_eq!(seen[4].body, b"x");
    envoy.assert_no_wasm_failure();
}

#[test]
fn local_403_and_429_carry_cors_headers() {
    let up = Upstream::start();
    let mut p = policy();
    p["expose_headers"] = json!(["x-request-id", "retry-after"]);
    let cfg = json!({
        "cors": p,
        "api_key": {"keys": [{"id": "k", "value": "key-1"}]},
        "routes": [
            {"match": "POST /pets", "api_key_required": true},
            {"match": "GET /limited/{id}", "throttle": {"rate": 0.001, "burst": 1}}
        ]
    });
    let envoy = start(cfg, &up);

    #[track_caller]
    fn assert_local_cors(r: &Response) {
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(once(r, "access-control-allow-origin"), APP);
        assert_eq!(once(r, "access-control-allow-credentials"), "true");
        assert_eq!(
            once(r, "access-control-expose-headers"),
            "x-request-id, retry-after"
        );
        assert_eq!(once(r, "vary"), "Origin");
        assert!(r.header("access-control-allow-methods").is_none());
    }

    for headers in [
        vec![("origin", APP)],
        vec![("origin", APP), ("x-api-key", "wrong")],
    ] {
        let r = envoy.send("POST", "/pets", &headers);
        assert_eq!(r.status, 403);
        assert_eq!(r.json(), json!({"message": "Forbidden"}));
        assert_local_cors(&r);
    }

    let r = envoy.get("/limited/1", &[("origin", APP)]);
    assert_eq!(r.status, 200);
    let r = envoy.get("/limited/1", &[("origin", APP)]);
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), json!({"message": "Too Many Requests"}));
    assert!(r.header("retry-after").is_some());
    assert_local_cors(&r);

    // A disallowed origin gets the same answers, without CORS headers, but varying by Origin
    // (a cache that stores errors must not give it to an allowed origin).
    let r = envoy.get("/limited/1", &[("origin", EVIL)]);
    assert_eq!(r.status, 429);
    assert_no_cors(&r, "429 to a disallowed origin");
    assert_eq!(r.all("vary"), ["Origin"], "{:?}", r.headers);
    let r = envoy.send("POST", "/pets", &[("origin", EVIL)]);
    assert_eq!(r.status, 403);
    assert_no_cors(&r, "403 to a disallowed origin");
    assert_eq!(r.all("vary"), ["Origin"], "{:?}", r.headers);
    assert_eq!(up.count(), 1);
    envoy.assert_no_wasm_failure();
}

#[test]
fn origin_matching_wildcards_apex_ports_and_case() {
    let up = Upstream::start();
    let cfg = json!({"cors": {
        "allow_origins": [
            "https://*.example.com",
            "https://exact.test:443",
            "http://localhost:3000",
            "HTTP://Mixed.Case.Test",
            "http://[::1]:8080"
        ],
        "allow_methods": ["PUT"]
    }});
    let envoy = start(cfg, &up);
    let allowed = [
        "https://a.example.com",
        "https://a.b.c.example.com",
        "https://A.Example.COM",
        "https://a.example.com:443",
        "https://exact.test",
        "https://exact.test:443",
        "https://EXACT.test",
        "http://localhost:3000",
        "http://mixed.case.test",
        "http://mixed.case.test:80",
        "http://[::1]:8080",
    ];
    let denied = [
        "https://example.com",
        "https://example.com:443",
        "http://a.example.com",
        "https://a.example.com:8443",
        "https://a.example.com:80",
        "https://evilexample.com",
        "https://a.evilexample.com",
        "https://a.example.com.evil.test",
        "https://example.com.a.example.org",
        "https://exact.test:8443",
        "http://exact.test",
        "https://sub.exact.test",
        "http://localhost",
        "http://localhost:3001",
        "https://localhost:3000",
        "https://mixed.case.test",
        "http://[::1]",
        "http://[::2]:8080",
        "null",
    ];
    for origin in allowed {
        let r = envoy.get("/x", &[("origin", origin)]);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin),
            "{origin} must be allowed and echoed as sent: {:?}",
            r.headers
        );
        let r = preflight(&envoy, "/x", origin, "PUT", &[]);
        assert_eq!(r.status, 204, "preflight from {origin}");
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
    }
    for origin in denied {
        let r = envoy.get("/x", &[("origin", origin)]);
        assert_eq!(r.status, 200);
        assert_no_cors(&r, origin);
        assert_denied(&preflight(&envoy, "/x", origin, "PUT", &[]), origin);
    }
    assert_eq!(up.count(), allowed.len() + denied.len());
    envoy.assert_no_wasm_failure();
}

#[test]
fn star_and_null_origins() {
    let up = Upstream::start();
    let cfg = json!({
        "cors": {"allow_origins": ["*"], "allow_methods": ["*"], "allow_headers": ["*"]},
        "routes": [
            {"match": "ANY /null/{x}", "cors": {
                "allow_origins": ["null", "https://a.example.com"]}},
            {"match": "ANY /both/{x}", "cors": {"allow_origins": ["*", "null"]}}
        ]
    });
    let envoy = start(cfg, &up);

    // `*` without credentials: `Access-Control-Allow-Origin: *` for any well-formed origin,
    // and no `Vary: Origin` (the answer does not depend on it).
    for origin in [APP, "http://127.0.0.1:5173", "chrome-extension://abcdef"] {
        let r = envoy.get("/pets", &[("origin", origin)]);
        assert_eq!(once(&r, "access-control-allow-origin"), "*", "{origin}");
        assert!(r.header("access-control-allow-credentials").is_none());
        assert!(r.header("vary").is_none(), "{:?}", r.headers);
    }
    let r = preflight(
        &envoy,
        "/pets",
        EVIL,
        "PROPFIND",
        &[("access-control-request-headers", "X-Foo, Authorization")],
    );
    assert_eq!(r.status, 204);
    assert_eq!(once(&r, "access-control-allow-origin"), "*");
    assert_eq!(once(&r, "access-control-allow-methods"), "PROPFIND");
    assert_eq!(
        once(&r, "access-control-allow-headers"),
        "x-foo, authorization",
        "requested headers echoed, so `authorization` works too"
    );
    // `*` does not cover `null`.
    assert_no_cors(&envoy.get("/pets", &[("origin", "null")]), "null vs *");
    assert_denied(&preflight(&envoy, "/pets", "null", "GET", &[]), "null vs *");

    // `null` listed literally: echoed.
    let r = envoy.get("/null/1", &[("origin", "null")]);
    assert_eq!(once(&r, "access-control-allow-origin"), "null");
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_eq!(once(&r, "vary"), "Origin");
    let r = preflight(&envoy, "/null/1", "null", "POST", &[]);
    assert_eq!(r.status, 204);
    assert_eq!(once(&r, "access-control-allow-origin"), "null");
    assert_no_cors(&envoy.get("/null/1", &[("origin", "Null")]), "Null");
    assert_no_cors(&envoy.get("/null/1", &[("origin", EVIL)]), "evil on /null");

    // `*` and `null` both listed: `null` is echoed, others get `*`.
    let r = envoy.get("/both/1", &[("origin", "null")]);
    assert_eq!(once(&r, "access-control-allow-origin"), "null");
    let r = envoy.get("/both/1", &[("origin", EVIL)]);
    assert_eq!(once(&r, "access-control-allow-origin"), "*");
    envoy.assert_no_wasm_failure();
}

#[test]
fn malformed_repeated_and_oversized_origins_are_refused_never_a_crash() {
    let up = Upstream::start();
    let envoy = start(with(json!({})), &up);
    let long_host = format!("https://{}.example.com", "a".repeat(1100));
    let bad: Vec<String> = [
        " ",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com:0",
        "https://app.example.com:65536",
        "https://app.example.com:99999999999999999999",
        "https://app.example.com:0443",
        "https://app.example.com:",
        "https://app.example.com:-1",
        "https://user@app.example.com",
        "https://user:pw@app.example.com",
        "https://app.example.com.",
        "https://app..example.com",
        "https://.example.com",
        "https://app.example.com?x=1",
        "https://app.example.com#f",
        "https://app.example.com, https://app.example.com",
        "https://app.example.com,https://a.example.com",
        "https://app.example.com https://a.example.com",
        "https://*.example.com",
        "*",
        "https://",
        "https:///",
        "://app.example.com",
        "app.example.com",
        "https:app.example.com",
        "https//app.example.com",
        "https://[::1",
        "https://[zz::1]",
        "nulL",
        "null, null",
        "https://%61pp.example.com",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        long_host,
        format!("https://x.example.com:{}", "1".repeat(300)),
    ])
    .collect();
    for origin in &bad {
        let r = envoy.get("/pets/1", &[("origin", origin)]);
        assert_eq!(r.status, 200, "{origin:?}");
        assert_no_cors(&r, origin);
        let r = preflight(&envoy, "/pets/1", origin, "GET", &[]);
        assert_ne!(r.status, 204, "{origin:?}");
        if r.status == 403 {
            assert_denied(&r, origin);
        } else {
            assert_no_cors(&r, origin);
        }
    }

    // Repeated Origin lines (Envoy joins them with a comma): never allowed.
    let raw = "GET /pets/1 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
               origin: https://app.example.com\r\norigin: https://app.example.com\r\n\r\n";
    let r = raw_request(envoy.port, raw.as_bytes()).unwrap();
    assert_eq!(r.status, 200);
    assert_no_cors(&r, "repeated Origin");
    let raw = "OPTIONS /pets/1 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
               origin: https://app.example.com\r\norigin: https://a.example.com\r\n\
               access-control-request-method: GET\r\n\r\n";
    let r = raw_request(envoy.port, raw.as_bytes()).unwrap();
    assert_denied(&r, "repeated Origin preflight");
    // Repeated or odd request-method and request-headers lines.
    for extra in [
        "access-control-request-method: PUT\r\naccess-control-request-method: GET\r\n",
        "access-control-request-method: GET\r\naccess-control-request-headers: x-api-key\r\n\
         access-control-request-headers: x-nope\r\n",
        "access-control-request-method: GET PUT\r\n",
        "access-control-request-method: ä\r\n",
        "access-control-request-method: GET\r\naccess-control-request-headers: x-api-key;\r\n",
    ] {
        let raw = format!(
            "OPTIONS /pets/1 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
             origin: https://app.example.com\r\n{extra}\r\n"
        );
        let r = raw_request(envoy.port, raw.as_bytes()).unwrap();
        assert_denied(&r, extra);
    }

    // Non-ASCII bytes in Origin: Envoy may refuse the request itself; either way no CORS.
    for bytes in [
        &b"https://app.example.com\xff"[..],
        "https://äpp.example.com".as_bytes(),
        b"https://app.example.com\x01",
    ] {
        for (method, acrm) in [
            ("GET", ""),
            ("OPTIONS", "access-control-request-method: GET\r\n"),
        ] {
            let mut raw =
                format!("{method} /pets/1 HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{acrm}origin: ")
                    .into_bytes();
            raw.extend_from_slice(bytes);
            raw.extend_from_slice(b"\r\n\r\n");
            if let Ok(r) = raw_request(envoy.port, &raw) {
                let what = format!("{method} {}", String::from_utf8_lossy(bytes));
                assert_ne!(r.status, 204, "{what}");
                assert_no_cors(&r, &what);
            }
        }
    }

    // Oversized beyond Envoy's own header limits: refused by Envoy or by the policy.
    let huge = format!("https://{}.example.com", "a".repeat(70_000));
    if let Ok(r) = try_request(envoy.port, "GET", "/pets/1", &[("origin", &huge)], b"") {
        assert_no_cors(&r, "huge origin");
    }

    // The filter is still healthy.
    let r = envoy.get("/pets/1", &[("origin", APP)]);
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    envoy.assert_no_wasm_failure();
}

#[test]
fn a_preflight_for_a_method_route_with_cors_off_reaches_the_upstream_untouched() {
    // `PUT /items/{id}` leaves CORS to its upstream: the preflight asking about PUT goes there
    // as it is, and the upstream's answer comes back without the stage policy's headers.
    let up = Upstream::with(|r| {
        if r.method == "OPTIONS" {
            Reply::ok("")
                .status(204)
                .header(
                    "access-control-allow-origin",
                    "https://upstream.example.net",
                )
                .header("access-control-allow-methods", "PUT")
                .header("access-control-max-age", "7")
        } else {
            Reply::ok("put")
        }
    });
    let cfg = with(json!({"routes": [{"match": "PUT /items/{id}", "cors": false}]}));
    let envoy = start(cfg, &up);
    let r = preflight(&envoy, "/items/1", APP, "PUT", &[]);
    assert_eq!(r.status, 204, "{:?}", r.headers);
    assert_eq!(up.count(), 1, "the upstream answered the preflight");
    assert_eq!(
        once(&r, "access-control-allow-origin"),
        "https://upstream.example.net"
    );
    assert_eq!(once(&r, "access-control-allow-methods"), "PUT");
    assert_eq!(once(&r, "access-control-max-age"), "7");
    assert!(r.header("vary").is_none(), "{:?}", r.headers);
    // A preflight about GET on the same path is the stage policy's.
    let r = preflight(&envoy, "/items/1", APP, "GET", &[]);
    assert_eq!(r.status, 204);
    assert_eq!(up.count(), 1);
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    envoy.assert_no_wasm_failure();
}

#[test]
fn preflight_headers_cannot_pick_a_weaker_route_for_a_forwarded_options() {
    // `GET /x` leaves CORS to its upstream; `ANY /x` needs a key and has a throttle. An OPTIONS
    // that names GET in `Access-Control-Request-Method` goes upstream, but as the OPTIONS
    // request it is: the `ANY` route's key and throttle apply to it.
    let up = Upstream::with(|_| Reply::ok("upstream"));
    let cfg = with(json!({
        "api_key": {"keys": [{"id": "k", "value": "key-1"}]},
        "routes": [
            {"match": "GET /x", "cors": false},
            {"match": "ANY /x", "api_key_required": true, "throttle": {"rate": 0.001, "burst": 1}}
        ]
    }));
    let envoy = start(cfg, &up);
    let r = preflight(&envoy, "/x", EVIL, "GET", &[]);
    assert_eq!(r.status, 403, "no key: {}", r.text());
    let r = preflight(&envoy, "/x", EVIL, "GET", &[("x-api-key", "key-1")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream");
    let r = preflight(&envoy, "/x", EVIL, "GET", &[("x-api-key", "key-1")]);
    assert_eq!(r.status, 429, "the ANY route's throttle");
    assert_eq!(up.count(), 1);
    envoy.assert_no_wasm_failure();
}

#[test]
fn per_route_cors_off_and_override() {
    let up = Upstream::with(|r| {
        let reply = Reply::ok(&format!("seen {} {}", r.method, r.path));
        if r.path.starts_with("/admin") {
            reply.header(
                "access-control-allow-origin",
                "https://upstream.example.net",
            )
        } else {
            reply
        }
    });
    let cfg = with(json!({"routes": [
        {"match": "ANY /admin/{proxy+}", "api_key_required": true, "cors": false},
        {"match": "PUT /pets/{id}", "cors": {
            "allow_origins": ["https://partner.example.org"],
            "allow_methods": ["PUT"],
            "allow_headers": ["x-partner"],
            "max_age": 5
        }},
        {"match": "GET /pets/{id}", "cors": true}
    ], "api_key": {"keys": [{"id": "k", "value": "key-1"}]}}));
    let envoy = start(cfg, &up);
    let partner = "https://partner.example.org";

    // `"cors": false`: an OPTIONS with the preflight headers is an ordinary request there (here
    // it needs the route's API key like any other), and responses are left alone.
    let r = preflight(&envoy, "/admin/users", APP, "GET", &[]);
    assert_eq!(r.status, 403, "no preflight answer on a route without CORS");
    assert_no_cors(&r, "cors false, local 403");
    let r = preflight(
        &envoy,
        "/admin/users",
        APP,
        "GET",
        &[("x-api-key", "key-1")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "seen OPTIONS /admin/users");
    let r = envoy.get("/admin/users", &[("origin", APP), ("x-api-key", "key-1")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        once(&r, "access-control-allow-origin"),
        "https://upstream.example.net"
    );
    assert!(r.header("vary").is_none(), "{:?}", r.headers);
    assert_eq!(up.count(), 2);

    // A route's own policy replaces the stage's (no merging), found by the requested method.
    let r = preflight(
        &envoy,
        "/pets/7",
        partner,
        "PUT",
        &[("access-control-request-headers", "X-Partner")],
    );
    assert_eq!(r.status, 204);
    assert_eq!(once(&r, "access-control-allow-origin"), partner);
    assert_eq!(once(&r, "access-control-allow-methods"), "PUT");
    assert_eq!(once(&r, "access-control-allow-headers"), "x-partner");
    // Not cached: a browser would reuse `x-partner` for a GET (which needs no preflight of its
    // own) to the same URL, whose route's policy allows neither this origin nor that header.
    assert_eq!(once(&r, "access-control-max-age"), "0");
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_denied(
        &preflight(&envoy, "/pets/7", APP, "PUT", &[]),
        "stage origin on the override route",
    );
    assert_denied(
        &preflight(
            &envoy,
            "/pets/7",
            partner,
            "PUT",
            &[("access-control-request-headers", "content-type")],
        ),
        "stage header on the override route",
    );
    // GET /pets/{id} says `true`: the stage policy. DELETE matches no route: the stage too.
    for method in ["GET", "DELETE"] {
        let r = preflight(&envoy, "/pets/7", APP, method, &[]);
        assert_eq!(r.status, 204, "{method}");
        assert_eq!(once(&r, "access-control-allow-methods"), method);
        assert_eq!(once(&r, "access-control-max-age"), "600");
        assert_denied(&preflight(&envoy, "/pets/7", partner, method, &[]), method);
    }
    assert_eq!(up.count(), 2, "preflights never reach the upstream");

    // Actual requests follow the same per-route policies.
    let r = envoy.send("PUT", "/pets/7", &[("origin", partner)]);
    assert_eq!(once(&r, "access-control-allow-origin"), partner);
    assert!(r.header("access-control-allow-credentials").is_none());
    assert_no_cors(&envoy.send("PUT", "/pets/7", &[("origin", APP)]), "PUT app");
    let r = envoy.get("/pets/7", &[("origin", APP)]);
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert_no_cors(&envoy.get("/pets/7", &[("origin", partner)]), "GET partner");
    envoy.assert_no_wasm_failure();
}

#[test]
fn private_network_access_preflights() {
    let up = Upstream::start();
    let cfg = with(json!({"routes": [
        {"match": "ANY /device/{proxy+}", "cors": {
            "allow_origins": [APP], "allow_methods": ["PUT"], "allow_private_network": true}}
    ]}));
    let envoy = start(cfg, &up);
    let pna = ("access-control-request-private-network", "true");

    // Off (the stage policy): a Private Network Access preflight is denied.
    assert_denied(
        &preflight(&envoy, "/pets/1", APP, "GET", &[pna]),
        "PNA without allow_private_network",
    );

    // On: answered, and Vary names the PNA request header.
    let r = preflight(&envoy, "/device/led", APP, "PUT", &[pna]);
    assert_eq!(r.status, 204);
    assert_eq!(once(&r, "access-control-allow-private-network"), "true");
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert_eq!(once(&r, "vary"), PREFLIGHT_VARY_PNA);
    // Not asked for: not sent.
    let r = preflight(&envoy, "/device/led", APP, "PUT", &[]);
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-private-network").is_none());
    assert_eq!(once(&r, "vary"), PREFLIGHT_VARY_PNA);
    // Still subject to the origin check.
    assert_denied(
        &preflight(&envoy, "/device/led", EVIL, "PUT", &[pna]),
        "PNA from a disallowed origin",
    );
    // Actual responses never carry it.
    let r = envoy.send("PUT", "/device/led", &[("origin", APP)]);
    assert_eq!(r.status, 200);
    assert_eq!(once(&r, "access-control-allow-origin"), APP);
    assert!(r.header("access-control-allow-private-network").is_none());
    assert_eq!(up.count(), 1);
    envoy.assert_no_wasm_failure();
}
