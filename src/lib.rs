//! tollgate: API Gateway edge features as one Proxy-Wasm HTTP filter.
//!
//! The pure core (everything but `host` and `filter`) knows nothing of proxy-wasm and is
//! unit-tested natively; `host` and `filter` exist only in the wasm build.

pub mod calendar;
pub mod error;
