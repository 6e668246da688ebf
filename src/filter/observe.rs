//! What the main filter observes of one request: the access record, the filter state exported
//! for Envoy's own access loggers, and the metrics (contract, "Access log and metrics").
//!
//! Costs per request. Request headers: a table lookup for the metric series (the method comes
//! from the pipeline's own read); the record's request-side values (request id, user agent,
//! protocol) are read only when the host would keep the line; `set_property` for the decision's
//! fields (`stage` always, then the route, key id and error when the request has them). Log:
//! one `response.code` read, the integration latency exported when there was one, one clock read
//! and 2 to 5 metric updates by precomputed id; with `access_log` off or the host's level above
//! info, no record is built.
//!
//! Secrets: the record holds no header but `user-agent` and `x-request-id`; an API key appears
//! by its `id`; the path is logged without its query string.

use proxy_wasm::types::LogLevel;

use super::Runtime;
use crate::access_log::{self, Field, Record};
use crate::gateway::{self, Decision};
use crate::host::{self, HostRequest};
use crate::metrics::{self, Metric};

/// Request-side values of the access record.
#[derive(Default, Debug)]
struct Captured {
    method: Option<String>,
    /// Without the query string.
    path: Option<String>,
    request_id: Option<String>,
    protocol: Option<String>,
    source_ip: Option<String>,
    user_agent: Option<String>,
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|v| match String::from_utf8(v) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

impl Captured {
    /// Reads what the pipeline has not read already (`req` keeps `:method`, `:path` and the
    /// source address it fetched); works in `on_log` too.
    fn read(method: Option<Vec<u8>>, req: &mut HostRequest) -> Captured {
        let path = text(req.take_path()).map(|p| {
            let without = access_log::path_without_query(&p);
            if without.len() == p.len() {
                p
            } else {
                without.to_string()
            }
        });
        let source_ip = text(req.take_source()).map(|a| gateway::address_ip(&a).to_string());
        Captured {
            method: text(method),
            path,
            request_id: text(host::request_header("x-request-id")),
            protocol: text(host::property(&["request", "protocol"])),
            source_ip,
            user_agent: text(host::request_header("user-agent")),
        }
    }
}

/// Request timing, as the filter measured it (host wall clock, ns since the epoch; 0 = unknown).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Request headers reached the filter.
    pub start_ns: u64,
    /// The request went on to the upstream (later than `start_ns` when the filter waited for
    /// the rate limit service).
    pub forward_ns: u64,
    /// Response headers reached the filter.
    pub response_ns: u64,
    /// The filter answered the request itself (no integration).
    pub local_reply: bool,
}

/// Whole milliseconds from `from` to `to` (None when either is unknown or time went back).
fn ms(from: u64, to: u64) -> Option<u64> {
    (from > 0 && to >= from).then(|| (to - from) / 1_000_000)
}

fn integration_ms(t: &Timing) -> Option<u64> {
    if t.local_reply {
        None
    } else {
        ms(t.forward_ns.max(t.start_ns), t.response_ns)
    }
}

fn export(field: Field, value: &str) {
    host::set_property(field.property_name(), value.as_bytes());
}

/// One request's observation state, owned by the main HTTP context.
#[derive(Default, Debug)]
pub struct Observation {
    /// The metric series (route x method); None when metrics are off.
    series: Option<usize>,
    /// Request-side values of the access record, when the line will be written.
    captured: Option<Box<Captured>>,
    /// `$context.cacheStatus` (`hit`, `miss`, `bypass`); None until caching decides.
    cache_status: Option<&'static str>,
}

impl Observation {
    /// After the pipeline decided on the request headers: finds the metric series, captures the
    /// record's request-side values if the line will be written, and exports the decision as
    /// filter state. `req` is the source the pipeline read from.
    pub fn on_request(rt: &Runtime, decision: &Decision, req: &mut HostRequest) -> Observation {
        let mut obs = Observation::default();
        let log_on = rt.config.access_log.is_some() && host::log_enabled(LogLevel::Info);
        if rt.metric_ids.is_empty() && !log_on {
            export_decision(rt, decision);
            return obs;
        }
        let method = req.take_method();
        if !rt.metric_ids.is_empty() {
            obs.series = rt
                .metrics
                .find(decision.route, method.as_deref().unwrap_or_default());
        }
        if log_on {
            obs.captured = Some(Box::new(Captured::read(method, req)));
        }
        export_decision(rt, decision);
        obs
    }

    /// Records how the cache served the request (`hit`, `miss`, `bypass`): counted, logged and
    /// exported as filter state.
    pub fn set_cache_status(&mut self, status: &'static str) {
        self.cache_status = Some(status);
        export(Field::CacheStatus, status);
    }

    /// The stream is done: exports the values only known now as filter state, updates the
    /// metrics and writes the access record. Envoy calls this before its own access loggers
    /// (observed with Envoy 1.40), so they see what is exported here.
    pub fn on_log(&self, rt: &Runtime, decision: Option<&Decision>, timing: &Timing) {
        let cfg = &rt.config;
        // A cache hit never reached the integration.
        let integration = match self.cache_status {
            Some("hit") => None,
            _ => integration_ms(timing),
        };
        if let Some(v) = integration {
            export(Field::IntegrationLatency, &v.to_string());
        }
        let status = host::property_u64(&["response", "code"])
            .and_then(|c| u16::try_from(c).ok())
            .filter(|c| *c > 0);
        let mut error = decision
            .and_then(|d| d.error)
            .map(|e| (e.as_str(), e.message()));
        if error.is_none() && !timing.local_reply && status.is_some_and(|s| s >= 500) {
            error = host::property(&["response", "code_details"])
                .and_then(|d| access_log::integration_error(&String::from_utf8_lossy(&d)));
            if let Some((kind, message)) = error {
                export(Field::ErrorMessage, message);
                export(Field::ErrorResponseType, kind);
            }
        }

        let log_on = cfg.access_log.is_some() && host::log_enabled(LogLevel::Info);
        // Without request headers the filter never ran: count the request as unmatched.
        let mut late_method = None;
        let series = match (self.series, decision) {
            (Some(i), _) => Some(i),
            (None, None) if !rt.metric_ids.is_empty() => {
                late_method = host::request_header(":method");
                rt.metrics
                    .find(None, late_method.as_deref().unwrap_or_default())
            }
            (None, _) => None,
        };
        let ids = series.and_then(|i| rt.metric_ids.get(i));
        if ids.is_none() && !log_on {
            return;
        }
        let latency = ms(timing.start_ns, host::now_ns());

        if let Some(ids) = ids {
            for m in metrics::counters_for(status, error.map(|e| e.0), self.cache_status) {
                if let Some(&id) = ids.get(m.index()) {
                    host::increment_metric(id, 1);
                }
            }
            for (metric, value) in [
                (Metric::Latency, latency),
                (Metric::IntegrationLatency, integration),
            ] {
                if let (Some(v), Some(&id)) = (value, ids.get(metric.index())) {
                    host::record_metric(id, v);
                }
            }
        }

        let Some(format) = &cfg.access_log else {
            return;
        };
        if !log_on {
            return;
        }
        let late;
        let captured: &Captured = match &self.captured {
            Some(c) => c,
            None => {
                // Logging was switched on mid-request, or the headers never reached the filter.
                let method = late_method.or_else(|| host::request_header(":method"));
                late = Captured::read(method, &mut HostRequest::default());
                &late
            }
        };
        let length = host::property_u64(&["response", "size"]);
        let route = decision
            .and_then(|d| d.route)
            .and_then(|i| cfg.table.pattern(i));
        let key_id = decision
            .and_then(|d| d.key)
            .and_then(|i| cfg.api_keys.as_ref()?.keys().get(i))
            .map(|k| k.id.as_str());
        let record = Record {
            request_id: captured.request_id.as_deref(),
            request_time_epoch_ms: (timing.start_ns > 0).then_some(timing.start_ns / 1_000_000),
            http_method: captured.method.as_deref(),
            resource_path: route.map(|p| p.resource_path()),
            path: captured.path.as_deref(),
            protocol: captured.protocol.as_deref(),
            status,
            response_length: length,
            response_latency_ms: latency,
            integration_latency_ms: integration,
            source_ip: captured.source_ip.as_deref(),
            user_agent: captured.user_agent.as_deref(),
            api_key_id: key_id,
            stage: Some(cfg.stage.as_str()),
            error_message: error.map(|e| e.1),
            error_response_type: error.map(|e| e.0),
            cache_status: self.cache_status,
        };
        let mut line = String::with_capacity(512);
        format.format_into(&record, &mut line);
        host::log(LogLevel::Info, &line);
    }
}

/// Exports the decision's fields as filter state (`wasm.tollgate.*`).
fn export_decision(rt: &Runtime, decision: &Decision) {
    let cfg = &rt.config;
    export(Field::Stage, &cfg.stage);
    if let Some(p) = decision.route.and_then(|i| cfg.table.pattern(i)) {
        export(Field::ResourcePath, p.resource_path());
    }
    if let Some(k) = decision
        .key
        .and_then(|i| cfg.api_keys.as_ref()?.keys().get(i))
    {
        export(Field::ApiKeyId, &k.id);
    }
    if let Some(e) = decision.error {
        export(Field::ErrorMessage, e.message());
        export(Field::ErrorResponseType, e.as_str());
    }
}
