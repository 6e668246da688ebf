//! The proxy-wasm entry points: the root context (configuration, role) and the HTTP contexts.

mod http;

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};

use crate::config::Config;
use crate::gateway::{self, StoreKeys};
use crate::host;

/// The root_id of the upstream (cache) role; any other root_id is the main filter.
pub const UPSTREAM_ROOT_ID: &str = "tollgate_upstream";

proxy_wasm::main! {{
    // The host filters by its own level too; `host::log_enabled` asks it before building lines.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// What every HTTP context of one configuration shares.
pub struct Runtime {
    pub config: Config,
    pub keys: StoreKeys,
}

#[derive(Default)]
struct Root {
    runtime: Option<Rc<Runtime>>,
    upstream_role: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let root_id = host::property(&["plugin_root_id"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        self.upstream_role = root_id == UPSTREAM_ROOT_ID;
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
        for w in &config.warnings {
            host::log(LogLevel::Warn, &format!("tollgate: {w}"));
        }
        let plugin = host::property(&["plugin_name"])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let keys = StoreKeys::new(&format!("tollgate:{plugin}:"), &config);
        if !self.upstream_role {
            if let Err(e) =
                gateway::initialize_store(&config, &keys, &host::HostStore, host::now_ns())
            {
                host::log(
                    LogLevel::Error,
                    &format!("tollgate: cannot create counters in shared data: {e:?}"),
                );
                return false;
            }
        }
        self.runtime = Some(Rc::new(Runtime { config, keys }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.clone()?;
        if self.upstream_role {
            Some(Box::new(http::Upstream))
        } else {
            Some(Box::new(http::Main::new(runtime)))
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
