//! The only code that calls proxy-wasm: the core's traits implemented over hostcalls.
//! Every hostcall result is handled; nothing here unwraps. The one `unsafe` block is the raw
//! header-map read (`header_map`), which takes over the host's buffer as the SDK does.

use std::cell::OnceCell;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

use crate::gateway::RequestSource;
use crate::header_pairs::HeaderPairs;
use crate::metrics::MetricKind;
use crate::throttle::store::{self, SharedStore, StoreError};

/// Envoy shared data.
pub struct HostStore;

impl SharedStore for HostStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => Ok(store::entry_from_host(value, cas)),
            Err(_) => Err(StoreError::Host),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Host),
        }
    }
}

/// The host's wall clock in nanoseconds since the Unix epoch (0 if the host cannot say).
pub fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A random number from the host's random source (WASI `random_get`, as std's `RandomState`
/// uses). Should the host refuse, the wall clock in nanoseconds, which still differs between
/// the VMs of a proxy.
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_ns())
}

/// A request header as bytes (any value, UTF-8 or not).
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

#[link(wasm_import_module = "env")]
extern "C" {
    // The ABI's call, declared here because the SDK's wrapper decodes the map into a `String`
    // and a `Vec` per header. `map_type` is a `MapType`, the result a `Status` (0: Ok).
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    // The writes below are called directly too: the SDK's wrappers (proxy-wasm 0.2.5) panic on
    // a status they do not expect (any but Ok for a header write), and a panic traps the VM.
    // Their statuses are ignored: a write the host refuses leaves the response as it was.
    fn proxy_add_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
}

/// A write to a header map.
#[derive(Clone, Copy)]
enum Write<'a> {
    /// Adds a value beside any the header has.
    Add(&'a [u8]),
    /// Replaces every value the header has.
    Replace(&'a [u8]),
    Remove,
}

/// Writes header `name` of `map`, whatever the host answers (a refused write leaves the map as
/// it was; the SDK's wrappers would trap on it). Inlined: each caller's constant choice then
/// folds to its one host call (a shared body costs the module 181 bytes).
#[inline(always)]
fn write_header(map: MapType, name: &str, write: Write<'_>) {
    let (map, name_ptr, name_len) = (map as u32, name.as_ptr(), name.len());
    // SAFETY: the pointers and lengths describe live slices the host only reads during the call.
    unsafe {
        match write {
            Write::Add(v) => {
                proxy_add_header_map_value(map, name_ptr, name_len, v.as_ptr(), v.len())
            }
            Write::Replace(v) => {
                proxy_replace_header_map_value(map, name_ptr, name_len, v.as_ptr(), v.len())
            }
            Write::Remove => proxy_remove_header_map_value(map, name_ptr, name_len),
        };
    }
}

/// A whole header map in one host call, read in place by [`HeaderPairs`] (empty when the host
/// has no such map to give).
fn header_map(map: MapType) -> HeaderPairs {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes the address and length of a buffer it allocated in this module's
    // memory through the SDK's `proxy_on_memory_allocate` (a boxed slice: capacity == length),
    // whose ownership passes to us; the SDK's own `get_map_bytes` takes it the same way.
    let status = unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) };
    if status != Status::Ok as u32 || data.is_null() {
        return HeaderPairs::default();
    }
    // SAFETY: as above; `data` is non-null and owns `size` bytes.
    HeaderPairs::new(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Every request header, in one host call.
pub fn request_headers() -> HeaderPairs {
    header_map(MapType::HttpRequestHeaders)
}

/// Every response header, in order, in one host call.
pub fn response_headers() -> HeaderPairs {
    header_map(MapType::HttpResponseHeaders)
}

pub fn response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// Sets (replacing every existing value) a response header.
pub fn set_response_header(name: &str, value: &str) {
    write_header(
        MapType::HttpResponseHeaders,
        name,
        Write::Replace(value.as_bytes()),
    );
}

pub fn add_response_header(name: &str, value: &str) {
    write_header(
        MapType::HttpResponseHeaders,
        name,
        Write::Add(value.as_bytes()),
    );
}

pub fn remove_response_header(name: &str) {
    write_header(MapType::HttpResponseHeaders, name, Write::Remove);
}

/// Sets (replacing every existing value) a response header to arbitrary bytes.
pub fn set_response_header_bytes(name: &str, value: &[u8]) {
    write_header(MapType::HttpResponseHeaders, name, Write::Replace(value));
}

/// Sets (replacing every existing value) a request header (`:path` included).
pub fn set_request_header(name: &str, value: &[u8]) {
    write_header(MapType::HttpRequestHeaders, name, Write::Replace(value));
}

pub fn remove_request_header(name: &str) {
    write_header(MapType::HttpRequestHeaders, name, Write::Remove);
}

/// An Envoy attribute (`source.address`, `plugin_root_id`, ...).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// An integer attribute (Envoy encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[&str]) -> Option<u64> {
    let bytes = property(path)?;
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    u64::try_from(i64::from_le_bytes(arr)).ok()
}

/// Sets a property of the stream; Envoy keeps `set_property(["NAME"], v)` as filter state
/// `wasm.NAME` (a bytes value), for its access loggers (`%FILTER_STATE(wasm.NAME:PLAIN)%`) and
/// CEL. Failures (no stream) are ignored. A one-segment path is the name itself (the ABI
/// separates segments with NUL).
pub fn set_property(name: &str, value: &[u8]) {
    // SAFETY: as in `write_header`.
    unsafe {
        proxy_set_property(name.as_ptr(), name.len(), value.as_ptr(), value.len());
    }
}

/// Defines a custom metric; Envoy names it `wasmcustom.<name>`. None if the host refuses.
pub fn define_metric(kind: MetricKind, name: &str) -> Option<u32> {
    let t = match kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Histogram => MetricType::Histogram,
    };
    hostcalls::define_metric(t, name).ok()
}

pub fn increment_metric(id: u32, by: i64) {
    // SAFETY: no pointers; the host checks the id.
    unsafe {
        proxy_increment_metric(id, by);
    }
}

/// Records a histogram value.
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers; the host checks the id.
    unsafe {
        proxy_record_metric(id, value);
    }
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .ok()
        .flatten()
}

/// Answers the request from the filter.
pub fn send_response(status: u16, headers: &[(&'static str, String)], body: Option<&[u8]>) -> bool {
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    hostcalls::send_http_response(u32::from(status), pairs, body).is_ok()
}

/// Answers the request with the filter's headers and then `extra` (the rate limit service's).
pub fn send_response_with(
    status: u16,
    headers: &[(&'static str, String)],
    extra: &[(String, String)],
    body: Option<&[u8]>,
) -> bool {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .chain(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .collect();
    hostcalls::send_http_response(u32::from(status), pairs, body).is_ok()
}

/// Starts a unary gRPC call to `target` (an encoded `GrpcService`, see
/// `ratelimit_service::grpc_service`). The answer comes to the calling context's
/// `on_grpc_call_response`; `None` when the host refuses the call.
pub fn grpc_call(
    target: &str,
    service: &str,
    method: &str,
    message: &[u8],
    timeout_ms: u32,
) -> Option<u32> {
    hostcalls::dispatch_grpc_call(
        target,
        service,
        method,
        Vec::new(),
        Some(message),
        Duration::from_millis(u64::from(timeout_ms)),
    )
    .ok()
}

/// The body of a gRPC answer (inside `on_grpc_call_response`).
pub fn grpc_call_response(size: usize) -> Option<Vec<u8>> {
    hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
}

/// Lets a paused request go on.
pub fn resume_request() {
    // SAFETY: no pointers. 0: the ABI's `StreamType::HttpRequest`.
    unsafe {
        proxy_continue_stream(0);
    }
}

/// Whether the host would keep a log line at `level` (so unwanted lines are never built).
pub fn log_enabled(level: LogLevel) -> bool {
    match hostcalls::get_log_level() {
        Ok(current) => (current as u32) <= (level as u32),
        Err(_) => true,
    }
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: as in `write_header`.
    unsafe {
        proxy_log(level as u32, message.as_ptr(), message.len());
    }
}

/// The request as the pipeline and the access record read it: every request header from one
/// host call, lookups borrowing from that one buffer, and the source address on first use.
pub struct HostRequest {
    headers: HeaderPairs,
    source: OnceCell<Option<Vec<u8>>>,
}

impl HostRequest {
    /// Reads the request headers now (one host call).
    pub fn read() -> HostRequest {
        HostRequest {
            headers: request_headers(),
            source: OnceCell::new(),
        }
    }
}

impl RequestSource for HostRequest {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    fn source_address(&self) -> Option<&[u8]> {
        self.source
            .get_or_init(|| property(&["source", "address"]))
            .as_deref()
    }
}
