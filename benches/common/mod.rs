//! What the benchmarks share: the `make bench` configurations and a request as the pipeline
//! sees it.
#![allow(dead_code)] // each benchmark binary uses part of it

use std::collections::HashMap;

use tollgate::gateway::RequestSource;
use tollgate::header_pairs::HeaderPairs;

pub const SEC: u64 = 1_000_000_000;
pub const T0: u64 = 1_764_000_000 * SEC; // 2025-11-24

/// A request as the pipeline sees it: header reads come from a small map, as the host's would.
pub struct FakeRequest {
    headers: HashMap<&'static str, Vec<u8>>,
    addr: Vec<u8>,
}

impl FakeRequest {
    pub fn new(pairs: &[(&'static str, &str)]) -> FakeRequest {
        FakeRequest {
            headers: pairs
                .iter()
                .map(|(n, v)| (*n, v.as_bytes().to_vec()))
                .collect(),
            addr: b"10.1.2.3:40000".to_vec(),
        }
    }
}

impl RequestSource for FakeRequest {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(Vec::as_slice)
    }
    fn source_address(&self) -> Option<&[u8]> {
        Some(&self.addr)
    }
}

/// The `make bench` "T" configuration: never-tripping stage throttle, CORS, JSON access log.
pub const BENCH_T: &str = r#"{
  "stage": "bench",
  "throttle": {"rate": 1000000000, "burst": 4000000000},
  "cors": {"allow_origins": ["http://localhost:3000", "https://*.example.com"],
           "allow_methods": ["GET", "POST", "PUT", "DELETE"],
           "allow_headers": ["content-type", "authorization", "x-api-key"],
           "expose_headers": ["x-request-id", "ratelimit", "ratelimit-policy"],
           "max_age": 600, "allow_credentials": true},
  "access_log": {"format": "json"}
}"#;

/// Everything on: key, usage plan throttle and quota, route throttle, stage, client throttle.
pub const FULL: &str = r#"{
  "stage": "bench",
  "api_key": {"keys": [{"id": "partner-a", "value": "bench-key-1", "usage_plan": "gold"}]},
  "usage_plans": {"gold": {"throttle": {"rate": 1000000000, "burst": 4000000000},
                           "quota": {"limit": 1000000000000, "period": "MONTH"}}},
  "throttle": {"rate": 1000000000, "burst": 4000000000},
  "client_throttle": {"by": "ip", "rate": 1000000000, "burst": 4000000000},
  "cors": {"allow_origins": ["http://localhost:3000"], "allow_credentials": true},
  "access_log": {"format": "json"},
  "routes": [
    {"match": "GET /pets/{id}", "throttle": {"rate": 1000000000, "burst": 4000000000}},
    {"match": "POST /pets", "api_key_required": true},
    {"match": "ANY /admin/{proxy+}", "api_key_required": true, "cors": false}
  ]
}"#;

/// A request as the filter reads it: the whole header map in the host's serialization, looked
/// up in place ([`HeaderPairs`]), as `HostRequest` does inside Envoy.
pub struct MapRequest {
    pub headers: HeaderPairs,
    addr: Vec<u8>,
}

impl MapRequest {
    pub fn new(pairs: &[(&str, &str)]) -> MapRequest {
        let pairs: Vec<(&str, &[u8])> = pairs.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        MapRequest {
            headers: HeaderPairs::encode(&pairs),
            addr: b"10.1.2.3:40000".to_vec(),
        }
    }
}

impl RequestSource for MapRequest {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
    fn source_address(&self) -> Option<&[u8]> {
        Some(&self.addr)
    }
}

/// What a browser's `GET /pets/1` through Envoy looks like to the filter: Envoy's pseudo-headers
/// and request id, and a browser's headers, Origin among them.
pub const BROWSER_GET: [(&str, &str); 12] = [
    (":authority", "api.example.com"),
    (":path", "/pets/1"),
    (":method", "GET"),
    (":scheme", "http"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/156.0",
    ),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-language", "en-US,en;q=0.9"),
    ("origin", "http://localhost:3000"),
    ("referer", "http://localhost:3000/"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5f0c6f2e-8d0b-4c55-9a36-2f1b3a7c9d11"),
];
