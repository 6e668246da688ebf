//! Micro-benchmarks of the pure core (criterion, ns per operation): route matching, token bucket
//! and quota steps, CORS decisions, access-log formatting and the whole request pipeline.
//!
//!   make bench-micro                                        # all of them, about a minute
//!   cargo bench --profile micro --bench core -- cors        # names containing "cors"
//!
//! They run natively with the `micro` profile (release's opt-level "z" and LTO, with unwinding
//! for the harness), so the code is optimised as in the shipped wasm; V8's code is slower than
//! native, so read the numbers as relative costs, not as the filter's cost inside Envoy
//! (`make bench` measures that).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use tollgate::access_log::{LogFormat, Record};
use tollgate::config::Config;
use tollgate::cors::{CorsPolicy, CorsSpec, Preflight};
use tollgate::gateway::{self, StoreKeys};
use tollgate::routes::{normalize_path, RouteTable};
use tollgate::throttle::bucket::{self, BucketSpec, BucketState};
use tollgate::throttle::quota::{self, Period, QuotaState};
use tollgate::throttle::store::MemoryStore;

mod common;
use common::{FakeRequest, BENCH_T, FULL, SEC, T0};

/// A 20-route table shaped like a real API: literals, parameters, a greedy proxy, ANY routes.
const ROUTES: [&str; 20] = [
    "GET /pets",
    "POST /pets",
    "GET /pets/{id}",
    "PUT /pets/{id}",
    "DELETE /pets/{id}",
    "GET /pets/{id}/toys",
    "POST /pets/{id}/toys",
    "GET /pets/{id}/toys/{toyId}",
    "GET /owners",
    "POST /owners",
    "GET /owners/{id}",
    "PATCH /owners/{id}",
    "GET /owners/{id}/pets",
    "GET /stores/{storeId}/inventory",
    "POST /stores/{storeId}/orders",
    "GET /stores/{storeId}/orders/{orderId}",
    "GET /health",
    "ANY /admin/{proxy+}",
    "ANY /v1/{proxy+}",
    "GET /static/{proxy+}",
];

/// `resources` resources of ten routes each under `/v1`: `/v1/res<i>`, `/v1/res<i>/{id}` and
/// deeper, with the methods a REST API gives them.
pub fn large_table(resources: usize) -> RouteTable {
    let mut matches = Vec::new();
    for i in 0..resources {
        for shape in [
            "GET /v1/res{i}",
            "POST /v1/res{i}",
            "GET /v1/res{i}/{id}",
            "PUT /v1/res{i}/{id}",
            "PATCH /v1/res{i}/{id}",
            "DELETE /v1/res{i}/{id}",
            "GET /v1/res{i}/{id}/items",
            "POST /v1/res{i}/{id}/items",
            "GET /v1/res{i}/{id}/items/{itemId}",
            "DELETE /v1/res{i}/{id}/items/{itemId}",
        ] {
            matches.push(shape.replace("{i}", &i.to_string()));
        }
    }
    RouteTable::compile(matches.iter().map(String::as_str)).unwrap()
}

fn routes(c: &mut Criterion) {
    let table = RouteTable::compile(ROUTES).unwrap();
    let mut g = c.benchmark_group("route_match_20");
    for (name, method, path) in [
        ("literal", "GET", "/pets"),
        ("param", "GET", "/pets/123"),
        ("deep_param", "GET", "/stores/42/orders/7"),
        ("greedy", "DELETE", "/admin/users/9/sessions"),
        ("query", "GET", "/pets/123?limit=10&page=2"),
        ("miss", "GET", "/nothing/here/at/all"),
        ("needs_normalising", "GET", "/pets/./%31%32%33/"),
    ] {
        assert!(name == "miss" || table.find(method.as_bytes(), path.as_bytes()).is_some());
        g.bench_function(name, |b| {
            b.iter(|| table.find(black_box(method.as_bytes()), black_box(path.as_bytes())))
        });
    }
    g.finish();
    // A large API: 1,000 routes, 100 resources of ten routes each, all under one `/v1` prefix
    // as versioned APIs are; the request matches a resource in the middle of the table.
    let large = large_table(100);
    let mut g = c.benchmark_group("route_match_1000");
    for (name, method, path) in [
        ("param", "GET", "/v1/res50/123"),
        ("deep_param", "GET", "/v1/res50/123/items/9"),
        ("miss", "GET", "/v1/nothing/here"),
    ] {
        assert!(name == "miss" || large.find(method.as_bytes(), path.as_bytes()).is_some());
        g.bench_function(name, |b| {
            b.iter(|| large.find(black_box(method.as_bytes()), black_box(path.as_bytes())))
        });
    }
    g.finish();
    c.bench_function("normalize_path/plain", |b| {
        b.iter(|| normalize_path(black_box(b"/stores/42/orders/7")))
    });
    c.bench_function("normalize_path/dirty", |b| {
        b.iter(|| normalize_path(black_box(b"/stores//42/./x/../orders/%37;jsessionid=1")))
    });
}

fn throttle(c: &mut Criterion) {
    let spec = BucketSpec::new(100.0, 200).unwrap();
    let state = BucketState::full(&spec, T0);
    c.bench_function("bucket/take", |b| {
        let mut now = T0;
        b.iter(|| {
            now += 1_000_000;
            bucket::take(black_box(&spec), black_box(state), black_box(now))
        })
    });
    c.bench_function("bucket/take+encode+decode", |b| {
        let mut stored = state.encode();
        let mut now = T0;
        b.iter(|| {
            now += 1_000_000;
            let prior = BucketState::decode(black_box(&stored)).unwrap();
            let (outcome, next) = bucket::take(&spec, prior, now);
            stored = next.encode();
            outcome
        })
    });
    let now_s = i64::try_from(T0 / SEC).unwrap();
    let prior = Some(QuotaState {
        window_start: quota::window_start(Period::Month, now_s),
        used: 10,
    });
    c.bench_function("quota/consume", |b| {
        b.iter(|| {
            quota::consume(
                black_box(100_000),
                Period::Month,
                black_box(prior),
                black_box(now_s),
            )
        })
    });
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn cors(c: &mut Criterion) {
    let origins = strings(&["http://localhost:3000", "https://*.example.com"]);
    let methods = strings(&["GET", "POST", "PUT", "DELETE"]);
    let headers = strings(&["content-type", "authorization", "x-api-key"]);
    let expose = strings(&["x-request-id", "ratelimit", "ratelimit-policy"]);
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
    let pre = Preflight {
        origin: b"https://app.example.com",
        request_method: b"PUT",
        request_headers: Some(b"content-type, x-api-key"),
        request_private_network: false,
    };
    c.bench_function("cors/preflight_allowed", |b| {
        b.iter(|| policy.preflight(black_box(&pre)))
    });
    c.bench_function("cors/actual_allowed", |b| {
        b.iter(|| policy.actual(black_box(Some(b"http://localhost:3000".as_slice()))))
    });
    c.bench_function("cors/actual_denied", |b| {
        b.iter(|| policy.actual(black_box(Some(b"https://evil.example.org".as_slice()))))
    });
    // A multi-tenant list: 1,000 exact origins and 100 subdomain wildcards.
    let mut many: Vec<String> = (0..1000)
        .map(|i| format!("https://tenant{i}.apps.example"))
        .collect();
    many.extend((0..100).map(|i| format!("https://*.t{i}.example.net")));
    let large = CorsPolicy::compile(&CorsSpec {
        allow_origins: &many,
        allow_methods: &methods,
        allow_headers: &headers,
        expose_headers: &expose,
        max_age: Some(600),
        allow_credentials: true,
        allow_private_network: false,
    })
    .unwrap();
    for (name, origin) in [
        ("exact", "https://tenant999.apps.example"),
        ("subdomain", "https://a.b.t99.example.net"),
        ("denied", "https://tenant999.apps.exampl"),
    ] {
        assert_eq!(large.origin_allowed(origin.as_bytes()), name != "denied");
        c.bench_function(&format!("cors_1100_origins/actual_{name}"), |b| {
            b.iter(|| large.actual(black_box(Some(origin.as_bytes()))))
        });
    }
    // A preflight any client can send: one listed name 8,000 times (what fits in Envoy's
    // 60 KiB of request headers), against 1,000 allow_headers: denied after 128 names.
    let many_headers: Vec<String> = (0..1000).map(|i| format!("x-h{i}")).collect();
    let long = CorsPolicy::compile(&CorsSpec {
        allow_origins: &origins,
        allow_methods: &methods,
        allow_headers: &many_headers,
        expose_headers: &expose,
        max_age: Some(600),
        allow_credentials: true,
        allow_private_network: false,
    })
    .unwrap();
    let asked = vec!["X-H999"; 8000].join(",");
    let flood = Preflight {
        request_headers: Some(asked.as_bytes()),
        ..pre
    };
    assert!(matches!(
        long.preflight(&flood),
        tollgate::cors::PreflightDecision::Denied
    ));
    c.bench_function("cors_1000_headers/preflight_8000_names", |b| {
        b.iter(|| long.preflight(black_box(&flood)))
    });
    c.bench_function("cors/merge_vary", |b| {
        b.iter(|| tollgate::cors::merge_vary(black_box(Some(b"Accept-Encoding")), &["Origin"]))
    });
}

fn access_log(c: &mut Criterion) {
    let rec = Record {
        request_id: Some("5f0c6f2e-8d0b-4c55-9a36-2f1b3a7c9d11"),
        request_time_epoch_ms: Some(T0 / 1_000_000),
        http_method: Some("GET"),
        resource_path: Some("/pets/{id}"),
        path: Some("/pets/123?limit=10"),
        protocol: Some("HTTP/1.1"),
        status: Some(200),
        response_length: Some(35),
        response_latency_ms: Some(3),
        integration_latency_ms: Some(2),
        source_ip: Some("10.1.2.3"),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) \"quoted\""),
        api_key_id: Some("partner-a"),
        stage: Some("prod"),
        error_message: None,
        error_response_type: None,
        cache_status: None,
    };
    let mut g = c.benchmark_group("access_log");
    for name in ["json", "clf"] {
        let format = LogFormat::parse(name).unwrap();
        g.bench_function(name, |b| {
            let mut line = String::with_capacity(512);
            b.iter(|| {
                line.clear();
                format.format_into(black_box(&rec), &mut line);
                line.len()
            })
        });
    }
    g.finish();
}

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("gateway_decide");
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    );
    let cases: [Case; 5] = [
        (
            "empty_config",
            "{}",
            vec![(":method", "GET"), (":path", "/pets/1")],
        ),
        (
            "bench_T",
            BENCH_T,
            vec![
                (":method", "GET"),
                (":path", "/pets/1"),
                ("origin", "http://localhost:3000"),
            ],
        ),
        (
            "bench_T_preflight",
            BENCH_T,
            vec![
                (":method", "OPTIONS"),
                (":path", "/pets/1"),
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ],
        ),
        (
            "full_with_key",
            FULL,
            vec![
                (":method", "GET"),
                (":path", "/pets/1"),
                ("origin", "http://localhost:3000"),
                ("x-api-key", "bench-key-1"),
            ],
        ),
        (
            "full_no_key",
            FULL,
            vec![(":method", "GET"), (":path", "/pets/1")],
        ),
    ];
    for (name, json, headers) in cases {
        let cfg = Config::from_json(json.as_bytes()).unwrap();
        let keys = StoreKeys::new("tollgate:bench:", &cfg);
        let store = MemoryStore::new();
        gateway::initialize_store(&cfg, &keys, &store, T0).unwrap();
        let mut now = T0;
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || FakeRequest::new(&headers),
                |req| {
                    now += 1_000;
                    let d = gateway::decide(&cfg, &keys, &store, now, req);
                    assert!(d.error.is_none(), "{name}: {:?}", d.error);
                    d
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    // About a minute for the whole set; `-- --measurement-time 10` for tighter intervals.
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_millis(1500));
    targets = routes, throttle, cors, access_log, decide
}
criterion_main!(benches);
