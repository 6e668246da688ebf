//! Throttling and quotas: token buckets and calendar quotas over a shared counter store.

pub mod bucket;
pub mod headers;
pub mod quota;
pub mod store;
