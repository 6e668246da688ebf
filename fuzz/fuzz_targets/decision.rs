//! The request pipeline, `gateway::decide`: hostile headers in, a decision out, over an in-memory
//! counter store and an arbitrary (even backwards-running) clock. Invariants:
//! - no key-required route is forwarded without a valid key, and a key is only ever accepted
//!   for its own value;
//! - a path under `/admin`, however spelled, is matched by an admin route (or refused as
//!   ambiguous);
//! - the stage bucket never admits more than `burst + rate x elapsed` requests (elapsed: the
//!   time the clock ran forward);
//! - the filter's own responses are 204, 400, 403 or 429 with printable ASCII header values.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate::config::Config;
use tollgate::gateway::{decide, initialize_store, Outcome, Repeated, RequestSource, StoreKeys};
use tollgate::routes::{is_ambiguous_path, normalize_path};
use tollgate::throttle::store::MemoryStore;

const STAGE_BURST: u64 = 6;
/// Requests per second.
const STAGE_RATE: f64 = 0.5;
const KEYS: [&str; 3] = ["key-gold", "key-free", "key-none"];

const CONFIG: &str = r#"{
  "stage": "fuzz",
  "api_key": {"keys": [
    {"id": "gold", "value": "key-gold", "usage_plan": "gold"},
    {"id": "free", "value": "key-free", "usage_plan": "free"},
    {"id": "none", "value": "key-none"}]},
  "usage_plans": {
    "gold": {"throttle": {"rate": 1000, "burst": 2000}, "quota": {"limit": 100000, "period": "WEEK"}},
    "free": {"throttle": {"rate": 0.25, "burst": 2}, "quota": {"limit": 3, "period": "MONTH"}}},
  "throttle": {"rate": 0.5, "burst": 6},
  "client_throttle": {"by": "header:x-client", "rate": 1, "burst": 4, "slots": 8},
  "rate_limit_headers": "draft10",
  "cors": {"allow_origins": ["https://app.example.com", "https://*.example.org"],
           "allow_methods": ["GET", "PUT", "DELETE"], "allow_headers": ["x-api-key", "content-type"],
           "expose_headers": ["ratelimit"], "max_age": 60, "allow_credentials": true},
  "routes": [
    {"match": "ANY /admin/{proxy+}", "api_key_required": true, "cors": false},
    {"match": "GET /pets/{id}", "throttle": {"rate": 2, "burst": 3}},
    {"match": "POST /pets", "api_key_required": true, "enforce": false},
    {"match": "PUT /pets/{id}", "cors": {"allow_origins": ["*"], "allow_methods": ["*"]}}
  ]
}"#;

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| match Config::from_json(CONFIG.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("fuzz config: {e}"),
    })
}

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Options,
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Seg {
    Admin,
    Pets,
    Id,
    Dot,
    DotDot,
    Empty,
    Params(Vec<u8>),
    Escaped(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Valid(u8),
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Request {
    method: Method,
    path: Vec<Seg>,
    query: Option<Vec<u8>>,
    key: Option<Key>,
    /// A second copy of the key header.
    key_again: Option<Key>,
    origin: Option<Vec<u8>>,
    acrm: Option<Vec<u8>>,
    acrh: Option<Vec<u8>>,
    pna: Option<Vec<u8>>,
    client: Option<Vec<u8>>,
    address: Option<Vec<u8>>,
    /// Clock step before this request, in milliseconds (negative: the clock went back).
    step_ms: i32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    start_ns: u64,
    requests: Vec<Request>,
}

struct Source<'a> {
    headers: Vec<(&'static str, Vec<u8>)>,
    address: Option<&'a [u8]>,
}

impl RequestSource for Source<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }
    fn header_once(&self, name: &str) -> Option<Result<&[u8], Repeated>> {
        let mut found = self.headers.iter().filter(|(n, _)| *n == name);
        let first = found.next()?;
        Some(match found.next() {
            Some(_) => Err(Repeated),
            None => Ok(first.1.as_slice()),
        })
    }
    fn source_address(&self) -> Option<&[u8]> {
        self.address
    }
}

fn path_of(r: &Request) -> Vec<u8> {
    let mut p = Vec::new();
    for s in &r.path {
        p.push(b'/');
        match s {
            Seg::Admin => p.extend_from_slice(b"admin"),
            Seg::Pets => p.extend_from_slice(b"pets"),
            Seg::Id => p.extend_from_slice(b"7"),
            Seg::Dot => p.push(b'.'),
            Seg::DotDot => p.extend_from_slice(b".."),
            Seg::Empty => {}
            Seg::Params(v) => {
                p.push(b';');
                p.extend_from_slice(v);
            }
            Seg::Escaped(b) => p.extend_from_slice(format!("%{b:02X}").as_bytes()),
            Seg::Raw(v) => p.extend_from_slice(v),
        }
    }
    if let Some(q) = &r.query {
        p.push(b'?');
        p.extend_from_slice(q);
    }
    p
}

fn printable(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fuzz_target!(|input: Input| {
    let cfg = config();
    let keys = StoreKeys::new("tollgate:fuzz:", cfg);
    let store = MemoryStore::new();
    let start = input.start_ns;
    if initialize_store(cfg, &keys, &store, start).is_err() {
        panic!("the memory store refused a key");
    }
    let mut now = start;
    // Clock time that ran forward; a step back followed by a step forward is real time passing
    // twice as far as the clock shows, so this (not max - min) bounds the refill.
    let mut forward_ns: u64 = 0;
    let mut stage_admitted: u64 = 0;
    for r in input.requests.iter().take(64) {
        let step = u64::from(r.step_ms.unsigned_abs()) * 1_000_000;
        let before = now;
        now = if r.step_ms >= 0 {
            now.saturating_add(step)
        } else {
            now.saturating_sub(step)
        };
        forward_ns += now.saturating_sub(before);
        let method: Vec<u8> = match &r.method {
            Method::Get => b"GET".to_vec(),
            Method::Head => b"HEAD".to_vec(),
            Method::Post => b"POST".to_vec(),
            Method::Put => b"PUT".to_vec(),
            Method::Options => b"OPTIONS".to_vec(),
            Method::Raw(v) => v.clone(),
        };
        let path = path_of(r);
        let key_bytes = |k: &Key| match k {
            Key::Valid(i) => KEYS[usize::from(*i) % KEYS.len()].as_bytes().to_vec(),
            Key::Raw(v) => v.clone(),
        };
        let presented: Option<Vec<u8>> = r.key.as_ref().map(key_bytes);
        let mut headers = vec![(":method", method.clone()), (":path", path.clone())];
        let optional = [
            ("x-api-key", presented.clone()),
            ("origin", r.origin.clone()),
            ("access-control-request-method", r.acrm.clone()),
            ("access-control-request-headers", r.acrh.clone()),
            ("access-control-request-private-network", r.pna.clone()),
            ("x-client", r.client.clone()),
        ];
        headers.extend(optional.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))));
        let twice = presented.is_some() && r.key_again.is_some();
        if let (true, Some(k)) = (twice, &r.key_again) {
            headers.push(("x-api-key", key_bytes(k)));
        }
        let src = Source {
            headers,
            address: r.address.as_deref(),
        };
        let d = decide(cfg, &keys, &store, now, &src);

        // A key header sent twice names no key; a key is accepted only for its own value.
        assert!(
            !(twice && d.key.is_some()),
            "a repeated key header was accepted"
        );
        if let Some(i) = d.key {
            assert_eq!(
                presented.as_deref(),
                Some(KEYS[i].as_bytes()),
                "wrong key accepted"
            );
        }
        let route = cfg.route(d.route);
        let preflight = method == b"OPTIONS" && r.origin.is_some() && r.acrm.is_some();
        let ambiguous = is_ambiguous_path(&path);
        match &d.outcome {
            Outcome::Forward => {
                if route.api_key_required && route.enforce {
                    assert!(
                        d.key.is_some(),
                        "key route {:?} forwarded without a key",
                        route.name
                    );
                }
                assert!(!ambiguous, "ambiguous path forwarded: {path:?}");
                if route.enforce && d.error.is_none() {
                    stage_admitted += 1;
                }
            }
            Outcome::Respond {
                status, headers, ..
            } => {
                assert!(matches!(status, 204 | 400 | 403 | 429), "status {status}");
                assert!(*status != 204 || preflight, "204 for a non-preflight");
                for (n, v) in headers {
                    assert!(
                        n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                        "{n}"
                    );
                    assert!(printable(v), "{n}: {v:?}");
                }
            }
        }
        for (_, v) in &d.response_headers {
            assert!(printable(v), "{v:?}");
        }
        // However the path is spelled, /admin and /admin/... land on the admin route (its
        // greedy parameter covers the base path: no route of its own here).
        if !ambiguous && !preflight {
            let n = normalize_path(&path);
            if n == "/admin" || n.starts_with("/admin/") {
                assert!(
                    matches!(d.route, Some(0)),
                    "{path:?} ({n}) escaped: {:?}",
                    d.route
                );
            }
        }
        // The stage bucket: burst + rate x elapsed (the clock only refills going forward).
        let elapsed_s = forward_ns as f64 / 1e9;
        let bound = STAGE_BURST as f64 + STAGE_RATE * elapsed_s + 1.0;
        assert!(
            (stage_admitted as f64) <= bound,
            "stage admitted {stage_admitted} > {bound}"
        );
    }
});
