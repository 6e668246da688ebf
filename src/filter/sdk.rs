//! Overrides of the proxy-wasm SDK's helper methods (`get_http_request_headers`,
//! `dispatch_grpc_call`, `set_tick_period`, ...) for tollgate's contexts.
//!
//! The SDK's dispatcher holds each context as a `Box<dyn RootContext>` or `Box<dyn HttpContext>`,
//! so every default method of those traits sits in a vtable and stays in the module, with the
//! host call it wraps and the `unwrap`'s `Debug` formatting behind it, though nothing calls it:
//! the dispatcher calls only the `on_*` callbacks, `create_http_context` and `get_type`, and
//! tollgate reaches the host through `crate::host`. These overrides put one small function in
//! the vtables instead: 6,320 bytes less of the optimized module. Calling one aborts; call
//! `crate::host` instead. `clippy.toml` lists every one of them under `disallowed-methods`, so
//! a call is a lint error (`make clippy`, `make test`) before it can be a trap.

/// What each helper does: never called (see the module's comment).
#[cold]
#[inline(never)]
pub(crate) fn unused() -> ! {
    std::process::abort()
}

/// `Context`'s helper methods, each calling [`unused`].
macro_rules! context_helpers {
    () => {
        fn get_current_time(&self) -> std::time::SystemTime {
            $crate::filter::sdk::unused()
        }
        fn get_property(&self, _path: Vec<&str>) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_property(&self, _path: Vec<&str>, _value: Option<&[u8]>) {
            $crate::filter::sdk::unused()
        }
        fn get_shared_data(&self, _key: &str) -> (Option<proxy_wasm::types::Bytes>, Option<u32>) {
            $crate::filter::sdk::unused()
        }
        fn set_shared_data(
            &self,
            _key: &str,
            _value: Option<&[u8]>,
            _cas: Option<u32>,
        ) -> Result<(), proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn remove_shared_data(
            &self,
            _key: &str,
            _cas: Option<u32>,
        ) -> Result<(), proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn register_shared_queue(&self, _name: &str) -> u32 {
            $crate::filter::sdk::unused()
        }
        fn resolve_shared_queue(&self, _vm_id: &str, _name: &str) -> Option<u32> {
            $crate::filter::sdk::unused()
        }
        fn dequeue_shared_queue(
            &self,
            _queue_id: u32,
        ) -> Result<Option<proxy_wasm::types::Bytes>, proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn enqueue_shared_queue(
            &self,
            _queue_id: u32,
            _value: Option<&[u8]>,
        ) -> Result<(), proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn dispatch_http_call(
            &self,
            _upstream: &str,
            _headers: Vec<(&str, &str)>,
            _body: Option<&[u8]>,
            _trailers: Vec<(&str, &str)>,
            _timeout: std::time::Duration,
        ) -> Result<u32, proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_headers(&self) -> Vec<(String, String)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_headers_bytes(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_header(&self, _name: &str) -> Option<String> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_header_bytes(
            &self,
            _name: &str,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_body(
            &self,
            _start: usize,
            _max_size: usize,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_trailers(&self) -> Vec<(String, String)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_trailers_bytes(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_trailer(&self, _name: &str) -> Option<String> {
            $crate::filter::sdk::unused()
        }
        fn get_http_call_response_trailer_bytes(
            &self,
            _name: &str,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn dispatch_grpc_call(
            &self,
            _upstream_name: &str,
            _service_name: &str,
            _method_name: &str,
            _initial_metadata: Vec<(&str, &[u8])>,
            _message: Option<&[u8]>,
            _timeout: std::time::Duration,
        ) -> Result<u32, proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_call_response_body(
            &self,
            _start: usize,
            _max_size: usize,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn cancel_grpc_call(&self, _token_id: u32) {
            $crate::filter::sdk::unused()
        }
        fn open_grpc_stream(
            &self,
            _cluster_name: &str,
            _service_name: &str,
            _method_name: &str,
            _initial_metadata: Vec<(&str, &[u8])>,
        ) -> Result<u32, proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_stream_initial_metadata(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_stream_initial_metadata_value(
            &self,
            _name: &str,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn send_grpc_stream_message(
            &self,
            _token_id: u32,
            _message: Option<&[u8]>,
            _end_stream: bool,
        ) {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_stream_message(
            &mut self,
            _start: usize,
            _max_size: usize,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_stream_trailing_metadata(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_stream_trailing_metadata_value(
            &self,
            _name: &str,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn cancel_grpc_stream(&self, _token_id: u32) {
            $crate::filter::sdk::unused()
        }
        fn close_grpc_stream(&self, _token_id: u32) {
            $crate::filter::sdk::unused()
        }
        fn get_grpc_status(&self) -> (u32, Option<String>) {
            $crate::filter::sdk::unused()
        }
        fn call_foreign_function(
            &self,
            _function_name: &str,
            _arguments: Option<&[u8]>,
        ) -> Result<Option<proxy_wasm::types::Bytes>, proxy_wasm::types::Status> {
            $crate::filter::sdk::unused()
        }
        fn done(&self) {
            $crate::filter::sdk::unused()
        }
    };
}
pub(crate) use context_helpers;

/// `RootContext`'s helper methods, each calling [`unused`].
macro_rules! root_helpers {
    () => {
        fn get_vm_configuration(&self) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn get_plugin_configuration(&self) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_tick_period(&self, _period: std::time::Duration) {
            $crate::filter::sdk::unused()
        }
    };
}
pub(crate) use root_helpers;

/// `HttpContext`'s helper methods, each calling [`unused`].
macro_rules! http_helpers {
    () => {
        fn get_http_request_headers(&self) -> Vec<(String, String)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_headers_bytes(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_headers(&self, _headers: Vec<(&str, &str)>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_headers_bytes(&self, _headers: Vec<(&str, &[u8])>) {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_header(&self, _name: &str) -> Option<String> {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_header_bytes(&self, _name: &str) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_header(&self, _name: &str, _value: Option<&str>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_header_bytes(&self, _name: &str, _value: Option<&[u8]>) {
            $crate::filter::sdk::unused()
        }
        fn add_http_request_header(&self, _name: &str, _value: &str) {
            $crate::filter::sdk::unused()
        }
        fn add_http_request_header_bytes(&self, _name: &str, _value: &[u8]) {
            $crate::filter::sdk::unused()
        }
        fn remove_http_request_header(&self, _name: &str) {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_body(
            &self,
            _start: usize,
            _max_size: usize,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_body(&self, _start: usize, _size: usize, _value: &[u8]) {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_trailers(&self) -> Vec<(String, String)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_trailers_bytes(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_trailers(&self, _trailers: Vec<(&str, &str)>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_trailers_bytes(&self, _trailers: Vec<(&str, &[u8])>) {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_trailer(&self, _name: &str) -> Option<String> {
            $crate::filter::sdk::unused()
        }
        fn get_http_request_trailer_bytes(&self, _name: &str) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_trailer(&self, _name: &str, _value: Option<&str>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_request_trailer_bytes(&self, _name: &str, _value: Option<&[u8]>) {
            $crate::filter::sdk::unused()
        }
        fn add_http_request_trailer(&self, _name: &str, _value: &str) {
            $crate::filter::sdk::unused()
        }
        fn add_http_request_trailer_bytes(&self, _name: &str, _value: &[u8]) {
            $crate::filter::sdk::unused()
        }
        fn remove_http_request_trailer(&self, _name: &str) {
            $crate::filter::sdk::unused()
        }
        fn resume_http_request(&self) {
            $crate::filter::sdk::unused()
        }
        fn reset_http_request(&self) {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_headers(&self) -> Vec<(String, String)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_headers_bytes(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_headers(&self, _headers: Vec<(&str, &str)>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_headers_bytes(&self, _headers: Vec<(&str, &[u8])>) {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_header(&self, _name: &str) -> Option<String> {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_header_bytes(&self, _name: &str) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_header(&self, _name: &str, _value: Option<&str>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_header_bytes(&self, _name: &str, _value: Option<&[u8]>) {
            $crate::filter::sdk::unused()
        }
        fn add_http_response_header(&self, _name: &str, _value: &str) {
            $crate::filter::sdk::unused()
        }
        fn add_http_response_header_bytes(&self, _name: &str, _value: &[u8]) {
            $crate::filter::sdk::unused()
        }
        fn remove_http_response_header(&self, _name: &str) {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_body(
            &self,
            _start: usize,
            _max_size: usize,
        ) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_body(&self, _start: usize, _size: usize, _value: &[u8]) {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_trailers(&self) -> Vec<(String, String)> {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_trailers_bytes(&self) -> Vec<(String, proxy_wasm::types::Bytes)> {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_trailers(&self, _trailers: Vec<(&str, &str)>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_trailers_bytes(&self, _trailers: Vec<(&str, &[u8])>) {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_trailer(&self, _name: &str) -> Option<String> {
            $crate::filter::sdk::unused()
        }
        fn get_http_response_trailer_bytes(&self, _name: &str) -> Option<proxy_wasm::types::Bytes> {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_trailer(&self, _name: &str, _value: Option<&str>) {
            $crate::filter::sdk::unused()
        }
        fn set_http_response_trailer_bytes(&self, _name: &str, _value: Option<&[u8]>) {
            $crate::filter::sdk::unused()
        }
        fn add_http_response_trailer(&self, _name: &str, _value: &str) {
            $crate::filter::sdk::unused()
        }
        fn add_http_response_trailer_bytes(&self, _name: &str, _value: &[u8]) {
            $crate::filter::sdk::unused()
        }
        fn remove_http_response_trailer(&self, _name: &str) {
            $crate::filter::sdk::unused()
        }
        fn resume_http_response(&self) {
            $crate::filter::sdk::unused()
        }
        fn reset_http_response(&self) {
            $crate::filter::sdk::unused()
        }
        fn send_http_response(
            &self,
            _status_code: u32,
            _headers: Vec<(&str, &str)>,
            _body: Option<&[u8]>,
        ) {
            $crate::filter::sdk::unused()
        }
        fn send_grpc_response(
            &self,
            _grpc_status: proxy_wasm::types::GrpcStatusCode,
            _grpc_status_message: Option<&str>,
            _custom_metadata: Vec<(&str, &[u8])>,
        ) {
            $crate::filter::sdk::unused()
        }
    };
}
pub(crate) use http_helpers;
