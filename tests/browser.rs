//! CORS proven in a real browser: Debian's headless Chromium, driven by playwright-core
//! (tests/browser/cors.mjs), loads tests/browser/page.html from one loopback origin, and the
//! page's own script calls the API on another loopback origin through Envoy with tollgate: a
//! simple GET, a preflighted PUT with a custom header, a credentialed request (and one the
//! browser must refuse for lack of `Access-Control-Allow-Credentials`), tollgate's own 403 and
//! 429 read as JSON, and, from a second page origin that is not allowed, requests the browser
//! must block. The browser, not this test, enforces CORS: the test only reads what the page
//! could see. `make test` installs Chromium and the Node packages first (`make browser-deps`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Serves the test page (and 404 for anything else, e.g. /favicon.ico).
fn page_server(html: String) -> Upstream {
    Upstream::with(move |r| {
        if r.path.starts_with("/page.html") {
            Reply {
                status: 200,
                headers: vec![
                    ("content-type".into(), "text/html; charset=utf-8".into()),
                    ("cache-control".into(), "no-store".into()),
                ],
                body: html.clone().into_bytes(),
            }
        } else {
            Reply::ok("not found").status(404)
        }
    })
}

/// Runs the Node driver with a deadline; returns its JSON output.
fn run_browser(allowed_url: &str, blocked_url: &str) -> Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed in tests/browser: run `make browser-deps` \
         (npm ci there, and Debian's chromium)"
    );
    assert!(
        chromium().exists(),
        "{} missing: run `make browser-deps` (apt-get install chromium)",
        chromium().display()
    );
    let tmp = tempdir::Dir::new("browser");
    let out_path = tmp.path().join("stdout.json");
    let err_path = tmp.path().join("stderr.txt");
    let mut child = Command::new("node")
        .arg(dir.join("cors.mjs"))
        .current_dir(&dir)
        .env("PAGE_ALLOWED", allowed_url)
        .env("PAGE_BLOCKED", blocked_url)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run node (Node.js 20+ is needed for the browser test)");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the browser run timed out; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "browser driver failed ({status}):\n{stderr}\n{stdout}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("driver output is not JSON ({e}):\n{stdout}\n{stderr}"))
}

fn result<'a>(page: &'a Value, name: &str) -> &'a Value {
    page["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result {name} in {page:#}"))
}

/// The page could read the response: the browser let it through.
#[track_caller]
fn readable<'a>(page: &'a Value, name: &str, status: u64) -> &'a Value {
    let r = result(page, name);
    assert_eq!(r["fetched"], true, "{name}: the browser blocked it: {r:#}");
    assert_eq!(r["status"], status, "{name}: {r:#}");
    r
}

/// The browser refused the response to the page (a CORS failure surfaces as a TypeError).
#[track_caller]
fn blocked(page: &Value, name: &str) {
    let r = result(page, name);
    assert_eq!(r["fetched"], false, "{name}: the page could read it: {r:#}");
    assert_eq!(r["error"], "TypeError", "{name}: {r:#}");
}

/// Console lines Chromium wrote about CORS blocking a request to `path`.
fn cors_console_errors<'a>(page: &'a Value, path: &str) -> Vec<&'a str> {
    page["console"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["text"].as_str())
        .filter(|t| t.contains("CORS policy") && t.contains(path))
        .collect()
}

#[test]
fn chromium_enforces_tollgate_cors_across_loopback_origins() {
    let html = std::fs::read_to_string(browser_dir().join("page.html")).unwrap();
    let allowed_pages = page_server(html.clone());
    let blocked_pages = page_server(html);
    let page_origin = format!("http://127.0.0.1:{}", allowed_pages.port);
    let other_origin = format!("http://127.0.0.1:{}", blocked_pages.port);

    let api_upstream = Upstream::with(|r| {
        let body = json!({
            "method": r.method,
            "path": r.path,
            "cookie": r.header("cookie"),
            "trace": r.header("x-trace-tag"),
        });
        Reply {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-request-id".into(), "req-42".into()),
                ("x-internal".into(), "not-exposed".into()),
            ],
            body: body.to_string().into_bytes(),
        }
    });
    let cfg = json!({
        "cors": {
            "allow_origins": [page_origin],
            "allow_methods": ["GET", "POST", "PUT"],
            "allow_headers": ["content-type", "x-trace-tag"],
            "expose_headers": ["x-request-id", "retry-after"],
            "max_age": 60,
            "allow_credentials": true
        },
        "api_key": {"keys": [{"id": "browser", "value": "browser-key"}]},
        "routes": [
            {"match": "POST /pets", "api_key_required": true},
            {"match": "GET /limited/{id}", "throttle": {"rate": 0.001, "burst": 1}},
            {"match": "GET /public/{x}", "cors": {"allow_origins": [page_origin]}},
            {"match": "PUT /shared/{id}", "cors": {"allow_origins": ["https://partner.example.org"],
                                                   "allow_methods": ["PUT"],
                                                   "allow_headers": ["x-trace-tag"]}},
            {"match": "POST /shared/{id}", "cors": {"allow_origins": [page_origin]}},
            {"match": "POST /cred/{id}", "cors": {"allow_origins": [page_origin],
                                                 "allow_headers": ["x-trace-tag"],
                                                 "max_age": 60}}
        ]
    });
    let tmp = tempdir::Dir::new("browser-access");
    let access_log = tmp.path().join("access.log");
    let mut opts = EnvoyOptions::new(cfg, api_upstream.port);
    opts.access_log_path = Some(access_log.clone());
    let envoy = Envoy::start(&opts);
    let api = format!("http://127.0.0.1:{}", envoy.port);

    let out = run_browser(
        &format!("{page_origin}/page.html?mode=allowed&api={api}"),
        &format!("{other_origin}/page.html?mode=blocked&api={api}"),
    );
    let ok = &out["allowed"];
    let bad = &out["blocked"];
    assert_eq!(ok["origin"], page_origin.as_str());
    assert_eq!(bad["origin"], other_origin.as_str());
    eprintln!("browser: {}", out["user_agent"]);

    // Simple GET: readable; exposed headers visible, others hidden by the browser.
    let r = readable(ok, "simple-get", 200);
    assert_eq!(r["json"]["path"], "/pets/1");
    assert_eq!(
        r["json"]["cookie"],
        Value::Null,
        "no credentials by default"
    );
    assert_eq!(r["headers"]["x-request-id"], "req-42");
    assert_eq!(r["headers"]["x-internal"], Value::Null);

    // Preflighted PUT with a custom header: the preflight was answered by tollgate, then the
    // PUT reached the upstream with its header.
    let r = readable(ok, "preflighted-put", 200);
    assert_eq!(r["json"]["method"], "PUT");
    assert_eq!(r["json"]["trace"], "browser-put");

    // Credentialed: the cookie went along and the page read the answer.
    let r = readable(ok, "credentialed", 200);
    assert_eq!(r["json"]["cookie"], "tg_session=abc123");
    // Without Access-Control-Allow-Credentials the browser refuses it.
    blocked(ok, "credentialed-without-allow-credentials");

    // tollgate's own 403 and 429: JSON bodies (and the exposed Retry-After) readable.
    let r = readable(ok, "forbidden", 403);
    assert_eq!(r["json"], json!({"message": "Forbidden"}));
    readable(ok, "limited-first", 200);
    let r = readable(ok, "limited-second", 429);
    assert_eq!(r["json"], json!({"message": "Too Many Requests"}));
    assert_eq!(r["headers"]["content-type"], "application/json");
    let retry: u64 = r["headers"]["retry-after"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After readable: {r:#}"));
    assert!(retry >= 1);

    // One URL, three routes: the GET's preflight (stage policy) was allowed, but the browser
    // did not reuse it for the PUT and the POST, whose routes' policies refuse this page's
    // origin or header: each had its own preflight, refused, and never reached the upstream.
    readable(ok, "shared-get", 200);
    blocked(ok, "shared-put");
    blocked(ok, "shared-post");
    // A credentialed PUT's preflight answer was not reused for a credentialed POST to its
    // URL, whose route's policy allows no credentials: the POST's own preflight failed.
    let r = readable(ok, "cred-put", 200);
    assert_eq!(r["json"]["cookie"], "tg_session=abc123");
    blocked(ok, "cred-post");

    // The other origin: the browser blocks both; the PUT never leaves the preflight.
    blocked(bad, "blocked-get");
    blocked(bad, "blocked-put");
    assert!(
        !cors_console_errors(bad, "/pets/2").is_empty(),
        "Chromium reports the CORS block: {:#}",
        bad["console"]
    );
    assert!(
        cors_console_errors(ok, "/pets/1").is_empty(),
        "{:#}",
        ok["console"]
    );

    // What the upstream saw: no OPTIONS ever; the simple GET from the other origin arrived
    // (CORS protects the response, not the server), its PUT did not.
    let seen = api_upstream.requests();
    let summary: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert!(seen.iter().all(|s| s.method != "OPTIONS"), "{summary:?}");
    assert!(
        seen.iter().any(|s| s.method == "PUT"
            && s.header("x-trace-tag").as_deref() == Some("browser-put")
            && s.header("origin").as_deref() == Some(page_origin.as_str())),
        "{summary:?}"
    );
    assert!(
        seen.iter().any(|s| s.method == "GET"
            && s.path == "/pets/2"
            && s.header("origin").as_deref() == Some(other_origin.as_str())),
        "{summary:?}"
    );
    for tag in ["blocked-put", "shared-put", "shared-post", "cred-post"] {
        assert!(
            !seen
                .iter()
                .any(|s| s.header("x-trace-tag").as_deref() == Some(tag)),
            "{tag}: {summary:?}"
        );
    }

    // Envoy's access log: a 204 preflight for the allowed PUT, a 403 one for the blocked PUT.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&access_log).unwrap_or_default();
        let has = |status: &str, path: &str| {
            log.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|v| v["status"].to_string().trim_matches('"') == status && v["path"] == path)
        };
        if has("204", "/pets/1") && has("403", "/pets/2") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "preflights missing from the access log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!log.is_empty());
    envoy.assert_no_wasm_failure();
}
