//! Host-call probe. The plugin configuration is a comma list of `op=N`; each request runs every
//! op N times, in the phase where a filter would call it.
//!
//! Request headers: `hdr` (get_header_map_value of a present header, cycling through five),
//! `hdrmiss` (an absent header), `map` (get_header_map_pairs, the whole request map, decoded by
//! the SDK into owned pairs), `mapraw` (the same call, read in place without allocating), `prop`
//! (get_property source.address), `proto` (get_property request.protocol), `time`
//! (get_current_time), `cas` (get_shared_data then a CAS set_shared_data), `level`
//! (get_log_level), `fs` (set_property: a filter state value).
//! Response headers: `rset` (set a response header), `rrm` (remove an absent response header),
//! `rmap` (get_header_map_pairs of the response), `rmapraw` (the same read in place), `radd` (add_header_map_value: a response
//! header known to be absent), `rpairs` (set_header_map_pairs: the response's map as read once,
//! plus T's six headers, written back whole; what one call instead of six sets would cost).
//! Log: `fslog` (set_property in on_log), `rcode` and `rsize` (get_property response.code, response.size), `ctr`
//! (increment_metric of a counter), `hist` (record_metric of a histogram), `log` (a 400-byte
//! line at info, which the bench's Envoy writes), `logdrop` (the same at debug, which the host
//! drops), `props3` (the three properties tollgate's access record reads: source.address,
//! request.protocol, response.size), `expr` (the same three as one CEL list through Envoy's
//! `expr_evaluate` foreign function, compiled once by `expr_create` at configure), `props2` and
//! `expr2` (the same for the two values T's record reads: source.address, request.protocol).
//! Counted under callgrind (2026-12-05): three reads 36.9k instructions, `expr` 25.7k; two reads
//! 24.6k, `expr2` 23.5k, so for tollgate's record the expression saves about 1k.
//!
//! `mimic=1` makes the same host calls, in the same phases, as tollgate with the `make bench`
//! T configuration (22 per request: 4 on request headers, 8 on response headers, 10 in on_log;
//! 33, then 28, then 23 before the header maps were read in one call, filter state exported at
//! the end and the response's length taken from its headers) and
//! nothing else; `lean=1` gets the same information with 19 (see the comments): the gap between
//! them is what fewer host calls would save.
//!
//! A bench tool: unlike tollgate, it may panic on a host error (that would fail the run).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};
use std::rc::Rc;

#[derive(Default, Clone)]
struct Ops {
    hdr: u32,
    hdrmiss: u32,
    map: u32,
    mapraw: u32,
    prop: u32,
    proto: u32,
    rcode: u32,
    rsize: u32,
    time: u32,
    cas: u32,
    level: u32,
    rset: u32,
    rrm: u32,
    rmap: u32,
    rmapraw: u32,
    radd: u32,
    rpairs: u32,
    log: u32,
    logdrop: u32,
    fs: u32,
    fslog: u32,
    mimic: u32,
    lean: u32,
    ctr: u32,
    hist: u32,
    props3: u32,
    expr: u32,
    props2: u32,
    expr2: u32,
    counter_id: u32,
    histogram_id: u32,
    /// Envoy's token for the CEL expression `expr` evaluates (None: not asked or refused).
    expr_token: Option<[u8; 4]>,
    /// The same for `expr2`.
    expr2_token: Option<[u8; 4]>,
}

impl Ops {
    fn parse(s: &str) -> Ops {
        let mut o = Ops::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, n) = item.split_once('=').unwrap_or((item, "1"));
            let n: u32 = n.parse().unwrap_or(1);
            match name {
                "hdr" => o.hdr = n,
                "hdrmiss" => o.hdrmiss = n,
                "map" => o.map = n,
                "mapraw" => o.mapraw = n,
                "prop" => o.prop = n,
                "proto" => o.proto = n,
                "rcode" => o.rcode = n,
                "rsize" => o.rsize = n,
                "time" => o.time = n,
                "cas" => o.cas = n,
                "level" => o.level = n,
                "rset" => o.rset = n,
                "rrm" => o.rrm = n,
                "rmap" => o.rmap = n,
                "rmapraw" => o.rmapraw = n,
                "radd" => o.radd = n,
                "rpairs" => o.rpairs = n,
                "log" => o.log = n,
                "logdrop" => o.logdrop = n,
                "fs" => o.fs = n,
                "fslog" => o.fslog = n,
                "mimic" => o.mimic = n,
                "lean" => o.lean = n,
                "ctr" => o.ctr = n,
                "hist" => o.hist = n,
                "props3" => o.props3 = n,
                "expr" => o.expr = n,
                "props2" => o.props2 = n,
                "expr2" => o.expr2 = n,
                _ => {}
            }
        }
        o
    }
}

const KEY: &str = "probe:counter";
/// The six response headers tollgate's T configuration sets.
const T_RESPONSE_HEADERS: [(&str, &str); 6] = [
    ("ratelimit-policy", "\"stage\";q=4000000000;w=4"),
    ("ratelimit", "\"stage\";r=3999999999;t=1"),
    ("access-control-allow-origin", "http://localhost:3000"),
    ("access-control-allow-credentials", "true"),
    (
        "access-control-expose-headers",
        "x-request-id, ratelimit, ratelimit-policy",
    ),
    ("vary", "Origin"),
];
/// The three values tollgate's access record reads as properties, as one CEL list.
const LOG_EXPRESSION: &str = "[source.address, request.protocol, response.size]";
/// The two tollgate's JSON record still reads as properties (the length comes from the headers).
const LOG_EXPRESSION2: &str = "[source.address, request.protocol]";
const HEADERS: [&str; 5] = [":method", ":path", "origin", "user-agent", "x-request-id"];
const PROPERTY_NAMES: [&str; 10] = [
    "probe.p0", "probe.p1", "probe.p2", "probe.p3", "probe.p4", "probe.p5", "probe.p6", "probe.p7",
    "probe.p8", "probe.p9",
];
const RESPONSE_NAMES: [&str; 10] = [
    "x-probe-0",
    "x-probe-1",
    "x-probe-2",
    "x-probe-3",
    "x-probe-4",
    "x-probe-5",
    "x-probe-6",
    "x-probe-7",
    "x-probe-8",
    "x-probe-9",
];

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> proxy_wasm::types::Status;
}

fn le32(b: &[u8], at: usize) -> usize {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// The whole request map in one call, read in place (no String/Vec per header, unlike the
/// SDK's get_map_bytes): finds the five headers `hdr` reads and returns their total length.
fn request_map_raw() -> usize {
    map_raw(MapType::HttpRequestHeaders)
}

fn map_raw(map: MapType) -> usize {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if data.is_null() {
        return 0;
    }
    // Taking ownership frees the host-allocated buffer at the end.
    let bytes = unsafe { Vec::from_raw_parts(data, size, size) };
    let count = le32(&bytes, 0);
    let mut p = 4 + count * 8;
    let mut found = 0;
    for n in 0..count {
        let (ks, vs) = (le32(&bytes, 4 + n * 8), le32(&bytes, 8 + n * 8));
        let key = &bytes[p..p + ks];
        let value = &bytes[p + ks + 1..p + ks + 1 + vs];
        p += ks + vs + 2;
        if HEADERS.iter().any(|h| h.as_bytes() == key) {
            found += value.len();
        }
    }
    found
}

fn now() -> usize {
    let t = hostcalls::get_current_time().unwrap();
    t.elapsed().map_or(0, |d| d.subsec_nanos() as usize & 1)
}

fn prop(path: &[&str]) -> usize {
    let v = hostcalls::get_property(path.to_vec()).unwrap();
    v.map_or(0, |v| v.len())
}

fn set_resp(name: &str, value: &str) {
    hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value)).unwrap();
}

/// A shared-data read and compare-and-swap write of a counter.
fn cas(key: &str) -> usize {
    if let (Some(v), cas) = hostcalls::get_shared_data(key).unwrap() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[..8]);
        let next = u64::from_le_bytes(b).wrapping_add(1).to_le_bytes();
        let _ = hostcalls::set_shared_data(key, Some(&next), cas);
        return 1;
    }
    0
}

/// A JSON access line of tollgate's size (about 500 bytes).
fn log_line(sink: usize) -> String {
    format!(
        "{{\"requestId\":\"5f0c6f2e-8d0b-4c55-9a36-2f1b3a7c9d11\",\"requestTime\":\"25/Nov/2026:10:00:00 +0000\",\"requestTimeEpoch\":1795600000000,\"httpMethod\":\"GET\",\"resourcePath\":null,\"path\":\"/pets/1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"responseLength\":35,\"responseLatency\":0,\"integrationLatency\":0,\"identity.sourceIp\":\"127.0.0.1\",\"identity.userAgent\":\"tollgate-bench\",\"identity.apiKeyId\":null,\"stage\":\"bench\",\"error.message\":null,\"error.responseType\":null,\"cacheStatus\":null,\"n\":{sink}}}"
    )
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

#[derive(Default)]
struct Root {
    ops: Rc<Ops>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let cfg = self
            .get_plugin_configuration()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut ops = Ops::parse(&cfg);
        ops.counter_id = hostcalls::define_metric(MetricType::Counter, "probe.requests").unwrap();
        ops.histogram_id =
            hostcalls::define_metric(MetricType::Histogram, "probe.latency").unwrap();
        let _ = hostcalls::set_shared_data(KEY, Some(&0u64.to_le_bytes()), None);
        if ops.expr > 0 {
            // Envoy's `expr_create` foreign function compiles a CEL expression once and returns
            // a 4-byte token for `expr_evaluate`.
            let token =
                hostcalls::call_foreign_function("expr_create", Some(LOG_EXPRESSION.as_bytes()))
                    .unwrap()
                    .unwrap();
            ops.expr_token = Some(token[..4].try_into().unwrap());
        }
        if ops.expr2 > 0 {
            let token =
                hostcalls::call_foreign_function("expr_create", Some(LOG_EXPRESSION2.as_bytes()))
                    .unwrap()
                    .unwrap();
            ops.expr2_token = Some(token[..4].try_into().unwrap());
        }
        self.ops = Rc::new(ops);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            ops: Rc::clone(&self.ops),
            sink: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    ops: Rc<Ops>,
    /// Keeps results alive so no call is optimised away.
    sink: usize,
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let o = Rc::clone(&self.ops);
        if o.mimic > 0 {
            // tollgate's T configuration (throttle + CORS + JSON log), request headers: 4 calls
            // (the clock, one read of the header map, the bucket's get and CAS set).
            self.sink += now();
            self.sink += request_map_raw();
            self.sink += cas(KEY);
        }
        if o.lean > 0 {
            // The same information with fewer calls: one map read in place for the five
            // headers, the CAS, the source address and protocol; no filter state: 7 calls.
            self.sink += now();
            self.sink += request_map_raw();
            self.sink += cas(KEY);
            self.sink += hostcalls::get_log_level().unwrap() as usize;
            self.sink += prop(&["source", "address"]);
            self.sink += prop(&["request", "protocol"]);
        }
        for i in 0..o.hdr as usize {
            let name = HEADERS[i % HEADERS.len()];
            let v = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.hdrmiss {
            let v =
                hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-absent").unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.map {
            let m = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap();
            self.sink += m.len();
        }
        for _ in 0..o.mapraw {
            self.sink += request_map_raw();
        }
        for _ in 0..o.prop {
            let v = hostcalls::get_property(vec!["source", "address"]).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.proto {
            let v = hostcalls::get_property(vec!["request", "protocol"]).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.time {
            let t = hostcalls::get_current_time().unwrap();
            self.sink += t.elapsed().map_or(0, |d| d.subsec_nanos() as usize & 1);
        }
        for _ in 0..o.level {
            self.sink += hostcalls::get_log_level().unwrap() as usize;
        }
        for _ in 0..o.cas {
            if let (Some(v), cas) = hostcalls::get_shared_data(KEY).unwrap() {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v[..8]);
                let next = u64::from_le_bytes(b).wrapping_add(1).to_le_bytes();
                let _ = hostcalls::set_shared_data(KEY, Some(&next), cas);
            }
        }
        for i in 0..o.fs as usize {
            let name = PROPERTY_NAMES[i % PROPERTY_NAMES.len()];
            hostcalls::set_property(vec![name], Some(b"bench-stage")).unwrap();
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let o = Rc::clone(&self.ops);
        if o.mimic > 0 {
            // Response headers: 8 calls (clock, one read of the response map in place for
            // :status, Vary and the CORS headers present, 2 RateLimit headers, 3 CORS headers,
            // Vary).
            self.sink += now();
            self.sink += map_raw(MapType::HttpResponseHeaders);
            set_resp("ratelimit-policy", "\"stage\";q=4000000000;w=4");
            set_resp("ratelimit", "\"stage\";r=3999999999;t=1");
            set_resp("access-control-allow-origin", "http://localhost:3000");
            set_resp("access-control-allow-credentials", "true");
            set_resp(
                "access-control-expose-headers",
                "x-request-id, ratelimit, ratelimit-policy",
            );
            set_resp("vary", "Origin");
        }
        if o.lean > 0 {
            // One read of the response map tells which CORS headers and which Vary the upstream
            // sent (none here): 7 calls (2 RateLimit headers, 3 CORS headers, Vary, the map);
            // the clock is read once, in on_log.
            let m = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap();
            self.sink += m.len();
            set_resp("ratelimit-policy", "\"stage\";q=4000000000;w=4");
            set_resp("ratelimit", "\"stage\";r=3999999999;t=1");
            set_resp("access-control-allow-origin", "http://localhost:3000");
            set_resp("access-control-allow-credentials", "true");
            set_resp(
                "access-control-expose-headers",
                "x-request-id, ratelimit, ratelimit-policy",
            );
            set_resp("vary", "Origin");
        }
        for i in 0..o.rset as usize {
            let name = RESPONSE_NAMES[i % RESPONSE_NAMES.len()];
            hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some("v")).unwrap();
        }
        for _ in 0..o.rrm {
            hostcalls::remove_map_value(MapType::HttpResponseHeaders, "x-absent").unwrap();
        }
        for i in 0..o.radd as usize {
            let name = RESPONSE_NAMES[i % RESPONSE_NAMES.len()];
            hostcalls::add_map_value(MapType::HttpResponseHeaders, name, "v").unwrap();
        }
        if o.rpairs > 0 {
            let read = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap();
            let mut pairs: Vec<(&str, &[u8])> = read
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            pairs.extend(T_RESPONSE_HEADERS.iter().map(|(k, v)| (*k, v.as_bytes())));
            for _ in 0..o.rpairs {
                hostcalls::set_map_bytes(MapType::HttpResponseHeaders, pairs.clone()).unwrap();
            }
        }
        for _ in 0..o.rmapraw {
            self.sink += map_raw(MapType::HttpResponseHeaders);
        }
        for _ in 0..o.rmap {
            let m = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap();
            self.sink += m.len();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let o = Rc::clone(&self.ops);
        if o.mimic > 0 {
            // on_log: 10 calls (two filter state values, log level, clock, a counter, two
            // histograms, source address, protocol, the line; the response's length comes
            // from the response map read above).
            hostcalls::set_property(vec!["probe.stage"], Some(b"bench")).unwrap();
            hostcalls::set_property(vec!["probe.integration"], Some(b"0")).unwrap();
            self.sink += hostcalls::get_log_level().unwrap() as usize;
            self.sink += now();
            hostcalls::increment_metric(o.counter_id, 1).unwrap();
            hostcalls::record_metric(o.histogram_id, 1).unwrap();
            hostcalls::record_metric(o.histogram_id, 0).unwrap();
            self.sink += prop(&["source", "address"]);
            self.sink += prop(&["request", "protocol"]);
            hostcalls::log(LogLevel::Info, &log_line(self.sink)).unwrap();
        }
        if o.lean > 0 {
            // 5 calls: clock, status, size, one counter, the line (histograms and filter state
            // left to Envoy's own stats and access loggers).
            self.sink += now();
            self.sink += prop(&["response", "code"]);
            self.sink += prop(&["response", "size"]);
            hostcalls::increment_metric(o.counter_id, 1).unwrap();
            hostcalls::log(LogLevel::Info, &log_line(self.sink)).unwrap();
        }
        for _ in 0..o.ctr {
            hostcalls::increment_metric(o.counter_id, 1).unwrap();
        }
        for i in 0..o.hist {
            hostcalls::record_metric(o.histogram_id, u64::from(i % 7)).unwrap();
        }
        for i in 0..o.fslog as usize {
            let name = PROPERTY_NAMES[i % PROPERTY_NAMES.len()];
            hostcalls::set_property(vec![name], Some(b"12")).unwrap();
        }
        for _ in 0..o.props3 {
            self.sink += prop(&["source", "address"]);
            self.sink += prop(&["request", "protocol"]);
            self.sink += prop(&["response", "size"]);
        }
        for _ in 0..o.props2 {
            self.sink += prop(&["source", "address"]);
            self.sink += prop(&["request", "protocol"]);
        }
        for _ in 0..o.expr2 {
            let token = o.expr2_token.unwrap();
            let v = hostcalls::call_foreign_function("expr_evaluate", Some(&token)).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.expr {
            let token = o.expr_token.unwrap();
            let v = hostcalls::call_foreign_function("expr_evaluate", Some(&token)).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.rcode {
            let v = hostcalls::get_property(vec!["response", "code"]).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        for _ in 0..o.rsize {
            let v = hostcalls::get_property(vec!["response", "size"]).unwrap();
            self.sink += v.map_or(0, |v| v.len());
        }
        if o.log == 0 && o.logdrop == 0 {
            return;
        }
        let line = format!(
            "{{\"probe\":\"{}\",\"pad\":\"{}\"}}",
            self.sink,
            "x".repeat(370)
        );
        for _ in 0..o.log {
            hostcalls::log(LogLevel::Info, &line).unwrap();
        }
        for _ in 0..o.logdrop {
            hostcalls::log(LogLevel::Debug, &line).unwrap();
        }
    }
}
