//! CORS: policy compilation from arbitrary entries, origin matching, preflight decisions and Vary
//! merging. Invariants: every header value produced is printable ASCII (no CR, LF or NUL can be
//! injected); an echoed `Access-Control-Allow-Origin` is exactly the request's origin; a
//! malformed or non-ASCII origin is never allowed.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate::cors::{
    merge_vary, CorsPolicy, CorsSpec, Preflight, PreflightDecision, ALLOW_ORIGIN,
};

#[derive(Arbitrary, Debug)]
struct Input {
    allow_origins: Vec<String>,
    allow_methods: Vec<String>,
    allow_headers: Vec<String>,
    expose_headers: Vec<String>,
    max_age: Option<u32>,
    allow_credentials: bool,
    allow_private_network: bool,
    origin: Vec<u8>,
    request_method: Vec<u8>,
    request_headers: Option<Vec<u8>>,
    request_private_network: bool,
    vary: Option<Vec<u8>>,
}

fn printable(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fuzz_target!(|input: Input| {
    let merged = merge_vary(input.vary.as_deref(), &["Origin"]);
    assert!(printable(&merged), "{merged:?}");
    // Known-good entries first, so most inputs compile and reach the matching code.
    let mut origins = vec![
        "https://app.example.com".to_string(),
        "https://*.example.com:8443".to_string(),
        "http://localhost:3000".to_string(),
    ];
    origins.extend(input.allow_origins.iter().cloned());
    let spec = CorsSpec {
        allow_origins: &origins,
        allow_methods: &input.allow_methods,
        allow_headers: &input.allow_headers,
        expose_headers: &input.expose_headers,
        max_age: input.max_age,
        allow_credentials: input.allow_credentials,
        allow_private_network: input.allow_private_network,
    };
    let Ok(policy) = CorsPolicy::compile(&spec) else {
        return;
    };
    let allowed = policy.origin_allowed(&input.origin);
    if !input.origin.is_ascii() {
        assert!(!allowed, "non-ASCII origin allowed: {:?}", input.origin);
    }
    let actual = policy.actual(Some(&input.origin));
    assert_eq!(actual.is_some(), allowed);
    if let Some(a) = &actual {
        for (_, v) in policy.actual_headers(a) {
            assert!(printable(v), "{v:?}");
        }
        let acao = policy
            .actual_headers(a)
            .find(|(n, _)| *n == ALLOW_ORIGIN)
            .map(|(_, v)| v);
        if a.vary_origin {
            assert_eq!(acao.map(str::as_bytes), Some(&input.origin[..]));
        }
    }
    assert!(policy.actual(None).is_none());
    let pre = Preflight {
        origin: &input.origin,
        request_method: &input.request_method,
        request_headers: input.request_headers.as_deref(),
        request_private_network: input.request_private_network,
    };
    if let PreflightDecision::Allowed(headers) = policy.preflight(&pre) {
        assert!(allowed, "preflight allowed for a refused origin");
        for (_, v) in &headers {
            assert!(printable(v), "{v:?}");
        }
    }
});
