//! tollgate: API Gateway edge features as one Proxy-Wasm HTTP filter.
//!
//! The pure core (everything but `host` and `filter`) knows nothing of proxy-wasm and is
//! unit-tested natively; `host` and `filter` exist only in the wasm build.

pub mod access_log;
pub mod cache;
pub mod calendar;
pub mod config;
pub mod cors;
pub mod error;
pub mod gateway;
mod hash_index;
pub mod header_pairs;
pub mod keys;
pub mod metrics;
pub mod ratelimit_service;
pub mod routes;
mod sort;
pub mod throttle;
pub mod token;
pub mod warn_limit;

#[cfg(target_arch = "wasm32")]
pub mod filter;
#[cfg(target_arch = "wasm32")]
pub mod host;
