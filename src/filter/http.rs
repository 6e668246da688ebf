//! The per-request contexts. They ask the host, call the core, and apply its decision.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::Runtime;
use crate::access_log::Record;
use crate::cors::{self, ActualCors};
use crate::gateway::{self, Decision, Outcome};
use crate::host::{self, HostRequest, HostStore};

/// The main filter: in the listener's chain, before Envoy's cache filter.
pub struct Main {
    rt: Rc<Runtime>,
    start_ns: u64,
    response_ns: u64,
    decision: Option<Decision>,
    local_reply: bool,
}

impl Main {
    pub fn new(rt: Rc<Runtime>) -> Self {
        Main {
            rt,
            start_ns: 0,
            response_ns: 0,
            decision: None,
            local_reply: false,
        }
    }

    fn apply_cors(cors: Option<&ActualCors>, route_has_cors: bool) {
        if let Some(c) = cors {
            // Upstream CORS headers are replaced, never duplicated.
            for name in cors::CORS_RESPONSE_HEADERS {
                if !c.headers.iter().any(|(n, _)| n == name) {
                    host::remove_response_header(name);
                }
            }
            for (name, value) in &c.headers {
                host::set_response_header(name, value);
            }
        } else if route_has_cors {
            // The policy owns CORS on this route: an origin it does not allow (or no Origin)
            // gets no CORS headers, whatever the upstream sent.
            for name in cors::CORS_RESPONSE_HEADERS {
                host::remove_response_header(name);
            }
        }
        let vary_origin = match cors {
            Some(c) => c.vary_origin,
            // The answer depends on Origin even when this one got no CORS headers.
            None => route_has_cors,
        };
        if vary_origin {
            let existing = host::response_header("vary");
            let merged = cors::merge_vary(existing.as_deref(), &["Origin"]);
            if !merged.is_empty() && existing.as_deref() != Some(merged.as_bytes()) {
                host::set_response_header("vary", &merged);
            }
        }
    }
}

impl Context for Main {}

impl HttpContext for Main {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let rt = Rc::clone(&self.rt);
        self.start_ns = host::now_ns();
        let decision = gateway::decide(
            &rt.config,
            &rt.keys,
            &HostStore,
            self.start_ns,
            &mut HostRequest,
        );
        if let Some(why) = decision.store_failure {
            host::log(LogLevel::Warn, &format!("tollgate: {why}"));
        }
        if let (Some(error), Outcome::Forward) = (decision.error, &decision.outcome) {
            // Report-only mode: the request goes on; say what enforcement would have done.
            if host::log_enabled(LogLevel::Info) {
                let route = rt.config.route(decision.route);
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
        let action = match &decision.outcome {
            Outcome::Forward => Action::Continue,
            Outcome::Respond {
                status,
                headers,
                body,
            } => {
                self.local_reply = true;
                if host::send_response(*status, headers, body.map(str::as_bytes)) {
                    Action::Pause
                } else {
                    Action::Continue
                }
            }
        };
        self.decision = Some(decision);
        action
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response_ns = host::now_ns();
        if self.local_reply {
            // Our own response already carries every header it needs.
            return Action::Continue;
        }
        let Some(decision) = &self.decision else {
            return Action::Continue;
        };
        for (name, value) in &decision.response_headers {
            host::set_response_header(name, value);
        }
        let route = self.rt.config.route(decision.route);
        let route_has_cors = self.rt.config.cors_for(route).is_some();
        Main::apply_cors(decision.cors.as_ref(), route_has_cors);
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(format) = &self.rt.config.access_log else {
            return;
        };
        if !host::log_enabled(LogLevel::Info) {
            return;
        }
        let cfg = &self.rt.config;
        let decision = self.decision.as_ref();
        let text = |b: Option<Vec<u8>>| b.map(|v| String::from_utf8_lossy(&v).into_owned());
        let method = text(host::request_header(":method"));
        let path = text(host::request_header(":path"));
        let request_id = text(host::request_header("x-request-id"));
        let user_agent = text(host::request_header("user-agent"));
        let protocol = text(host::property(&["request", "protocol"]));
        let source = host::property(&["source", "address"]).map(|a| gateway::ip_identity(&a));
        let source = text(source);
        let status = host::property_u64(&["response", "code"]).and_then(|c| u16::try_from(c).ok());
        let length = host::property_u64(&["response", "size"]);
        let now = host::now_ns();
        let ms = |from: u64, to: u64| (from > 0 && to >= from).then(|| (to - from) / 1_000_000);
        let route = decision
            .and_then(|d| d.route)
            .and_then(|i| cfg.table.pattern(i));
        let key_id = decision
            .and_then(|d| d.key)
            .and_then(|i| cfg.api_keys.as_ref()?.keys().get(i))
            .map(|k| k.id.as_str());
        let error = decision.and_then(|d| d.error);
        let record = Record {
            request_id: request_id.as_deref(),
            request_time_epoch_ms: (self.start_ns > 0).then_some(self.start_ns / 1_000_000),
            http_method: method.as_deref(),
            resource_path: route.map(|p| p.resource_path()),
            path: path.as_deref(),
            protocol: protocol.as_deref(),
            status,
            response_length: length,
            response_latency_ms: ms(self.start_ns, now),
            integration_latency_ms: if self.local_reply {
                None
            } else {
                ms(self.start_ns, self.response_ns)
            },
            source_ip: source.as_deref(),
            user_agent: user_agent.as_deref(),
            api_key_id: key_id,
            stage: Some(cfg.stage.as_str()),
            error_message: error.map(|e| e.message()),
            error_response_type: error.map(|e| e.as_str()),
            cache_status: None,
        };
        let mut line = String::with_capacity(512);
        format.format_into(&record, &mut line);
        host::log(LogLevel::Info, &line);
    }
}

/// The upstream role: an upstream HTTP filter of cached clusters (caching lands later; until
/// then it passes everything through).
pub struct Upstream;

impl Context for Upstream {}

impl HttpContext for Upstream {}
