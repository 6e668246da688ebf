//! What the main filter observes of one request: the access record, the filter state exported
//! for Envoy's own access loggers, and the metrics (contract, "Access log and metrics").
//!
//! Costs per request. Request headers: the metric series' method and the record's request-side
//! values come from the pipeline's one read of the header map, kept until the log when there
//! is an access log; as tollgate lets a request go on, one `set_property`, the stage as filter
//! state (when exported), so that later filters see tollgate checked it. Response headers:
//! `:status`, read with the response header map when CORS or caching reads it anyway, else on
//! its own. Log: no `response.code` read unless the response headers never passed the filter,
//! `set_property` for each other value exported as filter state (the stage of a request
//! tollgate answered, the route, key id, error, integration latency and cache status when the
//! request has them; only the `filter_state` names, none with `"filter_state": false`), one
//! clock read and 2 to 5 metric updates by precomputed id; with `access_log` off or the host's
//! level above info, no record is built; with it, `request.protocol`, `response.size` and
//! (unless a client throttle read it) `source.address` are read.
//!
//! Secrets: the record reads no header but `user-agent` and `x-request-id` (the kept header map
//! never leaves the VM); an API key appears by its `id`; the path is logged without its query
//! string.

use std::borrow::Cow;

use proxy_wasm::types::LogLevel;

use super::Runtime;
use crate::access_log::{self, Exports, Field, Record};
use crate::config::Config;
use crate::gateway::{self, Decision, Outcome, RequestSource};
use crate::host::{self, HostRequest};
use crate::metrics::{self, Metric};

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
    /// No integration: the filter answered the request itself, or the stream ended while it
    /// waited for the rate limit service.
    pub no_integration: bool,
    /// A gRPC request's response came with a non-zero `grpc-status` in its headers (a
    /// trailers-only answer, which Envoy's own replies to gRPC are: `:status` 200), so an
    /// integration failure may hide behind a 200.
    pub grpc_error: bool,
}

/// Whole milliseconds from `from` to `to` (None when either is unknown or time went back).
fn ms(from: u64, to: u64) -> Option<u64> {
    (from > 0 && to >= from).then(|| (to - from) / 1_000_000)
}

fn integration_ms(t: &Timing) -> Option<u64> {
    if t.no_integration {
        None
    } else {
        ms(t.forward_ns.max(t.start_ns), t.response_ns)
    }
}

/// Exports one field as filter state, if the configuration exports it (`filter_state`).
fn export(exports: Exports, field: Field, value: &[u8]) {
    if exports.contains(field) {
        host::set_property(field.property_name(), value);
    }
}

/// Request header text for the record (lossy: a header need not be UTF-8).
fn text<'a>(request: &'a HostRequest, name: &str) -> Option<Cow<'a, str>> {
    request.header(name).map(String::from_utf8_lossy)
}

/// One request's observation state, owned by the main HTTP context. (No `Debug`: it holds the
/// request's headers, secrets included.)
#[derive(Default)]
pub struct Observation {
    /// The metric series (route x method); None when metrics are off.
    series: Option<usize>,
    /// The request headers the pipeline read, kept for the access record when there is an
    /// access log (one buffer, no copies of single values).
    captured: Option<Box<HostRequest>>,
    /// `$context.cacheStatus` (`hit`, `miss`, `bypass`); None until caching decides.
    cache_status: Option<&'static str>,
    /// The stage went out as filter state with the request (`export_stage`).
    stage_exported: bool,
}

impl Observation {
    /// The metric series found for the request (None when metrics are off).
    pub fn series(&self) -> Option<usize> {
        self.series
    }

    /// Counts the request under `series` (a redirect's first leg's, for its next leg).
    pub fn set_series(&mut self, series: Option<usize>) {
        self.series = series;
    }

    /// After the pipeline decided on the request headers: finds the metric series and keeps
    /// the request for the record when there is an access log. `req` is the request the
    /// pipeline read.
    pub fn on_request(rt: &Runtime, decision: &Decision, req: HostRequest) -> Observation {
        let mut obs = Observation::default();
        if rt.metrics_on() {
            let method = req.header(":method").unwrap_or_default();
            obs.series = rt.metrics.find(decision.route, method);
        }
        // Kept whatever the log level: on_log asks the host once, when the line would be built.
        if rt.config.access_log.is_some() {
            obs.captured = Some(Box::new(req));
        }
        obs
    }

    /// Records how the cache served the request (`hit`, `miss`, `bypass`): counted, logged and
    /// exported as filter state.
    pub fn set_cache_status(&mut self, status: &'static str) {
        self.cache_status = Some(status);
    }

    /// Exports the stage as filter state (`wasm.tollgate.stage`), if the configuration exports
    /// it, as tollgate lets the request go on: later filters see during the request that
    /// tollgate checked it and let it through. An RBAC filter after tollgate that requires it
    /// refuses what a worker without a VM would let through unchecked (Envoy skips a filter
    /// whose VM could not be made on a worker, whatever `failure_policy` says; SECURITY.md, "A
    /// worker without a VM"). A request tollgate answers itself gets it at the end of the
    /// stream with the other values. The `set_property` here counted no dearer than at the end
    /// (T: 432,013 instructions per request in Envoy against 431,880, 2026-12-07).
    pub fn export_stage(&mut self, cfg: &Config) {
        export(cfg.filter_state, Field::Stage, cfg.stage.as_bytes());
        self.stage_exported = true;
    }

    /// Exports the request's values as filter state (`wasm.tollgate.*`), the ones `filter_state`
    /// names: the stage (unless it went with the request, `export_stage`) and, when the
    /// request has them, the route, key id, error, integration latency and cache status. Here,
    /// at the end of the stream: only the access loggers read them, and the integration
    /// latency and cache status are known only now.
    fn export_all(
        &self,
        cfg: &Config,
        decision: Option<&Decision>,
        integration: Option<u64>,
        error: Option<(&str, &str)>,
    ) {
        let exports = cfg.filter_state;
        if let Some(d) = decision {
            if !self.stage_exported {
                export(exports, Field::Stage, cfg.stage.as_bytes());
            }
            if let Some(p) = d.route.and_then(|i| cfg.table.pattern(i)) {
                export(exports, Field::ResourcePath, p.resource_path().as_bytes());
            }
            if let Some(k) = d.key.and_then(|i| cfg.api_keys.as_ref()?.keys().get(i)) {
                export(exports, Field::ApiKeyId, k.id.as_bytes());
            }
        }
        if let Some((kind, message)) = error {
            export(exports, Field::ErrorMessage, message.as_bytes());
            export(exports, Field::ErrorResponseType, kind.as_bytes());
        }
        if let Some(v) = integration {
            let mut digits = [0; 20];
            export(
                exports,
                Field::IntegrationLatency,
                access_log::decimal(v, &mut digits),
            );
        }
        if let Some(status) = self.cache_status {
            export(exports, Field::CacheStatus, status.as_bytes());
        }
    }

    /// The stream is done: exports the request's values as filter state, updates the metrics
    /// and writes the access record. Envoy calls this before its own access loggers (observed
    /// with Envoy 1.40), so they see what is exported here.
    ///
    /// `status`: the response's status when the filter saw it (its own reply, or the response
    /// headers on their way out); else it is asked of Envoy (`response.code`, a property read
    /// costs Envoy several times what a header read does). `response_length`: the body length
    /// the response headers told; else the record asks Envoy (`response.size`). The record asks
    /// Envoy only for the values its format prints.
    pub fn on_log(
        &self,
        rt: &Runtime,
        decision: Option<&Decision>,
        timing: &Timing,
        status: Option<u16>,
        response_length: Option<u64>,
    ) {
        let cfg = &rt.config;
        // A cache hit never reached the integration.
        let integration = match self.cache_status {
            Some("hit") => None,
            _ => integration_ms(timing),
        };
        let status = status.or_else(|| {
            host::property_u64(b"response\0code")
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| *c > 0)
        });
        // The error counted: tollgate's (enforced, or what report-only mode would have done),
        // else the integration's.
        let mut error = decision
            .and_then(|d| d.error)
            .map(|e| (e.as_str(), e.message()));
        // The error told (record, filter state): a forwarded request that the upstream failed
        // tells that failure, not a report-only decision the client never saw.
        let mut told = error;
        let forwarded = decision.is_none_or(|d| d.outcome == Outcome::Forward);
        if forwarded
            && !timing.no_integration
            && (timing.grpc_error || status.is_some_and(|s| s >= 500))
        {
            let integration = host::property(b"response\0code_details")
                .and_then(|d| access_log::integration_error(&String::from_utf8_lossy(&d)));
            if integration.is_some() {
                told = integration;
                error = error.or(integration);
                // A report-only decision the record would have told (`http::finish` left
                // it to the record): said here instead.
                if let Some(d) = decision.filter(|d| d.error.is_some()) {
                    if record_tells_errors(cfg) {
                        log_report_only(cfg, d);
                    }
                }
            }
        }
        if !cfg.filter_state.is_empty() {
            self.export_all(cfg, decision, integration, told);
        }

        let log_on = cfg.access_log.is_some() && host::log_enabled(LogLevel::Info);
        // Without request headers the filter never ran: read them now for the unmatched series
        // and the record.
        let late = match (&self.captured, decision) {
            (None, None) if log_on || rt.metrics_on() => Some(HostRequest::read()),
            (None, _) if log_on => Some(HostRequest::read()),
            _ => None,
        };
        let request: Option<&HostRequest> = self.captured.as_deref().or(late.as_ref());
        let series = match (self.series, decision) {
            (Some(i), _) => Some(i),
            (None, None) if rt.metrics_on() => rt.metrics.find(
                None,
                request
                    .and_then(|r| r.header(":method"))
                    .unwrap_or_default(),
            ),
            (None, _) => None,
        };
        let ids = series.and_then(|i| rt.series_ids(i));
        if ids.is_none() && !log_on {
            return;
        }
        // A request Envoy answered before tollgate saw its headers (a 431, a codec error, an
        // earlier filter's reply): its start is Envoy's (one property read, on that path only).
        let start_ns = match timing.start_ns {
            0 => host::property_u64(b"request\0time").unwrap_or(0),
            t => t,
        };
        let latency = ms(start_ns, host::now_ns());

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

        let (Some(format), Some(request), true) = (&cfg.access_log, request, log_on) else {
            return;
        };
        let method = text(request, ":method");
        let path = text(request, ":path");
        let request_id = text(request, "x-request-id");
        let user_agent = text(request, "user-agent");
        let source = format
            .uses(Field::SourceIp)
            .then(|| request.source_address())
            .flatten()
            .map(String::from_utf8_lossy);
        let protocol = format
            .uses(Field::Protocol)
            .then(|| host::property(b"request\0protocol"))
            .flatten();
        let protocol = protocol.as_deref().map(String::from_utf8_lossy);
        let length = match response_length {
            Some(n) => Some(n),
            None if format.uses(Field::ResponseLength) => host::property_u64(b"response\0size"),
            None => None,
        };
        let route = decision
            .and_then(|d| d.route)
            .and_then(|i| cfg.table.pattern(i));
        let key_id = decision
            .and_then(|d| d.key)
            .and_then(|i| cfg.api_keys.as_ref()?.keys().get(i))
            .map(|k| k.id.as_str());
        let record = Record {
            request_id: request_id.as_deref(),
            request_time_epoch_ms: (start_ns > 0).then_some(start_ns / 1_000_000),
            http_method: method.as_deref(),
            resource_path: route.map(|p| p.resource_path()),
            path: path.as_deref().map(access_log::path_without_query),
            protocol: protocol.as_deref(),
            status,
            response_length: length,
            response_latency_ms: latency,
            integration_latency_ms: integration,
            source_ip: source.as_deref().map(gateway::address_ip),
            user_agent: user_agent.as_deref(),
            api_key_id: key_id,
            stage: Some(cfg.stage.as_str()),
            error_message: told.map(|e| e.1),
            error_response_type: told.map(|e| e.0),
            cache_status: self.cache_status,
        };
        let mut line = String::with_capacity(512);
        format.format_into(&record, &mut line);
        host::log(LogLevel::Info, &line);
    }
}

/// Whether this configuration's access record shows `error.responseType` (and so tells a
/// report-only decision itself).
pub fn record_tells_errors(cfg: &Config) -> bool {
    cfg.access_log
        .as_ref()
        .is_some_and(|f| f.uses(Field::ErrorResponseType))
}

/// Report-only mode: what enforcement would have answered a request that went on, as a line of
/// its own (`tollgate: report-only: would answer 429 THROTTLED on route GET /pets/{id}`).
pub fn log_report_only(cfg: &Config, decision: &Decision) {
    let Some(error) = decision.error else {
        return;
    };
    if host::log_enabled(LogLevel::Info) {
        let route = cfg.route(decision.route);
        host::log(
            LogLevel::Info,
            &format!(
                "tollgate: report-only: would answer {} {} on route {}",
                error.status(),
                error.as_str(),
                route.name.as_deref().unwrap_or("(stage)")
            ),
        );
    }
}
