//! Issue 8: route matching, the ambiguity check and CORS decisions allocate nothing on the
//! request path. A counting global allocator (this test binary's own) counts the allocations
//! each call makes.
//!
//! What may allocate, and only that: a path Envoy did not normalise (one buffer for the
//! normalised copy), the `Access-Control-Allow-Origin` value of an allowed actual request when
//! it echoes the origin (one string, carried to the response), and an allowed preflight's answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tollgate::config::Config;
use tollgate::cors::{CorsPolicy, CorsSpec, Preflight, PreflightDecision};
use tollgate::gateway::{decide, initialize_store, Outcome, RequestSource, StoreKeys};
use tollgate::routes::RouteTable;
use tollgate::throttle::store::MemoryStore;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How many allocations `f` makes (on this thread), and its result.
fn allocations<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

#[test]
fn the_counter_sees_an_allocation() {
    let (n, v) = allocations(|| vec![1u8; 3]);
    assert_eq!((n, v.len()), (1, 3));
}

#[test]
fn route_matching_allocates_nothing() {
    let table = RouteTable::compile([
        "GET /pets",
        "POST /pets",
        "GET /pets/{id}",
        "GET /pets/{id}/toys/{toyId}",
        "GET /stores/{storeId}/orders/{orderId}",
        "ANY /admin/{proxy+}",
        "GET /static/{proxy+}",
    ])
    .unwrap();
    for (method, path, want, most) in [
        ("GET", "/pets", Some(0), 0),
        ("GET", "/pets/123", Some(2), 0),
        ("GET", "/pets/123?limit=10&page=2", Some(2), 0),
        ("GET", "/pets/1/toys/2", Some(3), 0),
        ("HEAD", "/pets/1", Some(2), 0),
        ("DELETE", "/admin/users/9/sessions", Some(5), 0),
        ("GET", "/nothing/here", None, 0),
        ("G\u{0}T", "/pets", None, 0),
        // Deeper than the segments the matcher keeps on the stack: one Vec.
        (
            "GET",
            "/static/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r",
            Some(6),
            1,
        ),
        // Not normalised (Envoy's normalize_path and merge_slashes would have): one buffer.
        ("GET", "/pets/./%31%32%33/", Some(2), 1),
        ("GET", "//pets//1/toys/../toys/2;x=1", Some(3), 1),
        ("GET", "/pets/%zz/../..//x", None, 1),
        // Bytes escaped on the way (three for one): still one buffer, sized once.
        ("GET", "/pets/%zz%zz%zz%zz%zz%zz%zz%zz", Some(2), 1),
        ("GET", "/pets/café-crème-brûlée-über", Some(2), 1),
        // Reserved characters decoded, delimiters kept, `%3B` parameters dropped: one buffer.
        ("GET", "/pets/%3A%40%21%2F%3F%23%25%5C", Some(2), 1),
        ("GET", "/pets/1%3Bx=1/toys/2", Some(3), 1),
    ] {
        let (n, found) = allocations(|| table.find(method.as_bytes(), path.as_bytes()));
        assert_eq!(found, want, "{method} {path}");
        assert!(
            n <= most,
            "{method} {path}: {n} allocations, at most {most}"
        );
    }
}

#[test]
fn matching_in_a_large_table_allocates_nothing() {
    // 1,000 routes: 100 resources of ten under `/v1`, each level with a `{id}` branch the
    // table's walk keeps for later beside the literal one.
    let mut matches = Vec::new();
    for i in 0..100 {
        for shape in [
            "GET /v1/r{i}",
            "POST /v1/r{i}",
            "GET /v1/r{i}/{id}",
            "PUT /v1/r{i}/{id}",
            "GET /v1/{v}/{id}",
            "GET /v1/r{i}/{id}/items",
            "GET /v1/r{i}/{id}/{sub}",
            "GET /v1/r{i}/{id}/items/{itemId}",
            "ANY /v1/r{i}/{proxy+}",
            "DELETE /v1/r{i}/{id}/items/{itemId}",
        ] {
            let m = shape.replace("{i}", &i.to_string());
            if !matches.contains(&m) {
                matches.push(m);
            }
        }
    }
    let table = RouteTable::compile(matches.iter().map(String::as_str)).unwrap();
    for (method, path) in [
        ("GET", "/v1/r50/7"),
        ("GET", "/v1/r50/7/items/9"),
        ("GET", "/v1/r50/7/other"),
        ("PATCH", "/v1/r99/7/a/b/c"),
        ("GET", "/v1/zzz/7"),
        ("GET", "/v2/r50"),
    ] {
        let (n, found) = allocations(|| table.find(method.as_bytes(), path.as_bytes()));
        assert_eq!(n, 0, "{method} {path}");
        assert_eq!(
            found,
            table.find_by_scan(method.as_bytes(), path.as_bytes()),
            "{method} {path}"
        );
        assert!(
            found.is_some() || path.starts_with("/v2"),
            "{method} {path}"
        );
    }
}

#[test]
fn the_ambiguity_check_allocates_nothing() {
    for (path, want) in [
        ("/pets/1", false),
        ("/pets/1;x=1", false),
        ("/pets/%3A%3b", false),
        ("/admin/..;/x", true),
        ("/admin/%2e%2E%3Bx/y", true),
        ("/;x/admin?y=..;", true),
    ] {
        let (n, got) = allocations(|| tollgate::routes::is_ambiguous_path(path.as_bytes()));
        assert_eq!((n, got), (0, want), "{path}");
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn cors_decisions_allocate_nothing() {
    let origins = strings(&["http://localhost:3000", "https://*.example.com"]);
    let methods = strings(&["GET", "POST", "PUT", "DELETE"]);
    let headers = strings(&["content-type", "authorization", "x-api-key"]);
    let expose = strings(&["x-request-id"]);
    let policy = CorsPolicy::compile(&CorsSpec {
        allow_origins: &origins,
        allow_methods: &methods,
        allow_headers: &headers,
        expose_headers: &expose,
        max_age: Some(600),
        allow_credentials: true,
        allow_private_network: false,
    })
    .unwrap();
    for (origin, allowed) in [
        (Some("http://localhost:3000"), true),
        (Some("https://app.example.com"), true),
        (Some("https://evil.example.org"), false),
        (Some("null"), false),
        (Some("http://localhost:3000/path"), false),
        (Some("https://app.example.com.evil.org"), false),
        // Upper case: looked up in a lower-case copy on the stack.
        (Some("https://APP.EXAMPLE.COM.EVIL.ORG"), false),
        (Some("HTTP://LOCALHOST:3000"), true),
        (None, false),
    ] {
        let (n, actual) = allocations(|| policy.actual(origin.map(str::as_bytes)));
        assert_eq!(actual.is_some(), allowed, "{origin:?}");
        // Allowed: the echoed origin, carried to the response as one string.
        let most = u64::from(allowed);
        assert!(n <= most, "actual {origin:?}: {n} allocations");
        if let Some(a) = actual {
            let (n, count) = allocations(|| policy.actual_headers(&a).count());
            assert_eq!((n, count), (0, 3), "actual_headers {origin:?}");
        }
    }
    let pre = |origin: &'static str, method: &'static str, headers: &'static str, pna| Preflight {
        origin: origin.as_bytes(),
        request_method: method.as_bytes(),
        request_headers: Some(headers.as_bytes()).filter(|h| !h.is_empty()),
        request_private_network: pna,
    };
    let app = "https://app.example.com";
    for (p, allowed) in [
        (pre(app, "PUT", "content-type, x-api-key", false), true),
        (pre(app, "GET", "", false), true),
        (pre(app, "PATCH", "content-type", false), false),
        (pre(app, "PUT", "content-type, x-secret", false), false),
        (pre(app, "PUT", "content-type", true), false),
        (pre(app, "P T", "", false), false),
        (pre("https://evil.example.org", "PUT", "", false), false),
        (pre("https://EVIL.example.org", "PUT", "", false), false),
    ] {
        let (n, d) = allocations(|| policy.preflight(&p));
        assert_eq!(matches!(d, PreflightDecision::Allowed(_)), allowed, "{p:?}");
        if !allowed {
            assert_eq!(n, 0, "denied preflight {p:?}: {n} allocations");
        }
    }

    // A policy answering `*` echoes nothing: no allocation at all.
    let any = strings(&["*"]);
    let star = CorsPolicy::compile(&CorsSpec {
        allow_origins: &any,
        allow_methods: &methods,
        allow_headers: &headers,
        expose_headers: &expose,
        max_age: None,
        allow_credentials: false,
        allow_private_network: false,
    })
    .unwrap();
    let (n, actual) = allocations(|| star.actual(Some(b"https://anyone.example".as_slice())));
    assert_eq!((n, actual.map(|a| a.allow_origin)), (0, Some("*".into())));
}

/// A request as the filter sees it: its headers, pseudo-headers included.
struct Headers(Vec<(&'static str, &'static [u8])>);

impl RequestSource for Headers {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
    fn source_address(&self) -> Option<&[u8]> {
        Some(b"10.1.2.3:40000")
    }
}

#[test]
fn a_preflight_decision_allocates_its_answer_and_little_else() {
    // make bench's T configuration (stage throttle, CORS with credentials, JSON record). An
    // allowed preflight allocates its answer (the header list and its values) and the
    // decision's own bookkeeping; it once also built, and dropped, the answers of the URL's
    // nine other methods to learn whether they would be allowed (70 allocations; 7 now).
    let cfg = Config::from_json(
        br#"{"stage": "bench", "throttle": {"rate": 1000, "burst": 4000},
             "cors": {"allow_origins": ["http://localhost:3000", "https://*.example.com"],
                      "allow_methods": ["GET", "POST", "PUT", "DELETE"],
                      "allow_headers": ["content-type", "authorization", "x-api-key"],
                      "max_age": 600, "allow_credentials": true},
             "access_log": {"format": "json"}}"#,
    )
    .unwrap();
    let keys = StoreKeys::new("t:", &cfg);
    let store = MemoryStore::new();
    let now = 1_700_000_000_000_000_000;
    initialize_store(&cfg, &keys, &store, now).unwrap();
    let req = Headers(vec![
        (":method", b"OPTIONS"),
        (":path", b"/pets/1"),
        ("origin", b"https://app.example.com"),
        ("access-control-request-method", b"PUT"),
        ("access-control-request-headers", b"content-type"),
    ]);
    let (n, d) = allocations(|| decide(&cfg, &keys, &store, now, &req));
    assert!(
        matches!(d.outcome, Outcome::Respond { status: 204, .. }),
        "{:?}",
        d.outcome
    );
    assert!(n <= 10, "an allowed preflight: {n} allocations");
}
