//! Hostile input end to end, through the real Envoy 1.40 with the harness's path settings
//! (`normalize_path`, `merge_slashes`; escaped slashes as noted per test): every spelling of a
//! protected path, malformed and oversized headers, odd methods, bodies on GET, and HTTP/2
//! (prior-knowledge h2c) with pseudo-header oddities. Each request gets a definite answer, the
//! upstream never sees a protected resource without a valid key, no throttle is escaped, and the
//! wasm VM never traps (`assert_no_wasm_failure` plus a look at the log).
//!
//! HTTP/2 is spoken by a small frame writer in this file rather than the `h2` crate: `h2` (like
//! every conforming client) refuses to send duplicate or missing pseudo-headers, upper-case names
//! or connection-specific headers, which are exactly what these tests must send. Header blocks
//! are encoded as HPACK literals without Huffman coding; of the answer only `:status` (the
//! first field Envoy sends) and the DATA frames are decoded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const KEY: &str = "good-key-123";

/// A key-required `ANY /admin/{proxy+}` (which covers `/admin` and `/admin/` too: no route of
/// their own, as in the example), a throttled `GET /pets/{id}` (burst 3,
/// no refill to speak of), a key with a roomy plan, CORS, a client throttle by header and the
/// access log (so the log phase reads every hostile value too).
fn hostile_config() -> Value {
    json!({
        "stage": "hostile",
        "api_key": {"keys": [{"id": "k1", "value": KEY, "usage_plan": "roomy"}]},
        "usage_plans": {"roomy": {"throttle": {"rate": 0.001, "burst": 100000}}},
        "client_throttle": {"by": "header:x-client", "rate": 0.001, "burst": 100000, "slots": 64},
        "cors": {"allow_origins": ["https://app.example.com"], "allow_headers": ["x-api-key"],
                 "expose_headers": ["ratelimit"]},
        "access_log": {"format": "json"},
        "routes": [
            {"match": "ANY /admin/{proxy+}", "api_key_required": true},
            {"match": "GET /pets/{id}", "throttle": {"rate": 0.001, "burst": 3}}
        ]
    })
}

fn start(hcm_extra: Value) -> (Upstream, Envoy) {
    let up = Upstream::with(|r| Reply::ok(&format!("{} {}", r.method, r.path)));
    let mut opts = EnvoyOptions::new(hostile_config(), up.port);
    opts.hcm_extra = hcm_extra;
    let envoy = Envoy::start(&opts);
    (up, envoy)
}

/// No trap, no panic, no VM failure: the harness's check, the lines Envoy 1.40 writes for a
/// trap or a hostcall the SDK did not expect, and a VM still alive at the end.
fn assert_vm_healthy(envoy: &Envoy) {
    envoy.assert_no_wasm_failure();
    let log = envoy.log();
    for bad in [
        "unexpected status",
        "wasm trap",
        "Function: proxy_on",
        "RuntimeError",
    ] {
        assert!(!log.contains(bad), "{bad:?} in the Envoy log:\n{log}");
    }
    let stats = envoy.stats();
    let created = stats
        .iter()
        .filter(|(n, _)| n.starts_with("wasm.envoy.wasm.runtime.v8.") && n.ends_with(".created"))
        .map(|(_, v)| *v)
        .sum::<i64>();
    let active = stats
        .get("wasm.envoy.wasm.runtime.v8.active")
        .copied()
        .unwrap_or(-1);
    assert!(
        active >= 1,
        "no live VM (active {active}, created {created})"
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 on the wire

/// Sends raw bytes and reads one response, returning as soon as it is complete (not waiting for
/// Envoy's delayed close). `head`: the response has no body whatever its headers say.
fn exchange(port: u16, raw: &[u8], head: bool) -> Response {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut s, head).unwrap_or_else(|e| panic!("no answer to {:?}: {e}", show(raw)))
}

fn show(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if s.len() > 200 {
        format!("{}... ({} bytes)", &s[..200], raw.len())
    } else {
        s.into_owned()
    }
}

fn read_response(s: &mut TcpStream, head: bool) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_response(&buf)?;
            let body_start = end + 4;
            let have = buf.len() - body_start;
            let chunked = r
                .header("transfer-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            let done = if head || r.status == 204 || r.status == 304 {
                true
            } else if let Some(n) = r.header("content-length") {
                have >= n.parse::<usize>().unwrap_or(0)
            } else if chunked {
                buf.ends_with(b"0\r\n\r\n")
            } else {
                false
            };
            if done {
                return Ok(r);
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return parse_response(&buf);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn get(port: u16, target: &str, headers: &[(&str, &[u8])]) -> Response {
    send(port, "GET", target.as_bytes(), headers, b"")
}

fn send(
    port: u16,
    method: &str,
    target: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> Response {
    let mut raw = format!("{method} ").into_bytes();
    raw.extend_from_slice(target);
    raw.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\n");
    for (n, v) in headers {
        raw.extend_from_slice(n.as_bytes());
        raw.extend_from_slice(b": ");
        raw.extend_from_slice(v);
        raw.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        raw.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    exchange(port, &raw, method == "HEAD")
}

/// A loopback upstream that answers every request with the same raw bytes (for response headers
/// the harness upstream cannot write, such as non-UTF-8 values).
fn raw_upstream(answer: &'static [u8]) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

// ---------------------------------------------------------------------------------------------
// Route bypass

/// What a spelling must get: refused by tollgate (403, no key), refused as malformed (400, by
/// Envoy or tollgate), or forwarded because it names another resource, with the path the
/// upstream then receives.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    Forbidden,
    BadRequest,
    Elsewhere(&'static str),
}

const ADMIN_SPELLINGS: &[(&str, Want)] = &[
    ("/admin", Want::Forbidden),
    ("/admin/users", Want::Forbidden),
    ("/admin/", Want::Forbidden),
    ("/admin//", Want::Forbidden),
    ("//admin", Want::Forbidden),
    ("//admin//users", Want::Forbidden),
    ("/%61dmin", Want::Forbidden),
    ("/%61%64%6D%69%6E/users", Want::Forbidden),
    ("/adm%69n/", Want::Forbidden),
    ("/admin;x", Want::Forbidden),
    ("/admin;jsessionid=1/users", Want::Forbidden),
    ("/x/../admin", Want::Forbidden),
    ("/x/%2e%2e/admin", Want::Forbidden),
    ("/x/.%2E/admin/users", Want::Forbidden),
    ("/./admin", Want::Forbidden),
    ("/admin/.", Want::Forbidden),
    ("/admin/users/..", Want::Forbidden),
    ("/admin/users/./", Want::Forbidden),
    ("/../../admin", Want::Forbidden),
    ("/admin\\users", Want::Forbidden),
    ("/x\\..\\admin", Want::Forbidden),
    ("/admin?x=1", Want::Forbidden),
    ("/admin/?", Want::Forbidden),
    ("/admin/users.", Want::Forbidden),
    ("/admin/.;/users", Want::Forbidden),
    // `;` sent as `%3B` is read as a raw `;`, whatever the upstream does with it.
    ("/admin%3Bx", Want::Forbidden),
    ("/admin%3bjsessionid=1/users", Want::Forbidden),
    ("http://localhost/admin/users", Want::Forbidden),
    ("http://evil.example/admin", Want::Forbidden),
    // Envoy resolves `..;` as a dot segment itself and forwards the result.
    ("/admin/..;/x", Want::Elsewhere("/x")),
    // ...but not once it has decoded `%2e`: a `..;` segment then reaches tollgate, where
    // servlet containers and other servers would disagree on the route: refused.
    ("/admin/%2e%2e;/x", Want::BadRequest),
    ("/admin/.%2e;x=1/x", Want::BadRequest),
    ("/x/%2e;/admin", Want::BadRequest),
    ("/;x/admin", Want::BadRequest),
    ("/%3Bx/admin", Want::BadRequest),
    ("/x/%2e%2e%3B/admin", Want::BadRequest),
    // Envoy refuses NUL, fragments and raw spaces.
    ("/admin%00", Want::BadRequest),
    ("/admin#frag", Want::BadRequest),
    // Different resources: routes are case-sensitive, a trailing dot is part of the name, and
    // an encoded slash is data (the harness keeps it; see the escaped-slash test).
    ("/ADMIN", Want::Elsewhere("/ADMIN")),
    ("/Admin/users", Want::Elsewhere("/Admin/users")),
    ("/admin.", Want::Elsewhere("/admin.")),
    ("/admin..", Want::Elsewhere("/admin..")),
    ("/admin%2Fusers", Want::Elsewhere("/admin%2Fusers")),
    ("/admin%2fusers", Want::Elsewhere("/admin%2fusers")),
    ("/%2561dmin", Want::Elsewhere("/%2561dmin")),
    // `?` and `#` sent encoded are data: part of the name, not a query or fragment.
    ("/admin%3F", Want::Elsewhere("/admin%3F")),
    ("/admin%23", Want::Elsewhere("/admin%23")),
];

#[test]
fn no_spelling_reaches_admin_without_a_key() {
    let (up, envoy) = start(json!({}));
    let mut failures = Vec::new();
    for (spelling, want) in ADMIN_SPELLINGS {
        for method in ["GET", "DELETE", "HEAD"] {
            let before = up.count();
            let r = send(envoy.port, method, spelling.as_bytes(), &[], b"");
            let got_up: Vec<String> = up.requests()[before..]
                .iter()
                .map(|s| s.path.clone())
                .collect();
            let ok = match want {
                Want::Forbidden => {
                    r.status == 403
                        && got_up.is_empty()
                        && (method == "HEAD" || r.text() == r#"{"message":"Forbidden"}"#)
                }
                Want::BadRequest => r.status == 400 && got_up.is_empty(),
                Want::Elsewhere(p) => r.status == 200 && got_up == [p.to_string()],
            };
            if !ok {
                failures.push(format!(
                    "{method} {spelling}: want {want:?}, got {} {:?}, upstream saw {got_up:?}",
                    r.status,
                    r.text()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The same spellings with the key reach the upstream (the routes do work).
    for spelling in [
        "/admin",
        "//admin",
        "/%61dmin/users",
        "/admin;x",
        "/x/../admin/users",
    ] {
        let r = get(envoy.port, spelling, &[("x-api-key", KEY.as_bytes())]);
        assert_eq!(r.status, 200, "{spelling} with the key");
    }
    // Nothing the upstream ever received lies under /admin.
    for seen in up.requests() {
        let p = seen.path.split('?').next().unwrap();
        let under_admin = p == "/admin" || p.starts_with("/admin/") || p.starts_with("/admin;");
        let had_key = seen.header("x-api-key").as_deref() == Some(KEY);
        assert!(
            !under_admin || had_key,
            "{p} reached the upstream without the key"
        );
    }
    assert_vm_healthy(&envoy);
}

#[test]
fn encoded_reserved_characters_do_not_skip_a_key_required_literal_route() {
    // Envoy's normalize_path leaves `%3A` as sent; upstreams such as Django, Flask or Spring
    // decode it and serve the `:batchDelete` resource. tollgate must apply that route too, not
    // the open catch-all.
    let up = Upstream::with(|r| Reply::ok(&format!("{} {}", r.method, r.path)));
    let config = json!({
        "api_key": {"keys": [{"id": "k1", "value": KEY}]},
        "routes": [
            {"match": "POST /v1/items:batchDelete", "api_key_required": true},
            {"match": "ANY /{proxy+}"}
        ]
    });
    let envoy = Envoy::start(&EnvoyOptions::new(config, up.port));
    for p in [
        "/v1/items:batchDelete",
        "/v1/items%3AbatchDelete",
        "/v1/items%3abatchDelete",
        "/v1/items%3A%62atchDelete",
        "/v1/items%3AbatchDelete?x=1",
        "/v1/items%3AbatchDelete%3Bx=1",
    ] {
        let r = send(envoy.port, "POST", p.as_bytes(), &[], b"");
        assert_eq!(
            (r.status, r.text().as_str()),
            (403, r#"{"message":"Forbidden"}"#),
            "POST {p}"
        );
    }
    assert_eq!(up.count(), 0);
    // A `;` sent encoded is refused where a raw one is.
    let r = send(envoy.port, "POST", b"/%3Bx/v1/items:batchDelete", &[], b"");
    assert_eq!(r.status, 400);
    assert_eq!(up.count(), 0);
    // With the key the request goes through, and the upstream gets the path as sent.
    let r = send(
        envoy.port,
        "POST",
        b"/v1/items%3AbatchDelete",
        &[("x-api-key", KEY.as_bytes())],
        b"",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "POST /v1/items%3AbatchDelete");
    // Other resources stay open.
    let r = send(envoy.port, "POST", b"/v1/items%3Abatch", &[], b"");
    assert_eq!(r.status, 200);
    assert_vm_healthy(&envoy);
}

#[test]
fn case_is_significant_and_the_upstream_gets_what_was_sent() {
    // API Gateway routes are case-sensitive: /ADMIN is another resource. tollgate forwards it
    // untouched; an upstream that folds case must not be put behind case-sensitive routes.
    let (up, envoy) = start(json!({}));
    let r = get(envoy.port, "/ADMIN/users?q=1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "GET /ADMIN/users?q=1");
    assert_eq!(up.requests().last().unwrap().path, "/ADMIN/users?q=1");
    assert!(r.header("ratelimit").is_some());
    assert_vm_healthy(&envoy);
}

#[test]
fn escaped_slashes_as_the_example_sets_them_are_refused() {
    // envoy/envoy.yaml sets path_with_escaped_slashes_action: REJECT_REQUEST, so an upstream
    // that decodes %2F or %5C before routing (WSGI, older Go) can never be handed
    // /admin%2Fusers (tollgate keeps both escaped, as data).
    let (up, envoy) = start(json!({"path_with_escaped_slashes_action": "REJECT_REQUEST"}));
    for p in [
        "/admin%2Fusers",
        "/admin%2fusers",
        "/x%2F..%2Fadmin",
        "/pets%2F1",
        "/admin%5Cusers",
        "/x%5c..%5cadmin",
    ] {
        assert_eq!(get(envoy.port, p, &[]).status, 400, "{p}");
    }
    assert_eq!(up.count(), 0);
    let yaml = std::fs::read_to_string(repo_root().join("envoy/envoy.yaml")).unwrap();
    assert!(yaml.contains("path_with_escaped_slashes_action: REJECT_REQUEST"));
    assert!(
        !envoy.log().contains("escaped slash"),
        "Envoy refused them: tollgate saw none"
    );
    assert_vm_healthy(&envoy);
}

/// Where Envoy forwards escaped slashes unchanged (its default, and Istio's), tollgate tells
/// the operator once per worker when it first sees one.
#[test]
fn escaped_slashes_forwarded_by_envoy_are_told_once() {
    let up = Upstream::start();
    let mut opts = EnvoyOptions::new(hostile_config(), up.port);
    opts.hcm_extra = json!({"path_with_escaped_slashes_action": "KEEP_UNCHANGED"});
    opts.concurrency = 1;
    let envoy = Envoy::start(&opts);
    assert_eq!(get(envoy.port, "/pets/1", &[]).status, 200);
    assert_eq!(get(envoy.port, "/pets/a?x=%2F", &[]).status, 200);
    assert!(!envoy.log().contains("escaped slash"));
    for p in ["/admin%2Fusers", "/pets%5c1", "/admin%2fx"] {
        get(envoy.port, p, &[]);
    }
    let line = "tollgate: a request path holds an escaped slash (%2F or %5C)";
    envoy.wait_log("the escaped-slash warning", |l| l.contains(line));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(envoy.log().matches(line).count(), 1, "once per worker");
    assert_vm_healthy(&envoy);
}

#[test]
fn no_spelling_escapes_the_route_throttle() {
    let (up, envoy) = start(json!({}));
    let mut statuses = Vec::new();
    for spelling in [
        "/pets/1",
        "/pets/1/",
        "//pets//1",
        "/%70ets/1",
        "/pets/%31",
        "/pets;x/1",
        "/pets/1;jsessionid=2",
        "/pets/./1",
        "/x/../pets/1",
        "/pets/1?page=2",
        "http://localhost/pets/1",
        "/pets/2",
        "/pets/1.",
    ] {
        for method in ["GET", "HEAD"] {
            let r = send(envoy.port, method, spelling.as_bytes(), &[], b"");
            statuses.push((method, spelling, r.status));
        }
    }
    let admitted: Vec<_> = statuses.iter().filter(|(_, _, s)| *s == 200).collect();
    assert_eq!(admitted.len(), 3, "burst 3: {statuses:?}");
    assert!(
        statuses.iter().all(|(_, _, s)| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert_eq!(up.count(), 3);
    // A different resource is not throttled by this route.
    assert_eq!(get(envoy.port, "/PETS/1", &[]).status, 200);
    assert_vm_healthy(&envoy);
}

// ---------------------------------------------------------------------------------------------
// Hostile headers

#[test]
fn non_utf8_header_values_get_clean_answers() {
    let up_port = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nvary: Accept\xff\xfe\r\nx-odd: \xc3\x28\r\n\r\nok",
    );
    let mut opts = EnvoyOptions::new(hostile_config(), up_port);
    opts.concurrency = 1;
    let envoy = Envoy::start(&opts);
    let p = envoy.port;
    // In the key header: no key matches, 403 on any route.
    assert_eq!(
        get(p, "/admin/x", &[("x-api-key", b"good-key-123\xff")]).status,
        403
    );
    assert_eq!(
        get(p, "/open", &[("x-api-key", b"\xc3\x28\xa0\xa1")]).status,
        403
    );
    // In Origin: not a valid origin, so no CORS headers, but the request goes on.
    let r = get(p, "/open", &[("origin", b"https://app.example.com\xff")]);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    // The allowed origin still works, and the upstream's non-UTF-8 Vary is merged, not trapped on.
    let r = get(p, "/open", &[("origin", b"https://app.example.com")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    // In the client-throttle header, the user agent and any other header.
    for (n, v) in [
        ("x-client", &b"\xff\xfe\xfd"[..]),
        ("user-agent", b"curl\x80\x81"),
        ("x-anything", b"\xf0\x9f\x92"),
        ("access-control-request-method", b"G\xc9T"),
    ] {
        assert_eq!(get(p, "/open", &[(n, v)]).status, 200, "{n}");
    }
    // A preflight with non-UTF-8 everywhere: refused, 403.
    let r = send(
        p,
        "OPTIONS",
        b"/pets/1",
        &[
            ("origin", b"https://app.example.com"),
            ("access-control-request-method", b"PU\xd4"),
            ("access-control-request-headers", b"x-api-key, \xff"),
        ],
        b"",
    );
    assert_eq!(r.status, 403);
    // In the path: Envoy refuses raw bytes above 0x7f in the request line, or tollgate escapes
    // them; either way no trap.
    let r = get(p, "/admin\u{0}", &[]);
    assert_eq!(r.status, 400);
    let raw = b"GET /admin/\xff\xfe HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let r = exchange(p, raw, false);
    assert!(r.status == 400 || r.status == 403, "{}", r.status);
    assert_vm_healthy(&envoy);
}

#[test]
fn oversized_and_repeated_headers() {
    // Envoy's defaults (60 KiB of headers, 100 headers) answer 431 before any filter runs.
    let (up, envoy) = start(json!({}));
    let big = vec![b'k'; 61 * 1024];
    assert_eq!(
        get(envoy.port, "/admin/x", &[("x-api-key", &big)]).status,
        431
    );
    let many: Vec<(&str, &[u8])> = (0..1000).map(|_| ("x-api-key", &b"nope"[..])).collect();
    assert_eq!(get(envoy.port, "/open", &many).status, 431);
    assert_eq!(up.count(), 0);
    assert_vm_healthy(&envoy);
    drop(envoy);

    // With the limits raised, the filter itself sees 60 KB values and 1,000 repeats.
    let (up, envoy) = start(json!({
        "max_request_headers_kb": 128,
        "common_http_protocol_options": {"max_headers_count": 3000}
    }));
    let p = envoy.port;
    let key60 = vec![b'k'; 60 * 1024];
    assert_eq!(get(p, "/admin/x", &[("x-api-key", &key60)]).status, 403);
    let origin60 = [
        b"https://".as_slice(),
        &vec![b'a'; 60 * 1024],
        b".example.com",
    ]
    .concat();
    let r = get(p, "/open", &[("origin", &origin60)]);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(get(p, "/open", &[("x-client", &key60)]).status, 200);
    assert_eq!(get(p, "/open", &[("user-agent", &key60)]).status, 200);
    let path60 = format!("/admin{}", "/a".repeat(30 * 1024));
    assert_eq!(get(p, &path60, &[]).status, 403);
    assert_eq!(
        get(p, &path60, &[("x-api-key", KEY.as_bytes())]).status,
        200
    );
    let dots = format!("/admin{}", "/..".repeat(20 * 1024));
    assert_eq!(get(p, &dots, &[]).status, 200, "resolves to /");
    // 1,000 bad keys, then the good one, and the good one followed by 1,000 bad ones: a key
    // header sent more than once is refused, wherever the good copy is.
    let mut hs: Vec<(&str, &[u8])> = (0..1000).map(|_| ("x-api-key", &b"nope"[..])).collect();
    hs.push(("x-api-key", KEY.as_bytes()));
    assert_eq!(get(p, "/admin/x", &hs).status, 403);
    let mut hs: Vec<(&str, &[u8])> = vec![("x-api-key", KEY.as_bytes())];
    hs.extend((0..1000).map(|_| ("x-api-key", &b"nope"[..])));
    assert_eq!(get(p, "/admin/x", &hs).status, 403);
    let r = get(p, "/admin/x", &[("x-api-key", KEY.as_bytes())]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("ratelimit").unwrap().contains("\"plan\""),
        "{:?}",
        r.headers
    );
    // 1,000 origins: Envoy joins repeated Origin headers with commas (it is one of its inline
    // headers), and a list is never an allowed origin.
    let mut hs: Vec<(&str, &[u8])> = vec![("origin", b"https://app.example.com")];
    hs.extend((0..1000).map(|_| ("origin", &b"https://app.example.com"[..])));
    let r = get(p, "/open", &hs);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    // 1,000 distinct headers of every other kind.
    let names: Vec<String> = (0..1000).map(|i| format!("x-h{i}")).collect();
    let hs: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"v"[..])).collect();
    assert_eq!(get(p, "/open", &hs).status, 200);
    assert!(up.count() >= 6);
    assert_vm_healthy(&envoy);
}

#[test]
fn several_key_and_origin_headers() {
    let (up, envoy) = start(json!({}));
    let p = envoy.port;
    let r = get(
        p,
        "/admin/x",
        &[("x-api-key", b"nope"), ("x-api-key", KEY.as_bytes())],
    );
    assert_eq!(r.status, 403);
    let r = get(
        p,
        "/admin/x",
        &[("x-api-key", b""), ("x-api-key", KEY.as_bytes())],
    );
    assert_eq!(r.status, 403);
    let r = get(
        p,
        "/admin/x",
        &[("x-api-key", KEY.as_bytes()), ("x-api-key", b"nope")],
    );
    assert_eq!(r.status, 403, "a key header sent twice");
    // A comma-joined list is one (wrong) value.
    let joined = format!("{KEY}, {KEY}");
    assert_eq!(
        get(p, "/admin/x", &[("x-api-key", joined.as_bytes())]).status,
        403
    );
    // Two Origins reach the filter comma-joined (Origin is one of Envoy's inline headers), and
    // a list is never an allowed origin: no CORS headers, whichever comes first.
    for pair in [
        [&b"https://app.example.com"[..], b"https://evil"],
        [b"https://evil", b"https://app.example.com"],
    ] {
        let r = get(p, "/open", &[("origin", pair[0]), ("origin", pair[1])]);
        assert_eq!(r.status, 200);
        assert!(r.header("access-control-allow-origin").is_none());
    }
    let r = get(
        p,
        "/open",
        &[("origin", b"https://app.example.com, https://evil")],
    );
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(up.count(), 3);
    assert_vm_healthy(&envoy);
}

#[test]
fn odd_methods_paths_and_bodies() {
    let (up, envoy) = start(json!({"http_protocol_options": {"allow_custom_methods": true}}));
    let p = envoy.port;
    // Envoy answers a request line without a path or with a bad version itself.
    for raw in [
        &b"GET  HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        b"GET HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /admin HTTP/9.9\r\nhost: x\r\n\r\n", // 426 Upgrade Required
        b"GET * HTTP/1.1\r\nhost: x\r\n\r\n",
    ] {
        let r = exchange(p, raw, false);
        assert!(
            matches!(r.status, 400 | 426 | 505),
            "{:?} -> {}",
            show(raw),
            r.status
        );
    }
    // Unknown and lower-case methods: ANY covers them on /admin; on /pets/{id} a method that
    // is not GET (or HEAD) is another route, and the upstream sees the method as sent. A
    // method in another case is the route's (Flask, Django, ASP.NET Core route `get` to their
    // GET handler): it takes the GET route's token.
    for m in ["FOO", "get", "PROPFIND", "BREW", "M-SEARCH"] {
        assert_eq!(send(p, m, b"/admin/x", &[], b"").status, 403, "{m}");
        let r = send(p, m, b"/pets/9", &[], b"");
        assert_eq!(r.status, 200, "{m}");
        assert_eq!(r.text(), format!("{m} /pets/9"));
        let policy = r.header("ratelimit-policy").unwrap_or_default();
        assert_eq!(policy.contains("\"route\""), m == "get", "{m}: {policy}");
    }
    // Bodies on GET: the key decides, the body is not read by the filter and reaches the
    // upstream intact when the request is admitted.
    let body = vec![b'b'; 100_000];
    let r = send(p, "GET", b"/admin/x", &[], &body);
    assert_eq!(r.status, 403);
    let r = send(
        p,
        "GET",
        b"/admin/x",
        &[("x-api-key", KEY.as_bytes())],
        &body,
    );
    assert_eq!(r.status, 200);
    assert_eq!(up.requests().last().unwrap().body.len(), body.len());
    let chunked = b"GET /admin/x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(exchange(p, chunked, false).status, 403);
    // Request smuggling shapes are Envoy's to refuse.
    let smuggle = b"GET /open HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nhost: x\r\n\r\n";
    let r = exchange(p, smuggle, false);
    assert!(r.status == 400 || r.status == 200, "{}", r.status);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        up.requests().iter().all(|s| !s.path.starts_with("/admin") || s.header("x-api-key").as_deref() == Some(KEY)),
        "a smuggled /admin request reached the upstream"
    );
    assert_vm_healthy(&envoy);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2, prior knowledge

/// What came back on stream 1.
#[derive(Debug, PartialEq)]
enum H2 {
    Status(u16, Vec<u8>),
    Reset(u32),
    GoAway(u32),
    Closed,
}

fn hpack_int(out: &mut Vec<u8>, first: u8, prefix_bits: u32, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// An HPACK block of literal fields without indexing, new names, no Huffman coding: any bytes
/// at all can be sent, in any order, repeated or upper-case.
fn hpack_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, n.len());
        out.extend_from_slice(n);
        hpack_int(&mut out, 0, 7, v.len());
        out.extend_from_slice(v);
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Decodes a Huffman-coded `:status` (digits only: RFC 7541 Appendix B gives 0-2 five-bit
/// codes 0b00000..0b00010 and 3-9 six-bit codes 0b011001..0b011111).
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let mut i = 0;
    let mut out = String::new();
    let take = |i: usize, n: usize| -> Option<u32> {
        (i + n <= bits.len()).then(|| {
            bits[i..i + n]
                .iter()
                .fold(0u32, |a, b| a << 1 | u32::from(*b))
        })
    };
    while i < bits.len() {
        if bits[i..].iter().all(|b| *b == 1) && bits.len() - i < 8 {
            break; // EOS padding
        }
        let five = take(i, 5)?;
        if five <= 2 {
            out.push(char::from(b'0' + five as u8));
            i += 5;
            continue;
        }
        let six = take(i, 6)?;
        if (0x19..=0x1f).contains(&six) {
            out.push(char::from(b'3' + (six - 0x19) as u8));
            i += 6;
            continue;
        }
        return None;
    }
    Some(out)
}

fn hpack_read_int(b: &[u8], pos: &mut usize, prefix_bits: u32) -> usize {
    let max = (1usize << prefix_bits) - 1;
    let mut v = usize::from(b[*pos]) & max;
    *pos += 1;
    if v < max {
        return v;
    }
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return v;
        }
    }
}

/// `:status` from the first field of a response header block.
fn status_of(block: &[u8]) -> u16 {
    const STATIC: [(usize, u16); 7] = [
        (8, 200),
        (9, 204),
        (10, 206),
        (11, 304),
        (12, 400),
        (13, 404),
        (14, 500),
    ];
    let mut pos = 0;
    while block[pos] & 0xe0 == 0x20 {
        hpack_read_int(block, &mut pos, 5); // dynamic table size update
    }
    let first = block[pos];
    if first & 0x80 != 0 {
        let idx = hpack_read_int(block, &mut pos, 7);
        return STATIC
            .iter()
            .find(|(i, _)| *i == idx)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("first field is static index {idx}, not :status"));
    }
    let prefix = if first & 0x40 != 0 { 6 } else { 4 };
    let name = hpack_read_int(block, &mut pos, prefix);
    assert!(
        (8..=14).contains(&name),
        "first field is not :status: {block:?}"
    );
    let huffman = block[pos] & 0x80 != 0;
    let len = hpack_read_int(block, &mut pos, 7);
    let raw = &block[pos..pos + len];
    let text = if huffman {
        huffman_digits(raw).unwrap()
    } else {
        String::from_utf8(raw.to_vec()).unwrap()
    };
    text.parse().unwrap()
}

/// Sends one request on stream 1 of a fresh h2c connection: `fields` in the given order (pseudo
/// headers included, as raw names), then `body` in a DATA frame when not empty.
fn h2_request(port: u16, fields: &[(&[u8], &[u8])], body: &[u8]) -> H2 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    let block = hpack_block(fields);
    let end_stream = if body.is_empty() { 0x1 } else { 0 };
    // HEADERS, then CONTINUATION frames for blocks over the default 16 KiB frame size.
    let mut chunks = block.chunks(16384).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let only = chunks.peek().is_none();
    out.extend(frame(
        0x1,
        end_stream | if only { 0x4 } else { 0 },
        1,
        first,
    ));
    while let Some(c) = chunks.next() {
        let last = chunks.peek().is_none();
        out.extend(frame(0x9, if last { 0x4 } else { 0 }, 1, c));
    }
    if !body.is_empty() {
        for (i, c) in body.chunks(16384).enumerate() {
            let last = (i + 1) * 16384 >= body.len();
            out.extend(frame(0x0, if last { 0x1 } else { 0 }, 1, c));
        }
    }
    if s.write_all(&out).is_err() {
        return H2::Closed;
    }
    let mut buf = Vec::new();
    let mut status: Option<u16> = None;
    let mut data = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                0x1 if stream == 1 => {
                    let mut p = &payload[..];
                    if flags & 0x8 != 0 {
                        let pad = usize::from(p[0]);
                        p = &p[1..p.len() - pad];
                    }
                    if flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    if status.is_none() {
                        status = Some(status_of(p));
                    }
                    if flags & 0x1 != 0 {
                        return H2::Status(status.unwrap(), data);
                    }
                }
                0x0 if stream == 1 => {
                    data.extend_from_slice(&payload);
                    if flags & 0x1 != 0 {
                        return H2::Status(status.unwrap_or(0), data);
                    }
                }
                0x3 if stream == 1 => {
                    return match status {
                        Some(st) => H2::Status(st, data),
                        None => H2::Reset(u32::from_be_bytes(payload[..4].try_into().unwrap())),
                    };
                }
                0x7 => {
                    if let Some(st) = status {
                        return H2::Status(st, data);
                    }
                    return H2::GoAway(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                _ => {}
            }
        }
        assert!(Instant::now() < deadline, "no h2 answer to {fields:?}");
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                return match status {
                    Some(st) => H2::Status(st, data),
                    None => H2::Closed,
                }
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Header fields of an HTTP/2 request, in order, pseudo-headers included.
type Fields<'a> = Vec<(&'a [u8], &'a [u8])>;

fn req<'a>(method: &'a [u8], path: &'a [u8]) -> Fields<'a> {
    vec![
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", b"localhost"),
        (b":path", path),
    ]
}

fn with<'a>(mut f: Fields<'a>, extra: &[(&'a [u8], &'a [u8])]) -> Fields<'a> {
    f.extend_from_slice(extra);
    f
}

#[test]
fn http2_with_pseudo_header_oddities() {
    let (up, envoy) = start(json!({
        "codec_type": "AUTO",
        "http2_protocol_options": {"max_concurrent_streams": 100}
    }));
    let p = envoy.port;
    let key = KEY.as_bytes();
    let forbidden = H2::Status(403, br#"{"message":"Forbidden"}"#.to_vec());

    // Plain h2c works and is gated like HTTP/1.1.
    assert_eq!(h2_request(p, &req(b"GET", b"/admin/x"), b""), forbidden);
    assert!(matches!(
        h2_request(
            p,
            &with(req(b"GET", b"/admin/x"), &[(b"x-api-key", key)]),
            b""
        ),
        H2::Status(200, _)
    ));
    for spelling in [
        "//admin",
        "/%61dmin/x",
        "/admin;x",
        "/x/../admin",
        "/admin/",
        "/ADMIN/../admin",
    ] {
        assert_eq!(
            h2_request(p, &req(b"GET", spelling.as_bytes()), b""),
            forbidden,
            "{spelling}"
        );
    }
    assert!(matches!(
        h2_request(p, &req(b"GET", b"/admin/%2e%2e;/x"), b""),
        H2::Status(400, _)
    ));

    // Oddities. `R`: Envoy's codec refuses the request (it closes the connection, resets the
    // stream or answers 400) before any filter runs; a number: the answer once Envoy accepted
    // it (403: tollgate saw the path under /admin and no valid key).
    const R: u16 = 0;
    let cases: Vec<(&str, u16, Fields)> = vec![
        (
            "duplicate :path",
            R,
            with(req(b"GET", b"/open"), &[(b":path", b"/admin/x")]),
        ),
        (
            "duplicate :path, admin first",
            R,
            with(req(b"GET", b"/admin/x"), &[(b":path", b"/open")]),
        ),
        (
            "duplicate :method",
            R,
            with(req(b"GET", b"/admin/x"), &[(b":method", b"OPTIONS")]),
        ),
        (
            "missing :path",
            R,
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"x"),
            ],
        ),
        (
            "missing :method",
            R,
            vec![
                (b":scheme", b"http"),
                (b":authority", b"x"),
                (b":path", b"/admin"),
            ],
        ),
        ("empty :path", R, req(b"GET", b"")),
        ("relative :path", R, req(b"GET", b"admin/x")),
        (
            "absolute :path",
            R,
            req(b"GET", b"http://localhost/admin/x"),
        ),
        ("asterisk :path", R, req(b"GET", b"*")),
        ("OPTIONS * (no route in Envoy)", 404, req(b"OPTIONS", b"*")),
        ("space in :path", R, req(b"GET", b"/admin /x")),
        ("NUL in :path", R, req(b"GET", b"/admin\x00/x")),
        ("non-UTF-8 :path", 403, req(b"GET", b"/admin/\xff\xfe")),
        (
            "pseudo after regular",
            R,
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b"x-a", b"1"),
                (b":authority", b"x"),
                (b":path", b"/admin"),
            ],
        ),
        (
            "unknown pseudo",
            R,
            with(req(b"GET", b"/admin"), &[(b":foo", b"bar")]),
        ),
        (
            "upper-case name",
            R,
            with(req(b"GET", b"/admin/x"), &[(b"X-Api-Key", key)]),
        ),
        (
            "connection header",
            R,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"connection", b"keep-alive"), (b"x-api-key", key)],
            ),
        ),
        (
            "te: gzip",
            R,
            with(req(b"GET", b"/admin/x"), &[(b"te", b"gzip")]),
        ),
        (
            "CR in a value",
            R,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"x-api-key", b"a\r\nx-api-key: good-key-123")],
            ),
        ),
        ("empty method", R, req(b"", b"/admin/x")),
        ("CONNECT with :path", R, req(b"CONNECT", b"/admin/x")),
        (
            ":protocol without CONNECT",
            R,
            with(req(b"GET", b"/admin/x"), &[(b":protocol", b"websocket")]),
        ),
        (
            "authority with userinfo",
            R,
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"u@x"),
                (b":path", b"/admin"),
            ],
        ),
        ("lower-case method", 403, req(b"get", b"/admin/x")),
        ("unknown method", 403, req(b"FOO", b"/admin/x")),
        (
            "ftp scheme",
            403,
            vec![
                (b":method", b"GET"),
                (b":scheme", b"ftp"),
                (b":authority", b"x"),
                (b":path", b"/admin"),
            ],
        ),
        (
            "no :authority, host header",
            403,
            vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/admin"),
                (b"host", b"x"),
            ],
        ),
        (
            "empty key",
            403,
            with(req(b"GET", b"/admin/x"), &[(b"x-api-key", b"")]),
        ),
        (
            "non-UTF-8 key",
            403,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"x-api-key", b"good-key-123\xff")],
            ),
        ),
        (
            "bad key then good",
            403,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"x-api-key", b"no"), (b"x-api-key", key)],
            ),
        ),
        (
            "non-UTF-8 origin",
            403,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"origin", b"https://\xffapp.example.com")],
            ),
        ),
        (
            "good key then bad",
            403,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"x-api-key", key), (b"x-api-key", b"no")],
            ),
        ),
        (
            "good key twice",
            403,
            with(
                req(b"GET", b"/admin/x"),
                &[(b"x-api-key", key), (b"x-api-key", key)],
            ),
        ),
        (
            "one good key",
            200,
            with(req(b"GET", b"/admin/x"), &[(b"x-api-key", key)]),
        ),
    ];
    // Refused connections close after Envoy's 1 s delayed-close timeout: run the cases at once.
    let before = up.count();
    let results: Vec<H2> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(_, _, fields)| scope.spawn(move || h2_request(p, fields, b"")))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for ((name, want, _), got) in cases.iter().zip(&results) {
        let ok = match (got, *want) {
            (H2::Closed | H2::Reset(_) | H2::GoAway(_) | H2::Status(400, _), R) => true,
            (H2::Status(s, _), w) => *s == w,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: want {want}, got {got:?}"));
        }
    }
    // Only the request with one good key reached the upstream: a key header sent twice is
    // refused, whichever copy is good.
    let forwarded = up.requests()[before..].to_vec();
    assert_eq!(forwarded.len(), 1, "{forwarded:?}");
    assert_eq!(forwarded[0].header("x-api-key").as_deref(), Some(KEY));
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // 60 KB of headers over CONTINUATION frames, and 1,000 repeated headers, are Envoy's limits
    // to enforce (431 or a reset); under the limits the filter answers as in HTTP/1.1.
    let big = vec![b'k'; 61 * 1024];
    let got = h2_request(
        p,
        &with(req(b"GET", b"/admin/x"), &[(b"x-api-key", &big)]),
        b"",
    );
    assert!(matches!(got, H2::Status(431, _) | H2::Reset(_)), "{got:?}");
    let mid = vec![b'k'; 40 * 1024];
    assert_eq!(
        h2_request(
            p,
            &with(req(b"GET", b"/admin/x"), &[(b"x-api-key", &mid)]),
            b""
        ),
        forbidden
    );
    let many: Vec<(&[u8], &[u8])> = (0..1000)
        .map(|_| (&b"x-api-key"[..], &b"nope"[..]))
        .collect();
    let got = h2_request(p, &with(req(b"GET", b"/admin/x"), &many), b"");
    assert!(
        matches!(got, H2::Status(431 | 403, _) | H2::Reset(_)),
        "{got:?}"
    );

    // A GET with a body over h2: gated by the key, body delivered when admitted.
    let body = vec![b'z'; 40_000];
    assert_eq!(h2_request(p, &req(b"GET", b"/admin/x"), &body), forbidden);
    let len = body.len().to_string();
    let got = h2_request(
        p,
        &with(
            req(b"GET", b"/admin/x"),
            &[(b"x-api-key", key), (b"content-length", len.as_bytes())],
        ),
        &body,
    );
    assert!(matches!(got, H2::Status(200, _)), "{got:?}");
    assert_eq!(up.requests().last().unwrap().body.len(), body.len());

    // The route throttle holds across protocols: burst 3 on /pets/{id}.
    let mut admitted = 0;
    for i in 0..6 {
        let got = if i % 2 == 0 {
            h2_request(p, &req(b"GET", b"/pets/5"), b"")
        } else {
            H2::Status(get(p, "/pets/5", &[]).status, Vec::new())
        };
        if matches!(got, H2::Status(200, _)) {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    assert_vm_healthy(&envoy);
}

#[test]
fn hpack_helpers_agree_with_the_rfc() {
    // RFC 7541 C.6.1: ":status: 302" Huffman-coded is 0x64 0x02.
    assert_eq!(huffman_digits(&[0x64, 0x02]).as_deref(), Some("302"));
    assert_eq!(status_of(&[0x48, 0x82, 0x64, 0x02]), 302);
    assert_eq!(status_of(&[0x88]), 200);
    assert_eq!(status_of(&[0x48, 0x03, b'4', b'2', b'9']), 429);
    let mut v = Vec::new();
    hpack_int(&mut v, 0, 5, 1337);
    assert_eq!(v, [31, 154, 10]); // RFC 7541 C.1.2
}
