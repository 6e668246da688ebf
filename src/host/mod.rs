//! The only code that calls proxy-wasm: the core's traits implemented over hostcalls.
//! Every hostcall result is handled; nothing here unwraps. The calls go to the ABI directly
//! (the `extern` block below), not through the SDK's wrappers: those panic on any status they
//! do not expect, and a panic traps the VM. Only the gRPC call keeps the SDK's wrapper, which
//! registers the call for the SDK's dispatcher (it panics on no status Envoy 1.40 returns). The
//! `unsafe` blocks pass live slices and take over buffers the host allocated in this module's
//! memory, as the SDK does (`take_host_buffer`).

use std::cell::OnceCell;
use std::time::Duration;

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
        let (mut data, mut size, mut cas): (*mut u8, usize, u32) = (std::ptr::null_mut(), 0, 0);
        // SAFETY: `key` is a live slice the host only reads; it writes the out-parameters.
        let status = unsafe {
            proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
        };
        match status {
            OK => {
                // SAFETY: what the host returned for this successful call.
                let value = unsafe { take_host_buffer(status, data, size) };
                Ok(store::entry_from_host(value, (cas != 0).then_some(cas)))
            }
            s if s == Status::NotFound as u32 => Ok(None),
            _ => Err(StoreError::Host),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        // SAFETY: the slices are live; the host only reads them.
        let status = unsafe {
            proxy_set_shared_data(
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
                cas.unwrap_or(0),
            )
        };
        match status {
            OK => Ok(()),
            s if s == Status::CasMismatch as u32 => Err(StoreError::CasMismatch),
            _ => Err(StoreError::Host),
        }
    }
}

/// The host's wall clock in nanoseconds since the Unix epoch (0 if the host cannot say).
pub fn now_ns() -> u64 {
    let mut ns = 0u64;
    // SAFETY: the host writes one u64.
    match unsafe { proxy_get_current_time_nanoseconds(&mut ns) } {
        OK => ns,
        _ => 0,
    }
}

/// A random number from the host's random source (WASI `random_get`, as std's `RandomState`
/// uses). Should the host refuse, the wall clock in nanoseconds, which still differs between
/// the VMs of a proxy.
pub fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| now_ns())
}

/// A request header as bytes (any value, UTF-8 or not).
pub fn request_header(name: &str) -> Option<Vec<u8>> {
    header_value(MapType::HttpRequestHeaders, name)
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
    fn proxy_close_stream(stream_type: u32) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    // The reads too, for the same reason (the SDK panics on, say, a BadArgument from a header
    // read): here any status but Ok is "no value". A returned buffer is taken over as in
    // `header_map`.
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_log_level(return_level: *mut u32) -> u32;
}

const OK: u32 = Status::Ok as u32;

/// Takes over a buffer the host wrote into this module's memory for a call that answered
/// `status`: None unless the call succeeded with a buffer.
///
/// # Safety
/// `data` and `size` must be what the host returned for that call: a buffer it allocated
/// through the SDK's `proxy_on_memory_allocate` (a boxed slice, capacity == length) whose
/// ownership passes to the module, or null.
unsafe fn take_host_buffer(status: u32, data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if status != OK || data.is_null() {
        return None;
    }
    // SAFETY: by the caller's contract, `data` owns `size` bytes allocated as a Vec would.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// A header's first value (hosts answer a single read with the first value).
fn header_value(map: MapType, name: &str) -> Option<Vec<u8>> {
    let (mut data, mut size): (*mut u8, usize) = (std::ptr::null_mut(), 0);
    // SAFETY: `name` is a live slice the host only reads; it writes the out-parameters.
    unsafe {
        let status =
            proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut data, &mut size);
        // An empty value comes back as Ok with no buffer: present, not absent.
        if status == OK && data.is_null() {
            return Some(Vec::new());
        }
        take_host_buffer(status, data, size)
    }
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
    let (mut data, mut size): (*mut u8, usize) = (std::ptr::null_mut(), 0);
    // SAFETY: the host writes the out-parameters; the buffer is taken over as the SDK's own
    // `get_map_bytes` does.
    let bytes = unsafe {
        let status = proxy_get_header_map_pairs(map as u32, &mut data, &mut size);
        take_host_buffer(status, data, size)
    };
    bytes.map(HeaderPairs::new).unwrap_or_default()
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
    header_value(MapType::HttpResponseHeaders, name)
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

/// An Envoy attribute, its path's segments separated by NUL as the ABI wants them
/// (`b"source\0address"`, `b"plugin_root_id"`, ...).
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut size): (*mut u8, usize) = (std::ptr::null_mut(), 0);
    // SAFETY: `path` is a live slice the host only reads; it writes the out-parameters.
    unsafe {
        let status = proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size);
        take_host_buffer(status, data, size)
    }
}

/// An integer attribute (Envoy encodes them as 8 little-endian bytes).
pub fn property_u64(path: &[u8]) -> Option<u64> {
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
    let mut id = 0u32;
    // SAFETY: `name` is a live slice the host only reads; it writes one u32.
    let status = unsafe { proxy_define_metric(t as u32, name.as_ptr(), name.len(), &mut id) };
    (status == OK).then_some(id)
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

/// Bytes `0..max` of one of the host's buffers.
fn buffer(kind: BufferType, max: usize) -> Option<Vec<u8>> {
    let (mut data, mut size): (*mut u8, usize) = (std::ptr::null_mut(), 0);
    // SAFETY: the host writes the out-parameters.
    unsafe {
        let status = proxy_get_buffer_bytes(kind as u32, 0, max, &mut data, &mut size);
        take_host_buffer(status, data, size)
    }
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    buffer(BufferType::PluginConfiguration, usize::MAX)
}

/// Answers the request with the filter's headers and then `extra` (the rate limit service's);
/// `grpc_status` is what a gRPC client gets (`None`: the host maps `status`).
pub fn send_response_with(
    status: u16,
    headers: &[(&'static str, String)],
    extra: &[(String, String)],
    body: Option<&[u8]>,
    grpc_status: Option<i32>,
) -> bool {
    let pairs: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(n, v)| (*n, v.as_bytes()))
        .chain(extra.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))
        .collect();
    let map = HeaderPairs::encode(&pairs);
    let map = map.as_bytes();
    let body = body.unwrap_or_default();
    // SAFETY: the slices are live; the host only reads them. No details string; -1: no gRPC
    // status of the filter's own.
    let sent = unsafe {
        proxy_send_local_response(
            u32::from(status),
            std::ptr::null(),
            0,
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            grpc_status.unwrap_or(-1),
        )
    };
    sent == OK
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
    buffer(BufferType::GrpcReceiveBuffer, size)
}

/// Lets a paused request go on.
pub fn resume_request() {
    // SAFETY: no pointers. 0: the ABI's `StreamType::HttpRequest`.
    unsafe {
        proxy_continue_stream(0);
    }
}

/// Resets the request's stream (the client gets no answer but a reset).
pub fn reset_request() {
    // SAFETY: no pointers. 0: the ABI's `StreamType::HttpRequest`.
    unsafe {
        proxy_close_stream(0);
    }
}

/// Whether the host would keep a log line at `level` (so unwanted lines are never built).
pub fn log_enabled(level: LogLevel) -> bool {
    let mut current = 0u32;
    // SAFETY: the host writes one u32.
    match unsafe { proxy_get_log_level(&mut current) } {
        OK => current <= level as u32,
        _ => true,
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
    body: bool,
}

impl HostRequest {
    /// The request's header map as read.
    pub fn headers(&self) -> &HeaderPairs {
        &self.headers
    }

    /// The request has a body: its headers did not end the stream.
    pub fn with_body(mut self, body: bool) -> HostRequest {
        self.body = body;
        self
    }

    /// Reads the request headers now (one host call).
    pub fn read() -> HostRequest {
        HostRequest {
            headers: request_headers(),
            source: OnceCell::new(),
            body: false,
        }
    }
}

impl RequestSource for HostRequest {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    fn header_joined(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.joined(name)
    }

    fn header_once(&self, name: &str) -> Option<Result<&[u8], crate::gateway::Repeated>> {
        self.headers.get_once(name)
    }

    fn source_address(&self) -> Option<&[u8]> {
        self.source
            .get_or_init(|| property(b"source\0address"))
            .as_deref()
    }

    fn has_body(&self) -> bool {
        self.body
    }
}
