//! The per-request contexts. They ask the host, call the core, and apply its decision.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::cache::{self, CacheState};
use super::observe::{Observation, Timing};
use super::Runtime;
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
    /// Access record, filter state and metrics of this request.
    obs: Observation,
    /// What the request's trip through Envoy's cache filter was (hit and miss are told on the
    /// response).
    cache: CacheState,
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
        }
    }

    fn timing(&self) -> Timing {
        Timing {
            start_ns: self.start_ns,
            response_ns: self.response_ns,
            local_reply: self.local_reply,
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
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let rt = Rc::clone(&self.rt);
        self.start_ns = host::now_ns();
        let mut req = HostRequest::default();
        let decision = gateway::decide(&rt.config, &rt.keys, &HostStore, self.start_ns, &mut req);
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
        self.obs = Observation::on_request(&rt, &decision, &mut req);
        if decision.outcome == Outcome::Forward {
            self.cache = cache::on_request(&rt.config, &decision, end_of_stream, &mut self.obs);
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
        cache::on_response(&self.rt.config, &self.cache, &mut self.obs);
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
        self.obs
            .on_log(&self.rt, self.decision.as_ref(), &self.timing());
    }
}
