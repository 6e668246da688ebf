//! The proxy-wasm entry points: the root context (configuration, role) and the HTTP contexts.

mod cache;
mod http;
mod observe;
mod sdk;

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::config::Config;
use crate::gateway::{self, StoreKeys};
use crate::host;
use crate::metrics::{self, Metric, MetricKind, MetricTable};

/// The root_id of the upstream (cache) role; any other root_id is the main filter.
pub const UPSTREAM_ROOT_ID: &str = "tollgate_upstream";

proxy_wasm::main! {{
    // tollgate logs through `host::log` (which asks the host's level before building a line),
    // not the `log` crate, so the SDK's logger is not installed: `proxy_wasm::set_log_level`
    // would link it, its panic hook and `log`'s machinery (1.7 KB of module). A panic, which
    // the lints forbid in tollgate's code, still reaches Envoy's log: Rust's own hook writes it
    // to stderr, which Envoy logs at error (`wasm log ...: thread '<unnamed>' panicked at
    // ...`), before the trap.
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Host metric ids of one series, in [`Metric::ALL`] order.
pub type SeriesIds = [u32; Metric::ALL.len()];

/// What every HTTP context of one configuration shares.
pub struct Runtime {
    pub config: Config,
    pub keys: StoreKeys,
    /// The metric series of this configuration (route x method).
    pub metrics: MetricTable,
    /// Host metric ids per series (same index as `metrics.series()`), defined with the host on
    /// the series' first request in this VM ([`Runtime::series_ids`]); empty for the upstream
    /// role, which counts nothing.
    pub metric_ids: Vec<Cell<Option<SeriesIds>>>,
    /// The host refused to define a metric: metrics are off (logged once).
    pub metrics_refused: Cell<bool>,
    /// Host ids of the rate limit service's counters ([`metrics::SERVICE_COUNTERS`] order);
    /// empty without a service.
    pub service_ids: Vec<u32>,
    /// Host id of the stage's [`metrics::STORE_FAILURES`] counter (None: the upstream role, or
    /// the host refused it).
    pub store_failures_id: Option<u32>,
    /// Requests Envoy redirected internally, for their second legs, which Envoy runs on this
    /// worker once the first legs end ([`Runtime::followed_redirect`]).
    pub handovers: Cell<gateway::Handovers>,
}

impl Runtime {
    /// Whether requests are counted in metric series.
    pub fn metrics_on(&self) -> bool {
        !self.metric_ids.is_empty() && !self.metrics_refused.get()
    }

    /// The host ids of series `i`'s metrics, defined on its first use: a configuration's series
    /// (routes x methods x metrics: 64,000 for 2,000 routes) then cost host calls, and Envoy
    /// memory, only for the routes and methods requests use, instead of all of them in every
    /// root context at each load. None when metrics are off.
    pub fn series_ids(&self, i: usize) -> Option<SeriesIds> {
        if self.metrics_refused.get() {
            return None;
        }
        let cell = self.metric_ids.get(i)?;
        if let Some(ids) = cell.get() {
            return Some(ids);
        }
        let mut ids: SeriesIds = [0; Metric::ALL.len()];
        for (slot, metric) in ids.iter_mut().zip(Metric::ALL) {
            let id = self
                .metrics
                .stat_name(i, metric)
                .and_then(|name| host::define_metric(metric.kind(), &name));
            match id {
                Some(id) => *slot = id,
                None => {
                    self.metrics_refused.set(true);
                    host::log(
                        LogLevel::Warn,
                        "tollgate: the host refused to define a metric; metrics are off",
                    );
                    return None;
                }
            }
        }
        cell.set(Some(ids));
        Some(ids)
    }

    /// What the first leg of an internal redirect handed over, if the request whose headers
    /// came at `now_ns` is its second leg: its stream started when the first leg's did (Envoy
    /// copies the start time to the second leg's stream; no client can set it). Not every
    /// redirect sets `x-envoy-original-url` (Envoy's `custom_response` does not), so the
    /// time alone decides. Requests pay nothing while no handover waits.
    pub fn followed_redirect(&self, now_ns: u64) -> Option<gateway::Handover> {
        self.with_handovers(|handovers| {
            if handovers.is_empty() {
                return None;
            }
            host::property_u64(b"request\0time").and_then(|t| handovers.claim(t, now_ns))
        })
    }

    /// Keeps a first leg's handover for its second leg.
    pub fn hand_over(&self, handover: gateway::Handover) {
        self.with_handovers(|handovers| handovers.put(handover));
    }

    /// `f` on the waiting handovers (taken out of their cell meanwhile, and put back).
    fn with_handovers<R>(&self, f: impl FnOnce(&mut gateway::Handovers) -> R) -> R {
        let mut handovers = self.handovers.take();
        let r = f(&mut handovers);
        self.handovers.set(handovers);
        r
    }
}

#[derive(Default)]
struct Root {
    runtime: Option<Rc<Runtime>>,
    upstream_role: bool,
}

impl Context for Root {
    sdk::context_helpers!();
}

impl RootContext for Root {
    sdk::root_helpers!();

    fn on_configure(&mut self, _size: usize) -> bool {
        let root_id = host::property(b"plugin_root_id")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        self.upstream_role = match crate::config::role_of(&root_id) {
            Ok(upstream) => upstream,
            Err(why) => {
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: invalid configuration: {why}"),
                );
                return false;
            }
        };
        let bytes = host::plugin_configuration().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: invalid configuration: {e}"),
                );
                return false;
            }
        };
        let plugin = host::property(b"plugin_name")
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let mut keys = StoreKeys::new(&format!("tollgate:{plugin}:"), &config);
        let digest = crate::keys::sha256(&bytes);
        let warnings = match self.upstream_role {
            true => &[][..],
            false => &config.warnings[..],
        };
        // Stands for this configuration (and tollgate's version) in `key`, once a root context
        // of the process loaded it: its counters exist and its load was logged.
        let mark = gateway::warnings_mark(gateway::MARK_VERSION, &digest, warnings);
        let key = match self.upstream_role {
            true => format!("{}:loaded-upstream", keys.stage_prefix()),
            false => format!("{}:warned", keys.stage_prefix()),
        };
        if !self.upstream_role {
            let seeded = match config.client_throttle {
                Some(_) => {
                    let [a, b] = [host::random_u64(), host::random_u64()];
                    let mut fresh = [0u8; 16];
                    let (x, y) = fresh.split_at_mut(8);
                    x.copy_from_slice(&a.to_le_bytes());
                    y.copy_from_slice(&b.to_le_bytes());
                    gateway::settle_client_seed(&host::HostStore, &mut keys, fresh)
                }
                None => Ok(()),
            };
            if let Err(e) = seeded.and_then(|()| {
                gateway::initialize_store_once(
                    &config,
                    &keys,
                    &host::HostStore,
                    host::now_ns(),
                    (&key, mark),
                )
                .map(|_| ())
            }) {
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: cannot create counters in shared data: {e:?}"),
                );
                return false;
            }
        }
        // What was loaded, and its warnings: the upstream role has the same configuration, so
        // the main role speaks for both, and of its root contexts (one per worker, one on the
        // main thread, a canary) the first to mark this load (a configuration that comes back
        // is logged again). The upstream role says once that it is one.
        let summary = config.summary(&digest);
        if gateway::first_to_warn(&host::HostStore, &key, mark) {
            let what = if self.upstream_role {
                "upstream role (cache fetches only)"
            } else {
                "configuration"
            };
            host::log(
                LogLevel::Info,
                &format!("tollgate: {what} loaded: {summary}"),
            );
            for w in warnings {
                host::log(LogLevel::Warn, &format!("tollgate: {w}"));
            }
            if !self.upstream_role
                && config.access_log.is_some()
                && !host::log_enabled(LogLevel::Info)
            {
                host::log(
                    LogLevel::Warn,
                    "tollgate: access_log is set, but Envoy logs the wasm component above info: no record is written until it is info (-l info, or POST /logging?wasm=info)",
                );
            }
        }
        let metrics = MetricTable::for_config(&config);
        let metric_ids = match self.upstream_role {
            true => Vec::new(),
            false => (0..metrics.len()).map(|_| Cell::new(None)).collect(),
        };
        let service_ids = if self.upstream_role || config.rate_limit_service.is_none() {
            Vec::new()
        } else {
            metrics::SERVICE_COUNTERS
                .iter()
                .map_while(|c| {
                    host::define_metric(MetricKind::Counter, &metrics.stage_stat_name(c))
                })
                .collect()
        };
        let store_failures_id = (!self.upstream_role)
            .then(|| {
                let name = metrics.stage_stat_name(metrics::STORE_FAILURES);
                host::define_metric(MetricKind::Counter, &name)
            })
            .flatten();
        self.runtime = Some(Rc::new(Runtime {
            config,
            keys,
            metrics,
            metric_ids,
            metrics_refused: Cell::new(false),
            service_ids,
            store_failures_id,
            handovers: Cell::default(),
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.clone()?;
        if self.upstream_role {
            Some(Box::new(cache::Upstream::new(runtime)))
        } else {
            Some(Box::new(http::Main::new(runtime)))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
