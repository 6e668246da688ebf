//! The per-request contexts. They ask the host, call the core, and apply its decision.

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::cache::{self, CacheState};
use super::observe::{self, Observation, Timing};
use super::Runtime;
use crate::access_log::{self, Field};
use crate::cors::{self, ActualCors, CorsPolicy};
use crate::gateway::{self, Decision, Handover, Outcome, ServiceCall, ServiceResult};
use crate::header_pairs::HeaderPairs;
use crate::host::{self, HostRequest, HostStore};
use crate::metrics;
use crate::ratelimit_service::{self, CallFailure};
use crate::routes;
use crate::warn_limit::WarnLimit;

thread_local! {
    /// Shared-data and clock failures, each of which refuses a request: logged at most once a
    /// second per worker.
    static STORE_WARNINGS: Cell<WarnLimit> = Cell::new(WarnLimit::default());
    /// Failed rate limit service calls (each counted in metrics): logged likewise.
    static SERVICE_WARNINGS: Cell<WarnLimit> = Cell::new(WarnLimit::default());
    /// Upstream responses to requests tollgate never saw (a filter before it sent them on):
    /// logged likewise.
    static UNCHECKED_WARNINGS: Cell<WarnLimit> = Cell::new(WarnLimit::default());
    /// An escaped slash in a request path was told (once per worker).
    static ESCAPED_SLASH_TOLD: Cell<bool> = const { Cell::new(false) };
}

/// Whether a warning of `kind` is written now, and how many were left out before it.
fn warning_due(kind: &'static std::thread::LocalKey<Cell<WarnLimit>>, now_ns: u64) -> Option<u64> {
    kind.with(|w| {
        let mut limit = w.get();
        let verdict = limit.admit(now_ns);
        w.set(limit);
        verdict
    })
}

/// `" (N more since the last such warning)"`, or nothing.
fn left_out_note(left_out: u64) -> String {
    if left_out > 0 {
        format!(" ({left_out} more since the last such warning)")
    } else {
        String::new()
    }
}

/// The main filter: in the listener's chain, before Envoy's cache filter.
pub struct Main {
    rt: Rc<Runtime>,
    start_ns: u64,
    response_ns: u64,
    decision: Option<Decision>,
    local_reply: bool,
    /// Access record, filter state and metrics of this request.
    obs: Observation,
    /// What the request's trip through Envoy's cache filter was (hit and miss are told on the
    /// response).
    cache: CacheState,
    /// When the request went on to the upstream (after the rate limit service, if called).
    forward_ns: u64,
    /// The request waits for the rate limit service.
    waiting: Option<Box<Waiting>>,
    /// The response's status, once the filter has seen it (its own reply, or the response
    /// headers): spares the log a `response.code` property read.
    status: Option<u16>,
    /// The response's body length as its headers told it (see
    /// [`access_log::response_length`]): spares the record a `response.size` property read.
    response_length: Option<u64>,
    /// The request was counted and logged (once: in `on_log`, or when the context is dropped
    /// where Envoy never calls `on_log`).
    observed: bool,
    /// The request is gRPC (`content-type: application/grpc...`).
    grpc: bool,
    /// Its response's headers carried a non-zero `grpc-status` (see [`Timing::grpc_error`]).
    grpc_error: bool,
}

/// A request paused for the rate limit service's answer.
struct Waiting {
    token: u32,
    /// When the call was made (host clock, ns).
    sent_ns: u64,
    call: ServiceCall,
    /// What the pipeline read of the request (reused by the access record).
    req: HostRequest,
    end_of_stream: bool,
}

impl Main {
    pub fn new(rt: Rc<Runtime>) -> Self {
        Main {
            rt,
            start_ns: 0,
            response_ns: 0,
            decision: None,
            local_reply: false,
            obs: Observation::default(),
            cache: CacheState::Off,
            forward_ns: 0,
            waiting: None,
            status: None,
            response_length: None,
            observed: false,
            grpc: false,
            grpc_error: false,
        }
    }

    /// The stream is over: counts and logs the request, once. Envoy calls `on_log` before it
    /// deletes the context on HTTP/1 and HTTP/2. On HTTP/3, Envoy 1.40 runs only the connection
    /// manager's access loggers (deferred until the client acknowledged the response; it hands
    /// them over when the stream starts, before the filters are made): a filter's `on_log` is
    /// never called, so the context's drop observes the request instead.
    fn observe(&mut self) {
        if std::mem::replace(&mut self.observed, true) {
            return;
        }
        if self.hand_over() {
            return;
        }
        // A redirect's next leg that a filter before tollgate answered (RBAC, ext_authz):
        // tollgate never saw its request headers. The client's request is the one its first
        // leg started: observed with that leg's route and start, and its handover taken.
        if self.decision.is_none() {
            if let Some(h) = self.rt.followed_redirect(host::now_ns()) {
                self.start_ns = h.started_ns;
                self.obs = Observation::on_request(&self.rt, &h.first_leg, HostRequest::read());
                self.obs.set_series(h.series);
                self.decision = Some(h.first_leg);
            }
        }
        if self.decision.is_none() {
            self.warn_if_unchecked();
        }
        let mut timing = self.timing();
        // The stream ended while the filter waited for the rate limit service (the client
        // went away, or a timeout of Envoy's answered): observed as it stands, so the request
        // is still counted and logged, with no integration (it never went upstream).
        if let (Some(waiting), Some(decision)) = (self.waiting.take(), self.decision.as_mut()) {
            // What the local checks took goes back: the request never went upstream.
            let rt = &self.rt;
            gateway::abandon(&rt.config, &rt.keys, &HostStore, decision);
            self.obs = Observation::on_request(rt, decision, waiting.req);
            timing.no_integration = true;
        }
        self.obs.on_log(
            &self.rt,
            self.decision.as_ref(),
            &timing,
            self.status,
            self.response_length,
        );
    }

    /// A response from the upstream (or Envoy's cache) to a request whose headers tollgate
    /// never saw: a filter before tollgate sent it on itself, as Envoy's cache filter does with
    /// every GET and HEAD when it comes first (tollgate then sees neither the request nor the
    /// response, only the stream's end), so no key, throttle or quota was applied. Said at
    /// warn, at most once a second per worker (one property read, on this path only: an
    /// earlier filter's own answer, a 431, is not this).
    fn warn_if_unchecked(&self) {
        let Some(details) = host::property(b"response\0code_details") else {
            return;
        };
        if details != b"via_upstream" && !details.starts_with(b"cache") {
            return;
        }
        if let Some(left_out) = warning_due(&UNCHECKED_WARNINGS, host::now_ns()) {
            let more = left_out_note(left_out);
            host::log(
                LogLevel::Warn,
                &format!(
                    "tollgate: a response ({}) to a request tollgate never saw: a filter before it in http_filters sent the request on (Envoy's cache filter does, placed first), so no key, throttle or quota applied; put tollgate before envoy.filters.http.cache{more}",
                    String::from_utf8_lossy(&details)
                ),
            );
        }
    }

    /// If Envoy followed the upstream's redirect itself (`internal_redirect_policy`), this leg
    /// hands what it charged to the second leg, which Envoy runs next, and is neither logged
    /// nor counted: the client made one request, which the second leg answers. Only a
    /// forwarded request whose response the filter never saw is asked about (one property
    /// read, on that rare path).
    fn hand_over(&mut self) -> bool {
        if self.status.is_some() || self.local_reply {
            return false;
        }
        // (A request still waiting for the rate limit service never reached the router, so
        // Envoy cannot have redirected it.)
        let forwarded = self
            .decision
            .as_ref()
            .is_some_and(|d| d.outcome == Outcome::Forward);
        if !forwarded
            || host::property(b"response\0code_details").as_deref() != Some(b"internal_redirect")
        {
            return false;
        }
        let Some(stream_start_ns) = host::property_u64(b"request\0time") else {
            return false;
        };
        let Some(first_leg) = self.decision.take() else {
            return false;
        };
        self.rt.hand_over(Handover {
            stream_start_ns,
            started_ns: self.start_ns,
            left_ns: host::now_ns(),
            first_leg,
            series: self.obs.series(),
        });
        true
    }

    fn timing(&self) -> Timing {
        Timing {
            start_ns: self.start_ns,
            forward_ns: self.forward_ns,
            response_ns: self.response_ns,
            no_integration: self.local_reply,
            grpc_error: self.grpc_error,
        }
    }

    /// The pipeline decided (with the rate limit service's answer, if it was asked): logs what
    /// report-only mode would have done, records the observation, plans the cache and answers
    /// the request or lets it go on. `waited`: the filter waited for the rate limit service
    /// (the request goes on now, later than its headers came; else it goes on at `start_ns`,
    /// which spares a clock read: tollgate's own microseconds do not show in whole ms).
    fn finish(
        &mut self,
        decision: Decision,
        req: HostRequest,
        end_of_stream: bool,
        waited: bool,
    ) -> Action {
        let rt = Rc::clone(&self.rt);
        if decision.error.is_some() && decision.outcome == Outcome::Forward {
            // Report-only mode: the request goes on; say what enforcement would have done,
            // unless the access record will (`error.responseType`): no other line among the
            // records, which log shippers parse one by one. (`on_log` says it after all when
            // the record tells an integration failure instead.)
            if !observe::record_tells_errors(&rt.config) {
                observe::log_report_only(&rt.config, &decision);
            }
        }
        let forward = decision.outcome == Outcome::Forward;
        let forged = forward && cache::carries_internal_headers(req.headers());
        self.obs = Observation::on_request(&rt, &decision, req);
        if forward {
            self.cache =
                cache::on_request(&rt.config, &decision, end_of_stream, forged, &mut self.obs);
        }
        let action = match &decision.outcome {
            Outcome::Forward => {
                self.obs.export_stage(&rt.config);
                if waited {
                    self.forward_ns = host::now_ns();
                }
                Action::Continue
            }
            Outcome::Respond {
                status,
                headers,
                body,
            } => {
                self.local_reply = true;
                // A gRPC or gRPC-Web client reads a refusal trailers-only (`grpc_answer`).
                let grpc = self.grpc && *status >= 400;
                let sent = if grpc {
                    let (headers, code) = gateway::grpc_answer(*status, headers, *body);
                    let extra = &decision.service_headers;
                    host::send_response_with(200, &headers, extra, None, Some(code))
                } else {
                    let body = body.map(str::as_bytes);
                    host::send_response_with(
                        *status,
                        headers,
                        &decision.service_headers,
                        body,
                        None,
                    )
                };
                if sent {
                    self.status = Some(if grpc { 200 } else { *status });
                } else {
                    // Fail closed: a refused request never goes on because the host would
                    // not take the refusal (Envoy 1.40 always does).
                    host::log(
                        LogLevel::Warn,
                        "tollgate: the host refused the filter's reply; the request is reset",
                    );
                    host::reset_request();
                }
                Action::Pause
            }
        };
        self.decision = Some(decision);
        action
    }

    /// Pause while the rate limit service has not answered, else go on.
    fn hold_while_waiting(&self) -> Action {
        if self.waiting.is_some() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    /// Counts and (for failures) logs how a call to the rate limit service ended.
    /// `elapsed_ms`: how long the call took (None: it was never made).
    fn service_result(&self, result: ServiceResult, elapsed_ms: Option<u64>) {
        if let Some(&id) = self.rt.service_ids.get(metrics::service_counter(result)) {
            host::increment_metric(id, 1);
        }
        if let (ServiceResult::Failure(f), Some(svc)) =
            (result, self.rt.config.rate_limit_service.as_ref())
        {
            // At most one line a second per worker: a service that is down fails every call.
            let due = host::log_enabled(LogLevel::Warn)
                .then(|| warning_due(&SERVICE_WARNINGS, host::now_ns()))
                .flatten();
            if let Some(left_out) = due {
                let more = left_out_note(left_out);
                let status = match (f, elapsed_ms) {
                    (CallFailure::Grpc(None), _) => format!(
                        " (the call could not be started: is there a cluster \"{}\"?)",
                        svc.cluster
                    ),
                    (CallFailure::Grpc(Some(s)), Some(ms)) => {
                        format!(" (gRPC status {s} after {ms} ms)")
                    }
                    (_, Some(ms)) => format!(" (after {ms} ms)"),
                    (_, None) => String::new(),
                };
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "tollgate: rate limit service: {}{status}; failure_mode {}{more}",
                        f.as_str(),
                        svc.failure_mode.as_str()
                    ),
                );
            }
        }
    }

    /// CORS on the upstream's response: `policy` is the route's CORS policy, `cors` what it
    /// allowed the request's origin, `vary` the response's `Vary` values as they stand, one per
    /// header line (empty when the response has none or its headers could not be read).
    /// `present(name)`: whether the response may carry header `name` (so that headers it lacks
    /// are not removed, a host call each, and are added rather than replaced).
    fn apply_cors<'a>(
        policy: &CorsPolicy,
        cors: Option<&ActualCors>,
        vary: impl Iterator<Item = &'a [u8]> + Clone,
        present: impl Fn(&str) -> bool,
    ) {
        match cors {
            Some(c) => {
                // Upstream CORS headers are replaced, never duplicated.
                let headers = policy.actual_headers(c);
                for name in cors::CORS_RESPONSE_HEADERS {
                    if present(name) && !headers.clone().any(|(n, _)| n == *name) {
                        host::remove_response_header(name);
                    }
                }
                for (name, value) in headers {
                    put_response_header(name, value, !present(name));
                }
            }
            // The policy owns CORS on this route: an origin it does not allow (or no Origin)
            // gets no CORS headers, whatever the upstream sent.
            None => {
                for name in cors::CORS_RESPONSE_HEADERS {
                    if present(name) {
                        host::remove_response_header(name);
                    }
                }
            }
        }
        // The answer depends on Origin even when this one got no CORS headers.
        if cors.is_none_or(|c| c.vary_origin) {
            let mut lines = vary.clone();
            match (lines.next(), lines.next()) {
                (None, _) => put_response_header("vary", "Origin", !present("vary")),
                (first, second) => {
                    // Every line is merged: the replace below removes them all.
                    let merged = cors::merge_vary(vary, &["Origin"]);
                    let unchanged = second.is_none() && first == Some(merged.as_bytes());
                    if !merged.is_empty() && !unchanged {
                        host::set_response_header("vary", &merged);
                    }
                }
            }
        }
    }
}

/// Writes response header `name`: added when the response is known to lack it (`absent`), else
/// replacing every value it has. Envoy's add skips the search a replace makes first (measured
/// under callgrind, Envoy 1.40: 3.0k against 3.6k instructions a call).
fn put_response_header(name: &str, value: &str, absent: bool) {
    if absent {
        host::add_response_header(name, value);
    } else {
        host::set_response_header(name, value);
    }
}

/// Whether one of `headers` before index `at` is named `name` (a header written earlier in the
/// same callback, which the map read before the writes does not show).
fn written_before<N: AsRef<str>, V>(headers: &[(N, V)], at: usize, name: &str) -> bool {
    headers
        .iter()
        .take(at)
        .any(|(n, _)| n.as_ref().eq_ignore_ascii_case(name))
}

/// On HTTP/3 the request is observed when Envoy deletes the stream's context
/// (`proxy_on_delete`, after the filter's last callback; Envoy 1.40 never calls its `on_log`
/// there). A drop, not `on_done`: the module does not export `proxy_on_done`
/// (scripts/trim-exports.py), which spares every request one call into the VM, and the host
/// calls the record makes are all direct ABI calls, free to run while the SDK removes the
/// context.
impl Drop for Main {
    fn drop(&mut self) {
        self.observe();
    }
}

impl Context for Main {
    super::sdk::context_helpers!();

    /// The rate limit service answered (or the call failed or timed out): apply the answer and
    /// let the request go on, or answer it.
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some(waiting) = self.waiting.take_if(|w| w.token == token_id) else {
            return;
        };
        let Some(mut decision) = self.decision.take() else {
            host::resume_request();
            return;
        };
        let rt = Rc::clone(&self.rt);
        let elapsed_ms = host::now_ns().saturating_sub(waiting.sent_ns) / 1_000_000;
        let body;
        let reply = if status_code == 0 {
            body = host::grpc_call_response(response_size).unwrap_or_default();
            Ok(body.as_slice())
        } else {
            let timeout_ms = rt
                .config
                .rate_limit_service
                .as_ref()
                .map_or(0, |s| s.timeout_ms);
            Err(CallFailure::from_grpc_status(
                status_code,
                elapsed_ms,
                timeout_ms,
            ))
        };
        let result = gateway::conclude(
            &rt.config,
            &rt.keys,
            &HostStore,
            &mut decision,
            waiting.call,
            reply,
        );
        self.service_result(result, Some(elapsed_ms));
        if self.finish(decision, waiting.req, waiting.end_of_stream, true) == Action::Continue {
            host::resume_request();
        }
    }
}

impl HttpContext for Main {
    super::sdk::http_helpers!();

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let rt = Rc::clone(&self.rt);
        let now_ns = host::now_ns();
        self.start_ns = now_ns;
        self.forward_ns = now_ns;
        let req = HostRequest::read().with_body(!end_of_stream);
        self.grpc = gateway::RequestSource::header(&req, "content-type")
            .is_some_and(|v| v.starts_with(b"application/grpc"));
        let followed = rt.followed_redirect(now_ns);
        // The second leg of an internal redirect: the client's request started with the first.
        let first_leg = followed.map(|h| {
            self.start_ns = h.started_ns;
            h.first_leg
        });
        let mut decision =
            gateway::decide_leg(&rt.config, &rt.keys, &HostStore, now_ns, &req, first_leg);
        if !rt.config.table.is_empty() && !ESCAPED_SLASH_TOLD.get() {
            let path = gateway::RequestSource::header(&req, ":path").unwrap_or_default();
            if routes::has_escaped_slash(path) {
                ESCAPED_SLASH_TOLD.set(true);
                host::log(
                    LogLevel::Warn,
                    "tollgate: a request path holds an escaped slash (%2F or %5C): Envoy forwards such paths unchanged, and an upstream that decodes them may route where tollgate did not; set path_with_escaped_slashes_action: REJECT_REQUEST (or UNESCAPE_AND_FORWARD for an upstream that treats %2F as a separator; KEEP_UNCHANGED only if it never decodes them) (SECURITY.md). Told once per worker.",
                );
            }
        }
        if let Some(why) = decision.store_failure {
            if let Some(id) = rt.store_failures_id {
                host::increment_metric(id, 1);
            }
            // At most one line a second per worker: a failing store fails every request.
            if let Some(left_out) = warning_due(&STORE_WARNINGS, now_ns) {
                let more = left_out_note(left_out);
                host::log(LogLevel::Warn, &format!("tollgate: {why}{more}"));
            }
        }
        if let (Some(call), Some(svc)) = (
            decision.service_call.take(),
            rt.config.rate_limit_service.as_ref(),
        ) {
            let token = host::grpc_call(
                &svc.grpc_service,
                ratelimit_service::GRPC_SERVICE,
                ratelimit_service::GRPC_METHOD,
                &call.message,
                svc.timeout_ms,
            );
            match token {
                Some(token) => {
                    self.decision = Some(decision);
                    self.waiting = Some(Box::new(Waiting {
                        token,
                        sent_ns: host::now_ns(),
                        call,
                        req,
                        end_of_stream,
                    }));
                    return Action::Pause;
                }
                None => {
                    // The host would not even start the call: as if it had failed.
                    let result = gateway::conclude(
                        &rt.config,
                        &rt.keys,
                        &HostStore,
                        &mut decision,
                        call,
                        Err(CallFailure::Grpc(None)),
                    );
                    self.service_result(result, None);
                }
            }
        }
        self.finish(decision, req, end_of_stream, false)
    }

    /// While the rate limit service decides, the body waits too. Envoy's filter API says a
    /// data callback that continues resumes headers stopped with StopIteration; Envoy 1.40's
    /// Wasm filter was measured not to (tests/ratelimit_service.rs sends a body on its own
    /// while the call is out), and the explicit pause keeps it so on any host.
    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.hold_while_waiting()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.response_ns = host::now_ns();
        let rt = Rc::clone(&self.rt);
        let cfg = &rt.config;
        let wants_length = cfg
            .access_log
            .as_ref()
            .is_some_and(|f| f.uses(Field::ResponseLength));
        if self.local_reply {
            // Our own response already carries every header it needs. Its status is read back:
            // Envoy's `local_reply_config` may have rewritten it, and the log and metrics tell
            // what the client got.
            let status = if wants_length {
                let map = host::response_headers();
                let length = map.get("content-length");
                self.response_length = access_log::response_length(end_of_stream, length);
                map.get(":status").and_then(access_log::status_code)
            } else {
                host::response_header(":status").and_then(|v| access_log::status_code(&v))
            };
            self.status = status.or(self.status);
            return Action::Continue;
        }
        let cors = self
            .decision
            .as_ref()
            .filter(|d| !d.cors_off)
            .and_then(|d| {
                let policy = cfg.cors_for(cfg.route(d.route))?;
                Some((policy, d.cors.as_ref()))
            });
        // One read of the whole map when CORS (for Vary) or caching needs more than the
        // status; else the status alone. Either is cheaper for Envoy than the `response.code`
        // property the log would otherwise read.
        let needs_vary = cors.is_some_and(|(_, c)| c.is_none_or(|c| c.vary_origin));
        let map = (needs_vary || wants_length || matches!(self.cache, CacheState::Lookup { .. }))
            .then(host::response_headers);
        if wants_length {
            let length = map.as_ref().and_then(|m| m.get("content-length"));
            self.response_length = access_log::response_length(end_of_stream, length);
        }
        self.status = match &map {
            Some(m) => m.get(":status").and_then(access_log::status_code),
            None => host::response_header(":status").and_then(|v| access_log::status_code(&v)),
        };
        // A gRPC failure Envoy answers itself is `:status` 200 with `grpc-status` in the
        // headers: looked at for gRPC requests only (one header read when the map was not).
        if self.grpc {
            self.grpc_error = match &map {
                Some(m) => m.get("grpc-status").is_some_and(|v| v != b"0"),
                None => host::response_header("grpc-status").is_some_and(|v| v != b"0"),
            };
        }
        cache::on_response(cfg, &self.cache, &mut self.obs, map.as_ref());
        let Some(decision) = &self.decision else {
            return Action::Continue;
        };
        // A header the map (read before any write) lacks and no write here has set yet is
        // added; without the map, any header may be there and each write replaces.
        // A map without `:status` is a failed read (the host gave nothing), not a response
        // without headers. Caching may have written its headers since the read.
        let read = map.as_ref().filter(|m| m.get(":status").is_some());
        let cache_wrote = |name: &str| {
            matches!(self.cache, CacheState::Lookup { .. })
                && cache::WRITTEN_RESPONSE_HEADERS
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name))
        };
        let unread = |name: &str| read.is_some_and(|m| m.get(name).is_none()) && !cache_wrote(name);
        let (limits, service) = (&decision.response_headers, &decision.service_headers);
        for (i, (name, value)) in limits.iter().enumerate() {
            put_response_header(
                name,
                value,
                unread(name) && !written_before(limits, i, name),
            );
        }
        // The rate limit service's own headers are added beside the upstream's, never in
        // their place (rate-limit, CORS and Vary names never come from it:
        // `ratelimit_service::passed_on`).
        for (name, value) in service {
            host::add_response_header(name, value);
        }
        if let Some((policy, allowed)) = cors {
            // The map was read before the writes above; without it, any header may be there.
            let vary = map
                .as_ref()
                .map(HeaderPairs::iter)
                .into_iter()
                .flatten()
                .filter(|(name, _)| name.eq_ignore_ascii_case(b"vary"))
                .map(|(_, value)| value);
            let present = |name: &str| !unread(name) || written_before(limits, limits.len(), name);
            Main::apply_cors(policy, allowed, vary, present);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.observe();
    }
}
