//! The plugin configuration: parsed strictly from JSON, validated, and compiled once into the
//! structures the request path uses. Every error names the field by its JSON path.

pub mod json;
mod protobuf;
mod raw;
pub(crate) mod reader;

use json::{Number, Value};

use crate::access_log::{Exports, Field, LogFormat};
use crate::cache::{self, CacheMethods, CachePolicy, CacheSettings, UnauthorizedStrategy};
use crate::cors::{CorsPolicy, CorsSpec};
use crate::error::{FieldError, Quoted};
use crate::keys::{parse_sha256_hex, sha256, ApiKey, ApiKeys};
use crate::ratelimit_service::{self, Check, ServiceConfig};
use crate::routes::RouteTable;
use crate::throttle::bucket::BucketSpec;
use crate::throttle::headers::HeaderMode;
use crate::throttle::quota::Period;
use raw::{RawConfig, RawThrottle};
use reader::{item, join};

/// Default number of per-client bucket slots.
pub const DEFAULT_CLIENT_SLOTS: u32 = 4096;
/// Most client slots one configuration may ask for.
pub const MAX_CLIENT_SLOTS: u32 = 1 << 20;
const MAX_RATE: f64 = 1e9;
/// The smallest rate a bucket counts (one micro-token a second, `bucket::SCALE`).
const MIN_RATE: f64 = 1e-6;

/// A usage plan: a per-key throttle and quota.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub throttle: Option<BucketSpec>,
    pub quota: Option<Quota>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: Period,
}

/// Who a client bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientBy {
    /// The downstream address Envoy reports (`source.address`), so Envoy's trusted-hops
    /// settings decide whether `x-forwarded-for` counts.
    Ip,
    ApiKey,
    /// A request header, lowercased.
    Header(String),
}

#[derive(Clone, Debug)]
pub struct ClientThrottle {
    pub by: ClientBy,
    pub spec: BucketSpec,
    pub slots: u32,
}

/// Which CORS policy a route uses.
#[derive(Clone, Debug)]
pub enum RouteCors {
    Stage,
    Off,
    Own(Box<CorsPolicy>),
}

/// The settings that apply to one route (or, for requests matching no route, to the stage).
#[derive(Clone, Debug)]
pub struct Route {
    /// The `match` string, `None` for the stage defaults.
    pub name: Option<String>,
    pub api_key_required: bool,
    pub throttle: Option<BucketSpec>,
    pub enforce: bool,
    pub cors: RouteCors,
    /// The cache policy in force (the route's `cache` over the stage's); None: not cached.
    pub cache: Option<CachePolicy>,
}

/// The compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub stage: String,
    pub enforce: bool,
    pub api_keys: Option<ApiKeys>,
    pub plans: Vec<Plan>,
    pub stage_throttle: Option<BucketSpec>,
    pub client_throttle: Option<ClientThrottle>,
    pub rate_limit_headers: HeaderMode,
    pub cors: Option<CorsPolicy>,
    pub access_log: Option<LogFormat>,
    /// The fields exported as filter state for Envoy's access loggers.
    pub filter_state: Exports,
    pub table: RouteTable,
    /// Settings of each route, parallel to `table`.
    pub routes: Vec<Route>,
    /// Settings for requests that match no route.
    pub default_route: Route,
    /// Some route (or the stage) caches, so Envoy's cache filter and tollgate's upstream role
    /// are expected in front of the upstream.
    pub caching: bool,
    /// Fleet-wide limits on an Envoy rate limit service (docs/RATE_LIMIT_SERVICE.md).
    pub rate_limit_service: Option<ServiceConfig>,
    /// Start-up warnings (never containing a key value).
    pub warnings: Vec<String>,
}

/// The role a root_id picks: `Ok(true)` for the upstream role (`tollgate_upstream`, exactly),
/// `Ok(false)` for the main filter (any other root_id, or none). A misspelling of the upstream
/// role's (the same letters in another case or with other separators: `tollgate-upstream`,
/// `Tollgate_Upstream`) is refused: as the main role on a cluster it would charge every cache
/// fill a second time (and Envoy 1.40 crashes on a property read there).
pub fn role_of(root_id: &str) -> Result<bool, String> {
    const UPSTREAM: &str = "tollgate_upstream";
    if root_id == UPSTREAM {
        return Ok(true);
    }
    let letters = root_id.bytes().filter(u8::is_ascii_alphanumeric);
    if letters
        .map(|b| b.to_ascii_lowercase())
        .eq(b"tollgateupstream".iter().copied())
    {
        return Err(format!(
            "root_id {} is not the upstream role's, \"{UPSTREAM}\" exactly",
            Quoted(root_id)
        ));
    }
    Ok(false)
}

impl Config {
    /// One line telling what a loaded configuration holds, for the log: the stage, what it
    /// checks, and `digest` (of the bytes Envoy passed), which tells loads apart.
    pub fn summary(&self, digest: &[u8]) -> String {
        use crate::access_log::push_u64;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let mut s = String::from("stage \"");
        s.push_str(&self.stage);
        s.push_str("\", ");
        push_u64(count(self.routes.len()), &mut s);
        s.push_str(" route(s), ");
        push_u64(
            count(self.api_keys.as_ref().map_or(0, |k| k.keys().len())),
            &mut s,
        );
        s.push_str(" API key(s), ");
        push_u64(count(self.plans.len()), &mut s);
        s.push_str(" usage plan(s)");
        if !self.enforce {
            s.push_str(", report-only");
        }
        // The examples' fail-closed guard lets through only requests carrying the stage.
        if !self.filter_state.contains(Field::Stage) {
            s.push_str(", stage not exported as filter state (a guard after tollgate refuses all)");
        }
        s.push_str("; digest ");
        for b in digest.iter().take(6) {
            crate::access_log::push_hex(u32::from(*b), 2, false, &mut s);
        }
        s
    }

    /// Parses and compiles a configuration: JSON text, or a binary `google.protobuf.Struct`
    /// (what Envoy passes when the configuration is given as a Struct). Empty input is the
    /// empty configuration `{}`.
    pub fn from_json(bytes: &[u8]) -> Result<Config, FieldError> {
        // A UTF-8 byte order mark, which some editors write, is ignored (RFC 8259 allows it;
        // no Struct starts with 0xEF, an invalid tag).
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return compile(RawConfig::default());
        }
        // JSON first, then a Struct. A Struct's first byte (its field tag, 0x0a) is a newline
        // and its second a length, which may well be `{` or `[`: no byte tells them apart, but
        // a Struct's tags and lengths are never valid JSON text.
        let value: Value = match json::parse_strict(bytes) {
            Ok(v) => v,
            Err(json_error) => match protobuf::struct_to_json(bytes) {
                Ok(v) => v,
                Err(proto_error) => {
                    // A fault under a key: a Struct with a bad value at that path. (Reaching a
                    // value takes its tag, 0x12, a control character no JSON text holds; the
                    // first entry's length may be 91 or 123, `[` or `{`.)
                    if !proto_error.path.is_empty() {
                        return Err(proto_error);
                    }
                    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
                    let text = matches!(first, Some(b'{' | b'['));
                    let yaml = std::str::from_utf8(bytes)
                        .is_ok_and(|t| !t.chars().any(|c| c.is_control() && !c.is_whitespace()));
                    let why = if text {
                        format!("not valid JSON: {json_error}")
                    } else if yaml {
                        // Text, but not JSON: YAML, as Envoy's own configuration is written.
                        format!("not valid JSON ({json_error}); a StringValue holds JSON text, not YAML")
                    } else {
                        format!(
                            "neither JSON nor a protobuf Struct ({})",
                            proto_error.message
                        )
                    };
                    let path = json_error.value_path().filter(|_| text).unwrap_or_default();
                    return Err(err(path, why));
                }
            },
        };
        if !value.is_object() {
            return Err(err("", "the configuration must be a JSON object"));
        }
        let raw = raw::read_config(&value)?;
        compile(raw)
    }

    /// The settings for route `index`, or the stage defaults.
    pub fn route(&self, index: Option<usize>) -> &Route {
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default_route)
    }

    /// Every cache policy in force: the routes' and then the stage's.
    pub fn cache_policies(&self) -> impl Iterator<Item = &CachePolicy> {
        self.routes
            .iter()
            .chain(std::iter::once(&self.default_route))
            .filter_map(|r| r.cache.as_ref())
    }

    /// The CORS policy in force for a route.
    pub fn cors_for<'a>(&'a self, route: &'a Route) -> Option<&'a CorsPolicy> {
        match &route.cors {
            RouteCors::Stage => self.cors.as_ref(),
            RouteCors::Off => None,
            RouteCors::Own(p) => Some(p),
        }
    }
}

fn err(path: impl Into<String>, msg: impl Into<String>) -> FieldError {
    FieldError::new(path, msg)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_header_name(s: &str) -> bool {
    s.len() <= 256 && crate::token::is_token(s.as_bytes())
}

/// Why a filter never sees a request header of this (lower-case) name, if it does not: Envoy
/// turns `Host` into `:authority` and removes the hop-by-hop headers before any filter runs
/// (`upgrade` and `te: trailers` aside, which no client identity or key should be).
fn withheld_by_envoy(name: &str) -> Option<&'static str> {
    match name {
        "host" => Some("Envoy hands Host to filters as :authority, never as host"),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te"
        | "upgrade" => Some("a hop-by-hop header, which Envoy removes (or keeps only for its own use) before any filter sees the request"),
        _ => None,
    }
}

fn positive_rate(n: &Number, path: &str) -> Result<f64, FieldError> {
    match n.as_f64() {
        Some(r) if r.is_finite() && (MIN_RATE..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(err(
            path,
            "must be a positive number of requests per second, at least 0.000001 (one request every 11.6 days), at most 1000000000".to_string(),
        )),
    }
}

fn positive_int(n: &Number, path: &str, max: u64) -> Result<u64, FieldError> {
    match n.as_u64() {
        Some(v) if v >= 1 && v <= max => Ok(v),
        // A whole number past what a float's text is read as (`1e10`), but one an integer's
        // text could still give (18446744073709551616 is read as a float, too large).
        _ if matches!(n, Number::Float(f) if f.fract() == 0.0 && *f > 0.0 && *f < 18_446_744_073_709_551_616.0) && max > u64::from(u32::MAX) => {
            Err(err(
                path,
                "must be a positive integer; above 4294967295, write it without a fraction or exponent",
            ))
        }
        _ => Err(err(
            path,
            format!("must be a positive integer, at most {max}"),
        )),
    }
}

fn throttle(t: &RawThrottle, path: &str) -> Result<BucketSpec, FieldError> {
    let rate = positive_rate(&t.rate, &join(path, "rate"))?;
    let burst = positive_int(&t.burst, &join(path, "burst"), u64::from(u32::MAX))?;
    BucketSpec::new(rate, burst).ok_or_else(|| err(join(path, "rate"), "is out of range"))
}

/// A route's `cache` or `cors`: `true` (or absent) takes the stage's, `false` turns it off, an
/// object is the route's own.
enum Switch<'a> {
    Stage,
    Off,
    Own(&'a Value<'a>),
}

fn switch<'a>(value: Option<&'a Value<'a>>, path: &str) -> Result<Switch<'a>, FieldError> {
    match value {
        None | Some(Value::Bool(true)) => Ok(Switch::Stage),
        Some(Value::Bool(false)) => Ok(Switch::Off),
        Some(v @ Value::Object(_)) => Ok(Switch::Own(v)),
        Some(v) => Err(err(
            path.to_string(),
            format!(
                "invalid type: {}, expected true, false or an object",
                reader::type_name(v)
            ),
        )),
    }
}

/// `filter_state`: `true` (every exported field, the default), `false` (none), or the list of
/// the variables to export.
fn filter_state(value: &Value) -> Result<Exports, FieldError> {
    let items = match value {
        Value::Bool(true) => return Ok(Exports::ALL),
        Value::Bool(false) => return Ok(Exports::NONE),
        Value::Array(items) => items,
        other => {
            return Err(err(
                "filter_state",
                format!(
                    "invalid type: {}, expected a boolean or an array of variable names",
                    reader::type_name(other)
                ),
            ))
        }
    };
    let mut exports = Exports::NONE;
    for (i, item) in items.iter().enumerate() {
        let path = reader::item("", "filter_state", i);
        let Value::String(name) = item else {
            return Err(err(
                path,
                format!(
                    "invalid type: {}, expected a string",
                    reader::type_name(item)
                ),
            ));
        };
        match Field::from_name(name).filter(|f| Field::EXPORTED.contains(f)) {
            Some(f) => exports = exports.with(f),
            None => {
                let mut message =
                    format!("`{name}` is not exported as filter state, expected one of ");
                for (i, f) in Field::EXPORTED.iter().enumerate() {
                    if i > 0 {
                        message.push_str(", ");
                    }
                    message.push('`');
                    message.push_str(f.name());
                    message.push('`');
                }
                return Err(err(path, message));
            }
        }
    }
    Ok(exports)
}

fn cors(value: &Value, path: &str) -> Result<CorsPolicy, FieldError> {
    let raw = raw::read_cors(value, path)?;
    let max_age = match &raw.max_age {
        None => None,
        Some(n) => match n.as_u64() {
            Some(v) if v <= 86_400 => u32::try_from(v).ok(),
            _ => {
                return Err(err(
                    join(path, "max_age"),
                    "must be a whole number of seconds from 0 to 86400",
                ))
            }
        },
    };
    let spec = CorsSpec {
        allow_origins: &raw.allow_origins,
        allow_methods: &raw.allow_methods,
        allow_headers: &raw.allow_headers,
        expose_headers: &raw.expose_headers,
        max_age,
        allow_credentials: raw.allow_credentials.unwrap_or(false),
        allow_private_network: raw.allow_private_network.unwrap_or(false),
    };
    CorsPolicy::compile(&spec).map_err(|e| e.within(path))
}

/// Reads and checks a `cache` object at `path` (stage or route).
fn cache_settings(value: &Value, path: &str) -> Result<CacheSettings, FieldError> {
    let raw = raw::read_cache(value, path)?;
    let ttl_s = match &raw.ttl {
        None => None,
        Some(n) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
            Some(v) if v <= cache::MAX_TTL_S => Some(v),
            _ => {
                return Err(err(
                    join(path, "ttl"),
                    "must be a whole number of seconds from 0 (no caching) to 3600",
                ))
            }
        },
    };
    if raw.require_authorization == Some(false) && raw.unauthorized_strategy.is_some() {
        return Err(err(
            join(path, "unauthorized_strategy"),
            "never applies: with require_authorization false every client may ask for a fresh response",
        ));
    }
    let unauthorized_strategy = match &raw.unauthorized_strategy {
        None => None,
        Some(s) => Some(UnauthorizedStrategy::parse(s).ok_or_else(|| {
            err(
                join(path, "unauthorized_strategy"),
                format!(
                    "must be \"FAIL_WITH_403\", \"SUCCEED_WITH_RESPONSE_HEADER\" or \"SUCCEED_WITHOUT_RESPONSE_HEADER\", got {s}", s = Quoted(s)),
            )
        })?),
    };
    let key_parameters = match &raw.key_parameters {
        None => None,
        Some(list) => {
            let mut params = Vec::with_capacity(list.len());
            for (i, text) in list.iter().enumerate() {
                let p = cache::parse_key_parameter(text)
                    .map_err(|m| err(item(path, "key_parameters", i), m))?;
                if let Some(j) = params.iter().position(|q| q == &p) {
                    return Err(err(
                        item(path, "key_parameters", i),
                        format!("duplicates {}", item(path, "key_parameters", j)),
                    ));
                }
                params.push(p);
            }
            Some(params)
        }
    };
    let methods = match &raw.methods {
        None => None,
        Some(list) => {
            let mut m = CacheMethods {
                get: false,
                head: false,
            };
            for (i, name) in list.iter().enumerate() {
                let seen = match name.as_str() {
                    "GET" => std::mem::replace(&mut m.get, true),
                    "HEAD" => std::mem::replace(&mut m.head, true),
                    other => {
                        return Err(err(
                            item(path, "methods", i),
                            format!(
                                "{other} cannot be cached: Envoy's cache filter stores only GET responses (and answers HEAD from them); use \"GET\" and/or \"HEAD\"", other = Quoted(other)),
                        ))
                    }
                };
                if seen {
                    return Err(err(item(path, "methods", i), "names a method given before"));
                }
            }
            if !m.get {
                return Err(err(
                    join(path, "methods"),
                    "must name \"GET\" (and may name \"HEAD\"): Envoy answers HEAD only from stored GET responses (use \"enabled\": false to turn caching off)",
                ));
            }
            Some(m)
        }
    };
    Ok(CacheSettings {
        enabled: raw.enabled,
        ttl_s,
        require_authorization: raw.require_authorization,
        unauthorized_strategy,
        key_parameters,
        methods,
    })
}

fn compile(raw: RawConfig<'_>) -> Result<Config, FieldError> {
    let mut warnings = Vec::new();

    let stage = raw.stage.unwrap_or("default");
    if !is_name(stage) {
        return Err(err(
            "stage",
            "must be 1 to 128 characters of letters, digits, '-', '_' or '.'",
        ));
    }
    let enforce = raw.enforce.unwrap_or(true);

    let stage_cache = match &raw.cache {
        None => None,
        Some(v) => Some(cache_settings(v, "cache")?),
    };

    // Usage plans, in name order (as read from the JSON object) so indexes are stable.
    let mut plans = Vec::new();
    for (name, p) in raw.usage_plans.unwrap_or_default() {
        let path = join("usage_plans", name);
        if !is_name(name) {
            return Err(err(
                path,
                "plan names are 1 to 128 characters of letters, digits, '-', '_' or '.'",
            ));
        }
        let throttle = match &p.throttle {
            Some(t) => Some(throttle(t, &join(&path, "throttle"))?),
            None => None,
        };
        let quota = match &p.quota {
            Some(q) => {
                let limit = positive_int(&q.limit, &join(&path, "quota.limit"), u64::MAX)?;
                let period = Period::parse(q.period).ok_or_else(|| {
                    err(
                        join(&path, "quota.period"),
                        format!("must be DAY, WEEK or MONTH, got {}", Quoted(q.period)),
                    )
                })?;
                Some(Quota { limit, period })
            }
            None => None,
        };
        plans.push(Plan {
            name: name.to_string(),
            throttle,
            quota,
        });
    }

    let api_keys = match raw.api_key {
        None => None,
        Some(ak) => {
            let header = ak.header.unwrap_or("x-api-key").to_ascii_lowercase();
            if !is_header_name(&header) {
                return Err(err("api_key.header", "must be a valid HTTP header name"));
            }
            if let Some(why) = withheld_by_envoy(&header) {
                return Err(err(
                    "api_key.header",
                    format!("cannot be {header}: {why}, so every key would be missing"),
                ));
            }
            // The access record prints these: a key there would be logged.
            if header == "user-agent" || header == "x-request-id" {
                return Err(err(
                    "api_key.header",
                    "must not be user-agent or x-request-id: the access record prints their values, and no key may be logged",
                ));
            }
            let mut keys: Vec<ApiKey> = Vec::new();
            // Keys given as plain `value`: how many, and the first.
            let mut plain = (0usize, String::new());
            for (i, k) in ak.keys.into_iter().enumerate() {
                // Written only for an error or the warning (20,000 keys would format 20,000).
                let path = || item("api_key", "keys", i);
                if !is_name(k.id) {
                    return Err(err(
                        join(&path(), "id"),
                        "must be 1 to 128 characters of letters, digits, '-', '_' or '.'",
                    ));
                }
                let digest = match (&k.sha256, &k.value) {
                    (Some(h), None) => parse_sha256_hex(h).ok_or_else(|| {
                        err(
                            join(&path(), "sha256"),
                            "must be 64 lowercase hex digits (the SHA-256 of the key)",
                        )
                    })?,
                    (None, Some(v)) => {
                        if v.is_empty() {
                            return Err(err(join(&path(), "value"), "must not be empty"));
                        }
                        if !crate::keys::presentable(v.as_bytes()) {
                            return Err(err(
                                join(&path(), "value"),
                                "must not start or end with whitespace or hold control characters: no request could present it",
                            ));
                        }
                        // One warning for them all: a list of thousands would log thousands.
                        if plain.0 == 0 {
                            plain.1 = format!("{} ({})", path(), k.id);
                        }
                        plain.0 += 1;
                        sha256(v.as_bytes())
                    }
                    _ => return Err(err(
                        path(),
                        "give exactly one of `sha256` (production) or `value` (local development)",
                    )),
                };
                let plan = match &k.usage_plan {
                    None => None,
                    Some(name) => {
                        // `plans` is in name order (the JSON object's): a binary search, as a
                        // list of many thousands of keys loads at once.
                        Some(
                            plans
                                .binary_search_by(|p| p.name.as_str().cmp(name))
                                .ok()
                                .ok_or_else(|| {
                                    err(
                                        join(&path(), "usage_plan"),
                                        format!(
                                            "names no plan in usage_plans: {name}",
                                            name = Quoted(name)
                                        ),
                                    )
                                })?,
                        )
                    }
                };
                keys.push(ApiKey::new(
                    k.id.to_string(),
                    digest,
                    plan,
                    k.invalidate_cache.unwrap_or(false),
                ));
            }
            if let (n @ 1.., first) = plain {
                warnings.push(format!(
                    "{first}: key given as plain `value` ({n} in all), for local development only; use `sha256` in production"
                ));
            }
            // Hashed, not compared pairwise: a list of many thousands of keys loads at once.
            let ids: Vec<&[u8]> = keys.iter().map(|k| k.id.as_bytes()).collect();
            if let Some((j, i)) = crate::sort::first_duplicate(&ids) {
                return Err(err(
                    join(&item("api_key", "keys", i), "id"),
                    format!("duplicates the id of {}", item("api_key", "keys", j)),
                ));
            }
            let digests: Vec<&[u8]> = keys.iter().map(|k| &k.digest()[..]).collect();
            if let Some((j, i)) = crate::sort::first_duplicate(&digests) {
                return Err(err(
                    item("api_key", "keys", i),
                    format!("is the same key as {}", item("api_key", "keys", j)),
                ));
            }
            Some(ApiKeys::new(header, keys))
        }
    };

    let stage_throttle = match &raw.throttle {
        Some(t) => Some(throttle(t, "throttle")?),
        None => None,
    };

    let client_throttle = match &raw.client_throttle {
        None => None,
        Some(c) => {
            let by = match c.by {
                "ip" => ClientBy::Ip,
                "api_key" => ClientBy::ApiKey,
                other => match other.strip_prefix("header:") {
                    Some(h) if is_header_name(h) => ClientBy::Header(h.to_ascii_lowercase()),
                    _ => {
                        return Err(err(
                            "client_throttle.by",
                            format!(
                                "must be \"ip\", \"api_key\" or \"header:NAME\", got {other}",
                                other = Quoted(other)
                            ),
                        ))
                    }
                },
            };
            if let ClientBy::Header(h) = &by {
                if let Some(why) = withheld_by_envoy(h) {
                    return Err(err(
                        "client_throttle.by",
                        format!("cannot name {h}: {why}, so every client would count by its IP"),
                    ));
                }
            }
            if by == ClientBy::ApiKey && api_keys.is_none() {
                return Err(err(
                    "client_throttle.by",
                    "\"api_key\" needs an api_key section",
                ));
            }
            // Read as the other throttles are (the same paths and messages).
            let t = RawThrottle {
                rate: c.rate,
                burst: c.burst,
            };
            let spec = throttle(&t, "client_throttle")?;
            let slots = match &c.slots {
                None => DEFAULT_CLIENT_SLOTS,
                Some(n) => {
                    let v = positive_int(n, "client_throttle.slots", u64::from(MAX_CLIENT_SLOTS))?;
                    u32::try_from(v).unwrap_or(MAX_CLIENT_SLOTS)
                }
            };
            Some(ClientThrottle { by, spec, slots })
        }
    };

    let rate_limit_headers = match &raw.rate_limit_headers {
        None => HeaderMode::Draft10,
        Some(s) => HeaderMode::parse(s).ok_or_else(|| {
            err(
                "rate_limit_headers",
                format!(
                    "must be \"draft10\", \"x-ratelimit\" or \"none\", got {s}",
                    s = Quoted(s)
                ),
            )
        })?,
    };

    let stage_cors = match raw.cors {
        None => None,
        Some(v) => Some(cors(v, "cors")?),
    };

    let access_log = match raw.access_log {
        None => None,
        Some(a) => {
            Some(LogFormat::parse(a.format.unwrap_or("json")).map_err(|e| e.within("access_log"))?)
        }
    };

    let filter_state = match raw.filter_state {
        None => Exports::ALL,
        Some(v) => filter_state(v)?,
    };

    let raw_routes = raw.routes.unwrap_or_default();
    let table =
        RouteTable::compile(raw_routes.iter().map(|r| r.match_)).map_err(|e| e.within("routes"))?;
    let mut routes = Vec::with_capacity(raw_routes.len());
    for (i, r) in raw_routes.into_iter().enumerate() {
        let path = item("", "routes", i);
        let cache_path = join(&path, "cache");
        // `true` takes the stage's section: without one it would silently do nothing.
        let stage_only = |v: Option<&Value>, has_stage: bool, field: &str, p: &str| {
            if matches!(v, Some(Value::Bool(true))) && !has_stage {
                return Err(err(
                    p,
                    format!("true takes the stage's settings, but there is no top-level `{field}` section"),
                ));
            }
            Ok(())
        };
        stage_only(r.cache, stage_cache.is_some(), "cache", &cache_path)?;
        stage_only(r.cors, stage_cors.is_some(), "cors", &join(&path, "cors"))?;
        let cache = match switch(r.cache, &cache_path)? {
            Switch::Stage => stage_cache.as_ref().and_then(CacheSettings::policy),
            Switch::Off => None,
            Switch::Own(v) => {
                let own = cache_settings(v, &cache_path)?;
                stage_cache
                    .clone()
                    .unwrap_or_default()
                    .overlay(&own)
                    .policy()
            }
        };
        let api_key_required = r.api_key_required.unwrap_or(false);
        if api_key_required && api_keys.as_ref().is_none_or(|k| k.keys().is_empty()) {
            return Err(err(
                join(&path, "api_key_required"),
                "no keys are configured in api_key.keys, so every request would be refused",
            ));
        }
        let throttle = match &r.throttle {
            Some(t) => Some(throttle(t, &join(&path, "throttle"))?),
            None => None,
        };
        let cors_path = join(&path, "cors");
        let cors = match switch(r.cors, &cors_path)? {
            Switch::Stage => RouteCors::Stage,
            Switch::Off => RouteCors::Off,
            Switch::Own(v) => RouteCors::Own(Box::new(cors(v, &cors_path)?)),
        };
        routes.push(Route {
            name: Some(r.match_.to_string()),
            api_key_required,
            throttle,
            enforce: r.enforce.unwrap_or(enforce),
            cors,
            cache,
        });
    }
    // A key-required greedy route whose base path (`/admin` of `/admin/{proxy+}`, the
    // section's index to most frameworks) another route holds without a key, for any method
    // the greedy route answers (an `ANY` route every one; HEAD requests reach GET routes).
    for (i, route) in routes.iter().enumerate() {
        let Some((pattern, base)) = table.pattern(i).and_then(|p| Some((p, p.greedy_base()?)))
        else {
            continue;
        };
        if !route.api_key_required {
            continue;
        }
        let own;
        let methods: &[&str] = match pattern.method() {
            None => crate::routes::METHODS,
            Some("GET") => &["GET", "HEAD"],
            Some(m) => {
                own = [m];
                &own
            }
        };
        let open_holder = methods.iter().find_map(|m| {
            let j = table
                .find(m.as_bytes(), base.as_bytes())
                .filter(|&j| j != i)?;
            routes
                .get(j)
                .filter(|r| !r.api_key_required)
                .map(|_| (j, m))
        });
        if let Some((j, m)) = open_holder {
            let also = if base == "/" {
                String::new()
            } else {
                format!(" (and {base}/)")
            };
            warnings.push(format!(
                "routes[{i}] requires an API key, but its base path {base}{also} is routes[{j}]'s for {m}, which does not: add a route for {base} with routes[{i}]'s settings if the upstream serves it as part of the section"
            ));
        }
    }
    // A key-required route whose CORS policy does not let browsers send the key header: every
    // page's preflight asking for it is refused, so no page can call the route. Told once per
    // policy.
    if let Some(header) = api_keys.as_ref().map(|k| k.header.as_str()) {
        let mut told_stage = false;
        for (i, route) in routes.iter().enumerate() {
            let (policy, stage) = match &route.cors {
                RouteCors::Stage => (stage_cors.as_ref(), true),
                RouteCors::Own(p) => (Some(&**p), false),
                RouteCors::Off => (None, false),
            };
            let Some(policy) = policy.filter(|_| route.api_key_required) else {
                continue;
            };
            if policy.allows_header(header) || (stage && told_stage) {
                continue;
            }
            told_stage |= stage;
            let whose = if stage { "cors" } else { "its own cors" };
            warnings.push(format!(
                "routes[{i}] requires an API key in {header}, but {whose}.allow_headers does not list {header}: a browser's preflight asking to send it is refused (403), so no web page can call the route; add \"{header}\" to allow_headers (or set \"cors\": false on routes that browsers do not call)"
            ));
        }
    }
    /// Headers whose values are credentials.
    const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];
    let rate_limit_service = match raw.rate_limit_service {
        None => None,
        Some(v) => {
            let svc = ratelimit_service::read_config(v, "rate_limit_service")?;
            let mut configured = Vec::new();
            if plans.iter().any(|p| p.throttle.is_some()) {
                configured.push(Check::Plan);
            }
            if routes.iter().any(|r| r.throttle.is_some()) {
                configured.push(Check::Route);
            }
            if stage_throttle.is_some() {
                configured.push(Check::Stage);
            }
            if client_throttle.is_some() {
                configured.push(Check::Client);
            }
            if plans.iter().any(|p| p.quota.is_some()) {
                configured.push(Check::Quota);
            }
            ratelimit_service::check_delegated(&svc, &configured, "rate_limit_service")?;
            // A delegated client bucket sends its identity to the service (and its store):
            // never a credential's value.
            if let (true, Some(ClientBy::Header(h))) = (
                svc.delegates(Check::Client),
                client_throttle.as_ref().map(|c| &c.by),
            ) {
                let key_header = api_keys.as_ref().is_some_and(|k| k.header == *h);
                if key_header || CREDENTIAL_HEADERS.contains(&h.as_str()) {
                    return Err(err(
                        "client_throttle.by",
                        format!(
                            "header:{h} carries credentials, which a client bucket delegated to the rate limit service would send to it as its identity; use \"api_key\" (the key id) instead"
                        ),
                    ));
                }
            }
            Some(svc)
        }
    };
    let default_cache = stage_cache.as_ref().and_then(CacheSettings::policy);
    let caching = default_cache.is_some() || routes.iter().any(|r| r.cache.is_some());
    if caching
        && api_keys
            .as_ref()
            .is_some_and(|k| k.header == "authorization")
    {
        warnings.push(
            "api_key.header is authorization, and Envoy's cache filter neither answers nor stores a request with Authorization: requests with a key are never cached".to_string(),
        );
    }

    let checks_nothing = api_keys.is_none()
        && stage_throttle.is_none()
        && client_throttle.is_none()
        && stage_cors.is_none()
        && routes.is_empty()
        && !caching
        && rate_limit_service.is_none();
    if checks_nothing {
        warnings.push(
            "the configuration checks nothing (no keys, throttles, CORS, routes or cache): every request passes unchecked; is the filter's configuration (Istio: pluginConfig) missing?".to_string(),
        );
    }

    Ok(Config {
        stage: stage.to_string(),
        enforce,
        api_keys,
        plans,
        stage_throttle,
        client_throttle,
        rate_limit_headers,
        cors: stage_cors,
        access_log,
        filter_state,
        table,
        routes,
        default_route: Route {
            name: None,
            api_key_required: false,
            throttle: None,
            enforce,
            cors: RouteCors::Stage,
            cache: default_cache,
        },
        caching,
        rate_limit_service,
        warnings,
    })
}

#[cfg(test)]
mod tests;
