//! Fleet-wide limits on an Envoy rate limit service (docs/RATE_LIMIT_SERVICE.md): the pure
//! part. `gateway::admit` builds the call for a request that passed the local checks,
//! `gateway::conclude` applies the answer, and the filter (src/filter/http.rs) makes the call.
//!
//! What is here:
//! * [`read_config`]: the `rate_limit_service` section, read strictly with field paths.
//! * [`build_descriptors`] / [`build_request`]: the descriptors sent for one request.
//! * The `envoy.service.ratelimit.v3` messages as `prost`-derived structs (field numbers from
//!   api/envoy/service/ratelimit/v3/rls.proto, api/envoy/extensions/common/ratelimit/v3/
//!   ratelimit.proto, api/envoy/config/core/v3/base.proto and google/protobuf/duration.proto),
//!   with [`encode_request`] and [`decode_response`]. The bytes are the bare message: Envoy adds
//!   and strips the gRPC framing around `dispatch_grpc_call`.
//! * [`interpret`]: a `ShouldRateLimit` answer (or a failed call) turned into a decision.
//!
//! # Descriptors
//!
//! One descriptor per delegated check that applies to the request, in the order the filter runs
//! the checks (`plan`, `route`, `stage`, `client`, `quota`), so that the service's per-descriptor
//! `statuses` map back to the policy names of the `RateLimit` headers. Every descriptor starts
//! with the stage, so one service domain can serve several stages:
//!
//! | check    | entries (key = value)                                                        |
//! |----------|------------------------------------------------------------------------------|
//! | `plan`   | `stage` = stage, `usage_plan` = plan, `api_key_id` = key id                  |
//! | `route`  | `stage` = stage, `route` = route template (`GET /pets/{id}`)                 |
//! | `stage`  | `stage` = stage                                                              |
//! | `client` | `stage` = stage, `client` = IP or IPv6 /64, `key:ID` or `hdr:VALUE`              |
//! | `quota`  | `stage` = stage, `usage_plan` = plan, `api_key_id` = key id, `quota` = period |
//!
//! In envoyproxy/ratelimit these nest naturally (`stage` > `usage_plan` > `api_key_id` with no
//! value, so each key gets its own counter > `quota`). Limitador's own RLS front end binds the
//! list as `descriptors[i]`; see docs/RATE_LIMIT_SERVICE.md for writing its limits.

use crate::config::json::Value;
use prost::Message;

use crate::config::reader::Obj;
use crate::error::FieldError;
use crate::gateway::ErrorType;
use crate::throttle::headers::{self, HeaderMode, PolicyReport};

/// The gRPC service and method the filter will call.
pub const GRPC_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const GRPC_METHOD: &str = "ShouldRateLimit";

/// `timeout_ms` when absent.
pub const DEFAULT_TIMEOUT_MS: u32 = 20;
/// Largest `timeout_ms`: the request waits this long at most.
pub const MAX_TIMEOUT_MS: u32 = 10_000;
/// Longest `domain`.
const MAX_NAME_LEN: usize = 256;
/// Longest `cluster`, in bytes: the call names it in an encoded `GrpcService` that must stay
/// valid UTF-8 for the SDK, so every length in it fits one varint byte (see [`grpc_service`]).
pub const MAX_CLUSTER_LEN: usize = 125;

const FIELDS: &[&str] = &[
    "cluster",
    "domain",
    "timeout_ms",
    "failure_mode",
    "checks",
    "local_first",
];

// ---------------------------------------------------------------------------------------------
// Configuration

/// What happens to a request when the service cannot give an answer in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureMode {
    /// Forward it (local buckets still apply when `local_first` is on).
    Allow,
    /// Refuse it with 429, as a failing shared-data store does.
    Deny,
}

impl FailureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Allow => "allow",
            FailureMode::Deny => "deny",
        }
    }
}

/// A check whose limit the service holds. The names are the policy names of the `RateLimit`
/// headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The usage plan's throttle, per API key.
    Plan,
    /// The matched route's throttle.
    Route,
    /// The stage throttle.
    Stage,
    /// The client buckets.
    Client,
    /// The usage plan's quota, per API key.
    Quota,
}

impl Check {
    /// In the filter's order of checks.
    pub const ALL: [Check; 5] = [
        Check::Plan,
        Check::Route,
        Check::Stage,
        Check::Client,
        Check::Quota,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Plan => "plan",
            Check::Route => "route",
            Check::Stage => "stage",
            Check::Client => "client",
            Check::Quota => "quota",
        }
    }

    pub fn parse(s: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The contract's error when this check refuses a request.
    pub fn error(self) -> ErrorType {
        match self {
            Check::Quota => ErrorType::QuotaExceeded,
            _ => ErrorType::Throttled,
        }
    }
}

/// The `rate_limit_service` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The Envoy cluster (HTTP/2) of the service.
    pub cluster: String,
    /// What the call names as its target: an encoded `envoy.config.core.v3.GrpcService` with
    /// `envoy_grpc.cluster_name` = `cluster` (see [`grpc_service`]).
    pub grpc_service: String,
    /// The rate limit domain (Limitador: the namespace).
    pub domain: String,
    pub timeout_ms: u32,
    pub failure_mode: FailureMode,
    /// The delegated checks, without duplicates, in the filter's order.
    pub checks: Vec<Check>,
    /// Run the local buckets of the delegated checks first, so that a request they refuse never
    /// costs a call (default `true`).
    pub local_first: bool,
}

impl ServiceConfig {
    pub fn delegates(&self, check: Check) -> bool {
        self.checks.contains(&check)
    }
}

/// Reads and validates a `rate_limit_service` object found at `path`.
pub fn read_config(v: &Value, path: &str) -> Result<ServiceConfig, FieldError> {
    let o = Obj::open(v, path, FIELDS)?;
    let cluster = name(&o, "cluster", MAX_CLUSTER_LEN)?;
    let grpc_service = grpc_service(&cluster);
    let domain = name(&o, "domain", MAX_NAME_LEN)?;
    let timeout_ms = match o.number("timeout_ms")? {
        None => DEFAULT_TIMEOUT_MS,
        Some(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) if (1..=MAX_TIMEOUT_MS).contains(&v) => v,
            _ => {
                return Err(FieldError::new(
                    o.path("timeout_ms"),
                    format!("must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}"),
                ))
            }
        },
    };
    let failure_mode = match o.required_string("failure_mode")? {
        "allow" => FailureMode::Allow,
        "deny" => FailureMode::Deny,
        _ => {
            return Err(FieldError::new(
                o.path("failure_mode"),
                "must be `allow` or `deny`",
            ))
        }
    };
    let names = o.strings("checks")?;
    if o.get("checks").is_none() || names.is_empty() {
        return Err(FieldError::new(
            o.path("checks"),
            "is required: a non-empty list of `plan`, `route`, `stage`, `client`, `quota`",
        ));
    }
    let mut checks: Vec<Check> = Vec::with_capacity(names.len());
    for (i, s) in names.iter().enumerate() {
        let item = o.item("checks", i);
        let Some(c) = Check::parse(s) else {
            return Err(FieldError::new(
                item,
                format!("unknown check `{s}`, expected one of `plan`, `route`, `stage`, `client`, `quota`"),
            ));
        };
        if checks.contains(&c) {
            return Err(FieldError::new(item, format!("`{s}` is listed twice")));
        }
        checks.push(c);
    }
    // Sorted: the listed checks (no two alike) in `Check::ALL`'s order, which is `Ord`'s (a
    // `sort` would link the standard library's stable sort, ~2 KB of wasm, for this one list).
    let checks: Vec<Check> = Check::ALL
        .into_iter()
        .filter(|c| checks.contains(c))
        .collect();
    Ok(ServiceConfig {
        cluster,
        grpc_service,
        domain,
        timeout_ms,
        failure_mode,
        checks,
        local_first: o.bool("local_first")?.unwrap_or(true),
    })
}

/// A required string of 1 to `max` bytes, no control characters.
fn name(o: &Obj<'_, '_>, key: &str, max: usize) -> Result<String, FieldError> {
    let s = o.required_string(key)?;
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(FieldError::new(
            o.path(key),
            format!("must be 1 to {max} bytes of UTF-8, none of them control characters"),
        ));
    }
    Ok(s.to_string())
}

/// Cross-check against the rest of the configuration (for when the section is wired in): a
/// delegated check must exist locally (`configured` lists the checks the configuration has:
/// some plan with a throttle, some route with a throttle, ...), since its local settings name
/// the policy and front the call. The error names the `checks` item at `path`.
pub fn check_delegated(
    cfg: &ServiceConfig,
    configured: &[Check],
    path: &str,
) -> Result<(), FieldError> {
    for c in &cfg.checks {
        if !configured.contains(c) {
            return Err(FieldError::new(
                format!("{path}.checks"),
                format!(
                    "`{}` is delegated to the service but the configuration has no such check",
                    c.as_str()
                ),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Messages (prost-derived; field numbers from the .proto files named above)

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.Entry`.
/// `envoy.config.core.v3.GrpcService`, only its `envoy_grpc` target.
#[derive(Clone, PartialEq, Message)]
pub struct GrpcService {
    #[prost(message, optional, tag = "1")]
    pub envoy_grpc: Option<EnvoyGrpc>,
}

/// `envoy.config.core.v3.GrpcService.EnvoyGrpc`.
#[derive(Clone, PartialEq, Message)]
pub struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    pub cluster_name: String,
}

/// The target of the call, for `dispatch_grpc_call`'s first argument. Envoy reads that argument
/// as an encoded `GrpcService` when it parses as one, and as a cluster name only otherwise, so
/// a bare cluster name could be misread (`p1` is a valid encoding of an empty `GrpcService`,
/// which Envoy refuses with a status the SDK cannot handle). Sending the message itself is
/// unambiguous. The SDK takes it as `&str`: with `cluster` at most [`MAX_CLUSTER_LEN`] bytes,
/// both length prefixes are single bytes below 0x80, so the encoding is the cluster name's own
/// UTF-8 behind four ASCII bytes.
///
/// Encoded by hand, byte for byte what prost's `encode_to_vec` of `GrpcService { envoy_grpc:
/// Some(EnvoyGrpc { cluster_name }) }` gives (a test compares them): a second `encode_to_vec`
/// instance costs ~400 bytes of wasm.
pub fn grpc_service(cluster: &str) -> String {
    use prost::encoding::{encode_varint, encoded_len_varint};
    let len = cluster.len() as u64;
    // An empty `cluster_name` is a default, so not written: `envoy_grpc` is then empty.
    let inner = if len == 0 {
        0
    } else {
        1 + encoded_len_varint(len) as u64 + len
    };
    let mut out = Vec::with_capacity(cluster.len() + 6);
    out.push(0x0a);
    encode_varint(inner, &mut out);
    if len > 0 {
        out.push(0x0a);
        encode_varint(len, &mut out);
        out.extend_from_slice(cluster.as_bytes());
    }
    String::from_utf8(out).unwrap_or_default()
}

#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor.RateLimitOverride` (never sent;
/// declared so the descriptor is complete).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    /// `envoy.type.v3.RateLimitUnit`.
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<RateLimitOverride>,
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
    /// Added to the API after the others (Envoy 1.27).
    Week = 7,
}

impl Unit {
    /// The unit's length in seconds; 0 for units of no fixed length (month, year, unknown).
    /// With no `duration_until_reset`, a month or year limit gets no `w` and, over its limit,
    /// the service's own `Retry-After` or else 1 s: the reset may be a second away, and a
    /// client told to wait a 30-day "month" could be shut out for weeks it has paid for.
    pub fn seconds(self) -> u64 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Unknown | Unit::Month | Unit::Year => 0,
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

/// `envoy.service.ratelimit.v3.RateLimitResponse.DescriptorStatus` (field 5, `quota`, is
/// not implemented by Envoy and skipped here as an unknown field).
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

/// `envoy.service.ratelimit.v3.RateLimitResponse`; fields tollgate does not use
/// (`request_headers_to_add` = 4, `raw_body` = 5, `dynamic_metadata` = 6, `quota` = 7) are
/// skipped as unknown fields.
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    #[prost(enumeration = "Code", tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
    #[prost(message, repeated, tag = "3")]
    pub response_headers_to_add: Vec<HeaderValue>,
}

/// The request message's bytes, for `dispatch_grpc_call`.
pub fn encode_request(req: &RateLimitRequest) -> Vec<u8> {
    req.encode_to_vec()
}

/// A response message's bytes (from `get_grpc_call_response_body`); `None` if malformed.
pub fn decode_response(bytes: &[u8]) -> Option<RateLimitResponse> {
    RateLimitResponse::decode(bytes).ok()
}

// ---------------------------------------------------------------------------------------------
// Descriptors

/// What one request offers the delegated checks. Each field is `Some` only when the local check
/// it stands for applies to the request (the caller knows the compiled configuration).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestFacts<'a> {
    pub stage: &'a str,
    /// The matched route's template, when the route has a throttle.
    pub route: Option<&'a str>,
    /// The stage has a throttle.
    pub stage_throttle: bool,
    /// The valid API key presented, with its usage plan.
    pub key: Option<KeyFacts<'a>>,
    /// The client identity, when client buckets are configured.
    pub client: Option<&'a str>,
}

#[derive(Clone, Copy, Debug)]
pub struct KeyFacts<'a> {
    pub id: &'a str,
    pub usage_plan: &'a str,
    /// The plan has a throttle.
    pub throttle: bool,
    /// The plan's quota period (`DAY`, `WEEK`, `MONTH`), when it has a quota.
    pub quota_period: Option<&'a str>,
}

fn entry(key: &str, value: &str) -> Entry {
    Entry {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// The descriptors for one request, each with the check it stands for, in the filter's order.
/// Checks the request gives no facts for are left out, and so is a descriptor with an empty
/// value (the service requires every value to be non-empty). Empty: no call is needed.
pub fn build_descriptors(
    cfg: &ServiceConfig,
    facts: &RequestFacts<'_>,
) -> Vec<(Check, RateLimitDescriptor)> {
    let mut out = Vec::new();
    for check in cfg.checks.iter().copied() {
        let mut entries = vec![entry("stage", facts.stage)];
        let present = match (check, facts.key) {
            (Check::Plan, Some(k)) if k.throttle => {
                entries.push(entry("usage_plan", k.usage_plan));
                entries.push(entry("api_key_id", k.id));
                true
            }
            (Check::Quota, Some(k)) => match k.quota_period {
                Some(period) => {
                    entries.push(entry("usage_plan", k.usage_plan));
                    entries.push(entry("api_key_id", k.id));
                    entries.push(entry("quota", period));
                    true
                }
                None => false,
            },
            (Check::Route, _) => match facts.route {
                Some(r) => {
                    entries.push(entry("route", r));
                    true
                }
                None => false,
            },
            (Check::Stage, _) => facts.stage_throttle,
            (Check::Client, _) => match facts.client {
                Some(c) => {
                    entries.push(entry("client", c));
                    true
                }
                None => false,
            },
            (Check::Plan | Check::Quota, _) => false,
        };
        if present && entries.iter().all(|e| !e.value.is_empty()) {
            out.push((
                check,
                RateLimitDescriptor {
                    entries,
                    limit: None,
                },
            ));
        }
    }
    out
}

/// The `ShouldRateLimit` request for these descriptors (one hit each).
pub fn build_request(
    cfg: &ServiceConfig,
    descriptors: &[(Check, RateLimitDescriptor)],
) -> RateLimitRequest {
    RateLimitRequest {
        domain: cfg.domain.clone(),
        descriptors: descriptors.iter().map(|(_, d)| d.clone()).collect(),
        hits_addend: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// Interpreting the answer

/// Why the service gave no usable answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallFailure {
    /// No answer within `timeout_ms` (gRPC status 4, DEADLINE_EXCEEDED, from Envoy).
    Timeout,
    /// The call failed with this gRPC status (14 UNAVAILABLE: no healthy host, ...), or could not
    /// be dispatched at all (`None`).
    Grpc(Option<u32>),
    /// The answer is not a `RateLimitResponse`.
    Malformed,
    /// `overall_code` is `UNKNOWN` or a value this version does not know.
    UnknownCode,
}

impl CallFailure {
    /// From the status Envoy reports in `on_grpc_call_response` (never 0 here) and how long
    /// the call took. Envoy 1.40 ends a call that ran out of time with 14 UNAVAILABLE (its
    /// async client times out like an HTTP request, with a 504, which maps to 14), the same
    /// status as a service that is down; so a 14 that came at 90% of `timeout_ms` or later
    /// counts as a timeout (Envoy's timer and the wasm clock differ by a few ms; a service
    /// that is down answers in about 1 ms). So does a 1 CANCELLED that late: Envoy sends the
    /// deadline as `grpc-timeout`, and a service on tonic (Limitador) answers its expiry with
    /// CANCELLED, which wins the race when Envoy's own timer fires late on a loaded worker.
    /// 4 DEADLINE_EXCEEDED always does.
    pub fn from_grpc_status(status: u32, elapsed_ms: u64, timeout_ms: u32) -> CallFailure {
        let out_of_time = elapsed_ms.saturating_mul(10) >= u64::from(timeout_ms).saturating_mul(9);
        if status == 4 || ((status == 14 || status == 1) && out_of_time) {
            CallFailure::Timeout
        } else {
            CallFailure::Grpc(Some(status))
        }
    }

    /// A metrics label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            CallFailure::Timeout => "timeout",
            CallFailure::Grpc(_) => "grpc_error",
            CallFailure::Malformed => "malformed",
            CallFailure::UnknownCode => "unknown_code",
        }
    }
}

/// What the filter does with the request after the call.
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceDecision {
    /// `None`: forward the request. `Some`: answer 429 with this error's body.
    pub refuse: Option<ErrorType>,
    /// `Retry-After` of the 429, in whole seconds (at least 1); 0 when forwarding.
    pub retry_after_s: u64,
    /// The service's statuses as `RateLimit` policies, named after their checks.
    pub reports: Vec<PolicyReport>,
    /// The service's `response_headers_to_add` that are safe to pass on (lowercase names).
    pub headers: Vec<(String, String)>,
    /// The call failed; `refuse` then follows `failure_mode`. Counted and logged by the host.
    pub failure: Option<CallFailure>,
}

impl ServiceDecision {
    /// Every header of the answer in order: `Retry-After` (on a 429), the `RateLimit` headers
    /// of `reports` in `mode`, then the service's own headers that [`passed_on`] keeps.
    pub fn header_list(&self, mode: HeaderMode, reports: &[PolicyReport]) -> Vec<(String, String)> {
        let mut own: Vec<(&'static str, String)> = Vec::new();
        if self.refuse.is_some() {
            own.push(("retry-after", self.retry_after_s.max(1).to_string()));
        }
        own.extend(headers::render(mode, reports));
        let service = passed_on(self.headers.clone(), &own);
        own.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(service)
            .collect()
    }
}

/// The service's headers that go on to the client beside tollgate's own (`own`: the
/// rate-limit headers and `Retry-After` tollgate sends). The response's rate-limit headers
/// and `Retry-After` are tollgate's (one value each, never a second), CORS headers and `Vary`
/// are its CORS policy's (an origin the policy refuses gets none): the service's are dropped.
/// The rest are added to the response, never replacing a header of the upstream's.
pub fn passed_on(
    mut service: Vec<(String, String)>,
    own: &[(&'static str, String)],
) -> Vec<(String, String)> {
    service.retain(|(name, _)| {
        let n = name.as_str();
        !(n == "retry-after"
            || n == "vary"
            || n.starts_with("access-control-")
            || own.iter().any(|(o, _)| o.eq_ignore_ascii_case(n)))
    });
    service
}

/// Turns the call's outcome into a decision. `checks` is the check of each descriptor sent
/// (same order).
///
/// * `OVER_LIMIT`: 429. The error is the first over-limit descriptor's check (`quota` gives
///   `QUOTA_EXCEEDED`, any other `THROTTLED`); `Retry-After` is the longest
///   `duration_until_reset` among over-limit descriptors (rounded up, at least 1 s; the unit's
///   length when the service sends none).
/// * `OK`: forward, with the `RateLimit` policies of the service's statuses.
/// * Either way the service's `response_headers_to_add` are kept, except names a filter must
///   not set (pseudo-headers, hop-by-hop, framing) and values with control characters.
/// * A failed call, a malformed answer or `UNKNOWN`: `failure_mode` (deny: 429 `THROTTLED`,
///   `Retry-After: 1`).
pub fn interpret(
    cfg: &ServiceConfig,
    checks: &[Check],
    reply: Result<&[u8], CallFailure>,
) -> ServiceDecision {
    let resp = match reply {
        Err(f) => return failed(cfg, f),
        Ok(bytes) => match decode_response(bytes) {
            Some(r) => r,
            None => return failed(cfg, CallFailure::Malformed),
        },
    };
    let over = match Code::try_from(resp.overall_code) {
        Ok(Code::Ok) => false,
        Ok(Code::OverLimit) => true,
        Ok(Code::Unknown) | Err(_) => return failed(cfg, CallFailure::UnknownCode),
    };
    let mut reports = Vec::new();
    let mut refuse = None;
    let mut retry_after = 0u64;
    for (check, status) in checks.iter().zip(&resp.statuses) {
        let report = report(*check, status);
        if status.code == Code::OverLimit as i32 {
            refuse.get_or_insert(check.error());
            // The service's reset time, with or without a limit to report; else the limit's
            // unit.
            let wait = match &status.duration_until_reset {
                Some(d) => duration_secs_ceil(d),
                None => report.as_ref().map_or(0, |r| r.reset_s),
            };
            retry_after = retry_after.max(wait);
        }
        if let Some(r) = report {
            reports.push(r);
        }
    }
    let headers: Vec<(String, String)> = resp
        .response_headers_to_add
        .iter()
        .filter_map(service_header)
        .collect();
    if over && retry_after == 0 {
        // No status told a reset time: the service's own `Retry-After` (whole seconds), if
        // it sent one (Limitador does).
        if let Some(secs) = headers
            .iter()
            .find(|(n, _)| n == "retry-after")
            .and_then(|(_, v)| v.parse::<u64>().ok())
        {
            retry_after = secs.min(MAX_RESET_S);
        }
    }
    // No status named the check over its limit (Limitador answers with the overall code
    // only): the checks asked tell the error when they agree (a quota alone is
    // QUOTA_EXCEEDED), else it is a throttle.
    let asked = || {
        let mut errors = checks.iter().map(|c| c.error());
        let first = errors.next()?;
        errors.all(|e| e == first).then_some(first)
    };
    ServiceDecision {
        refuse: over.then(|| refuse.or_else(asked).unwrap_or(ErrorType::Throttled)),
        retry_after_s: if over { retry_after.max(1) } else { 0 },
        reports,
        headers,
        failure: None,
    }
}

fn failed(cfg: &ServiceConfig, f: CallFailure) -> ServiceDecision {
    let deny = cfg.failure_mode == FailureMode::Deny;
    ServiceDecision {
        refuse: deny.then_some(ErrorType::Throttled),
        retry_after_s: u64::from(deny),
        reports: Vec::new(),
        headers: Vec::new(),
        failure: Some(f),
    }
}

/// A status as a `RateLimit` header item; `None` when the service names no limit.
fn report(check: Check, status: &DescriptorStatus) -> Option<PolicyReport> {
    let limit = status.current_limit.as_ref()?;
    let window_s = Unit::try_from(limit.unit).map_or(0, Unit::seconds);
    // Without the service's reset time, the window's length; a month or a year has none, and
    // `t=0` would say the limit is reset already: 1, as the Retry-After then says.
    let reset_s = match &status.duration_until_reset {
        Some(d) => duration_secs_ceil(d),
        None => window_s.max(1),
    };
    Some(PolicyReport {
        name: check.as_str(),
        limit: u64::from(limit.requests_per_unit),
        window_s,
        remaining: u64::from(status.limit_remaining),
        reset_s,
    })
}

/// The longest wait tollgate passes on (`Retry-After`, reset times): 366 days, past any
/// calendar quota's window. A service's larger value is a bug on its side, not a reason to
/// tell a client to come back in 292 billion years.
pub const MAX_RESET_S: u64 = 366 * 86_400;

/// Whole seconds, rounded up, at most [`MAX_RESET_S`]; negative durations count as 0.
fn duration_secs_ceil(d: &Duration) -> u64 {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let secs = if d.nanos > 0 && d.seconds >= 0 {
        secs.saturating_add(1)
    } else {
        secs
    };
    secs.min(MAX_RESET_S)
}

/// Header names a service may not set on the client's response.
const FORBIDDEN: &[&str] = &[
    "connection",
    "content-length",
    "content-type",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "date",
    "server",
];

/// A service header as (lowercase name, value), if it is safe to send: a token name that is not
/// forbidden, a value (or `raw_value`, when `value` is empty) of visible ASCII, space and tab.
fn service_header(h: &HeaderValue) -> Option<(String, String)> {
    let name = h.key.to_ascii_lowercase();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) || FORBIDDEN.contains(&name.as_str()) {
        return None;
    }
    let value = if h.value.is_empty() && !h.raw_value.is_empty() {
        String::from_utf8(h.raw_value.clone()).ok()?
    } else {
        h.value.clone()
    };
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    Some((name, value.trim().to_string()))
}

#[cfg(test)]
pub(crate) mod tests;
