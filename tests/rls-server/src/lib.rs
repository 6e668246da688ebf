//! The `envoy.service.ratelimit.v3` messages that `rls-server` and `rls-call` exchange, written
//! with prost-derive (no protoc). Tag numbers are those of envoy/service/ratelimit/v3/rls.proto
//! and envoy/extensions/common/ratelimit/v3/ratelimit.proto, as in tollgate's
//! src/ratelimit_service.rs; fields neither side uses are left out (prost skips them).

use prost::Message;

/// The gRPC path of the one method.
pub const SHOULD_RATE_LIMIT_PATH: &str =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
/// The gRPC service name.
pub const SERVICE_NAME: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor` (`limit`, tag 2, left out).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
}

/// `envoy.service.ratelimit.v3.RateLimitRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    /// 0 (not sent) means 1.
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse.Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Code {
    Unknown = 0,
    Ok = 1,
    OverLimit = 2,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Unit {
    Unknown = 0,
    Second = 1,
    Minute = 2,
    Hour = 3,
    Day = 4,
    Month = 5,
    Year = 6,
}

impl Unit {
    /// The unit whose length is exactly `seconds`, else `Unknown`.
    pub fn from_seconds(seconds: u64) -> Unit {
        match seconds {
            1 => Unit::Second,
            60 => Unit::Minute,
            3_600 => Unit::Hour,
            86_400 => Unit::Day,
            _ => Unit::Unknown,
        }
    }
}

/// `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimit {
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(enumeration = "Unit", tag = "2")]
    pub unit: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus`.
#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    #[prost(enumeration = "Code", tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<RateLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// `envoy.service.ratelimit.v3.RateLimitResponse` (`request_headers_to_add`, tag 4, and the
/// later fields left out).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
}

/// A code's proto name (`OK`, `OVER_LIMIT`, `UNKNOWN`; other numbers as digits).
pub fn code_name(code: i32) -> String {
    match Code::try_from(code) {
        Ok(Code::Ok) => "OK".into(),
        Ok(Code::OverLimit) => "OVER_LIMIT".into(),
        Ok(Code::Unknown) => "UNKNOWN".into(),
        Err(_) => code.to_string(),
    }
}

/// A unit's proto name (`SECOND`, `MINUTE`, ...; other numbers as digits).
pub fn unit_name(unit: i32) -> String {
    match Unit::try_from(unit) {
        Ok(u) => format!("{u:?}").to_uppercase(),
        Err(_) => unit.to_string(),
    }
}

/// The JSON line `rls-call` prints for an answer.
pub fn response_json(resp: &RateLimitResponse) -> serde_json::Value {
    let statuses: Vec<serde_json::Value> = resp
        .statuses
        .iter()
        .map(|s| {
            let mut o = serde_json::json!({
                "code": code_name(s.code),
                "limit_remaining": s.limit_remaining,
            });
            if let Some(l) = &s.current_limit {
                o["current_limit"] = serde_json::json!({
                    "requests_per_unit": l.requests_per_unit,
                    "unit": unit_name(l.unit),
                    "name": l.name,
                });
            }
            if let Some(d) = &s.duration_until_reset {
                o["duration_until_reset_ms"] =
                    serde_json::json!(d.seconds * 1000 + i64::from(d.nanos) / 1_000_000);
            }
            o
        })
        .collect();
    let headers: serde_json::Map<String, serde_json::Value> = resp
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.clone(), serde_json::Value::String(h.value.clone())))
        .collect();
    serde_json::json!({
        "overall_code": code_name(resp.overall_code),
        "statuses": statuses,
        "response_headers_to_add": headers,
    })
}
