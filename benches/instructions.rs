//! Instructions per call of the filter's hot path, counted by callgrind: repeatable to the
//! instruction, whatever else the machine is doing, where `make bench-micro` times in ns and
//! moves with the machine's load.
//!
//!   make bench-instructions                                   # the table (~1 min)
//!   target/instr/deps/instructions-* decide_t 1000            # one case, 1000 calls
//!
//! `bench/instructions.py` runs each case under `valgrind --tool=callgrind` with 0 and with N
//! calls and prints the difference over N. Built with the `instr` profile: release's opt-level
//! "z" and LTO, as the shipped module is, for the native target (wasm32 code runs in V8, so
//! read the numbers as relative costs). The throttle store is `MemoryStore`; inside Envoy it is
//! shared data, whose cost is Envoy's (`make bench-hostcalls`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use tollgate::access_log::{LogFormat, Record};
use tollgate::config::Config;
use tollgate::gateway::{self, StoreKeys};
use tollgate::header_pairs::HeaderPairs;
use tollgate::throttle::store::MemoryStore;

mod common;
use common::{MapRequest, BENCH_T, BROWSER_GET, FULL, T0};

const CASES: [(&str, &str); 8] = [
    (
        "header_map",
        "read the request header map in place and look up the 5 headers the filter reads",
    ),
    (
        "decide_empty",
        "gateway::decide, `{}` configuration, a browser's GET",
    ),
    (
        "decide_t",
        "gateway::decide, make bench's T (throttle, CORS), a browser's GET",
    ),
    ("decide_t_preflight", "gateway::decide, T, a CORS preflight"),
    (
        "decide_full_key",
        "gateway::decide, key + plan + quota + route/stage/client throttles",
    ),
    ("json", "the JSON access record of a 200"),
    ("clf", "the CLF access record of a 200"),
    ("template", "a template record with 5 variables"),
];

fn record() -> Record<'static> {
    Record {
        request_id: Some("5f0c6f2e-8d0b-4c55-9a36-2f1b3a7c9d11"),
        request_time_epoch_ms: Some(T0 / 1_000_000),
        http_method: Some("GET"),
        resource_path: Some("/pets/{id}"),
        path: Some("/pets/1"),
        protocol: Some("HTTP/1.1"),
        status: Some(200),
        response_length: Some(35),
        response_latency_ms: Some(3),
        integration_latency_ms: Some(2),
        source_ip: Some("10.1.2.3"),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0"),
        api_key_id: None,
        stage: Some("bench"),
        error_message: None,
        error_response_type: None,
        cache_status: None,
    }
}

fn decide(config: &str, headers: &[(&str, &str)], n: u64) -> usize {
    let cfg = Config::from_json(config.as_bytes()).unwrap();
    let keys = StoreKeys::new("tollgate:bench:", &cfg);
    let store = MemoryStore::new();
    gateway::initialize_store(&cfg, &keys, &store, T0).unwrap();
    let req = MapRequest::new(headers);
    let mut sink = 0;
    for i in 0..n {
        let d = gateway::decide(&cfg, &keys, &store, T0 + i * 1_000, black_box(&req));
        assert!(d.error.is_none(), "{:?}", d.error);
        sink += d.response_headers.len();
    }
    sink
}

fn format(spec: &str, n: u64) -> usize {
    let format = LogFormat::parse(spec).unwrap();
    let rec = record();
    let mut sink = 0;
    for _ in 0..n {
        // As the filter does: a fresh line per request.
        let mut line = String::with_capacity(512);
        format.format_into(black_box(&rec), &mut line);
        sink += line.len();
    }
    sink
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (case, n) = match args.as_slice() {
        [case, n] => (
            case.as_str(),
            n.parse::<u64>().expect("N: a number of calls"),
        ),
        _ => {
            eprintln!("usage: instructions CASE N   (N calls of CASE)\ncases:");
            for (name, what) in CASES {
                eprintln!("  {name:20} {what}");
            }
            std::process::exit(2);
        }
    };
    let with_key = [BROWSER_GET.as_slice(), &[("x-api-key", "bench-key-1")]].concat();
    let preflight = [
        (":method", "OPTIONS"),
        (":path", "/pets/1"),
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "content-type"),
    ];
    let sink = match case {
        "header_map" => {
            let pairs: Vec<(&str, &[u8])> =
                BROWSER_GET.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
            let encoded = HeaderPairs::encode(&pairs);
            let mut sink = 0;
            for _ in 0..n {
                // The host's buffer arrives as a fresh allocation per request.
                let map = black_box(encoded.clone());
                for name in [":method", ":path", "origin", "user-agent", "x-request-id"] {
                    sink += map.get(name).map_or(0, <[u8]>::len);
                }
            }
            sink
        }
        "decide_empty" => decide("{}", &BROWSER_GET, n),
        "decide_t" => decide(BENCH_T, &BROWSER_GET, n),
        "decide_t_preflight" => decide(BENCH_T, &preflight, n),
        "decide_full_key" => decide(FULL, &with_key, n),
        "json" => format("json", n),
        "clf" => format("clf", n),
        "template" => format(
            "$context.requestId $context.httpMethod $context.path $context.status $context.responseLatency",
            n,
        ),
        other => panic!("unknown case {other}"),
    };
    black_box(sink);
}
