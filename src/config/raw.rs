//! The configuration as users write it (the contract's JSON), read strictly with
//! [`super::reader`]: unknown fields and wrong types are errors with their path. Semantic
//! checks live in `compile`.

use super::json::{Number, Value};

use super::reader::{item, join, Obj};
use crate::error::FieldError;

#[derive(Debug, Default)]
pub struct RawConfig<'a> {
    pub stage: Option<&'a str>,
    pub enforce: Option<bool>,
    pub api_key: Option<RawApiKey<'a>>,
    /// In name order.
    pub usage_plans: Option<Vec<(&'a str, RawPlan<'a>)>>,
    pub throttle: Option<RawThrottle>,
    pub client_throttle: Option<RawClientThrottle<'a>>,
    pub rate_limit_headers: Option<&'a str>,
    /// A CORS object (read in `compile`, so that errors keep their path).
    pub cors: Option<&'a Value<'a>>,
    pub cache: Option<&'a Value<'a>>,
    pub access_log: Option<RawAccessLog<'a>>,
    /// `true`, `false` or a list of variable names (read in `compile`).
    pub filter_state: Option<&'a Value<'a>>,
    pub routes: Option<Vec<RawRoute<'a>>>,
    /// The `rate_limit_service` object (read in `compile`, so that errors keep their path).
    pub rate_limit_service: Option<&'a Value<'a>>,
}

#[derive(Debug)]
pub struct RawApiKey<'a> {
    pub header: Option<&'a str>,
    pub keys: Vec<RawKey<'a>>,
}

#[derive(Debug)]
pub struct RawKey<'a> {
    pub id: &'a str,
    pub sha256: Option<&'a str>,
    pub value: Option<&'a str>,
    pub usage_plan: Option<&'a str>,
    pub invalidate_cache: Option<bool>,
}

#[derive(Debug)]
pub struct RawPlan<'a> {
    pub throttle: Option<RawThrottle>,
    pub quota: Option<RawQuota<'a>>,
}

#[derive(Debug)]
pub struct RawThrottle {
    pub rate: Number,
    pub burst: Number,
}

#[derive(Debug)]
pub struct RawQuota<'a> {
    pub limit: Number,
    pub period: &'a str,
}

#[derive(Debug)]
pub struct RawClientThrottle<'a> {
    pub by: &'a str,
    pub rate: Number,
    pub burst: Number,
    pub slots: Option<Number>,
}

#[derive(Debug)]
pub struct RawCors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Number>,
    pub allow_credentials: Option<bool>,
    pub allow_private_network: Option<bool>,
}

/// A `cache` object (stage or route), read in `compile` so that errors keep their path.
#[derive(Debug)]
pub struct RawCache<'a> {
    pub enabled: Option<bool>,
    pub ttl: Option<Number>,
    pub require_authorization: Option<bool>,
    pub unauthorized_strategy: Option<&'a str>,
    /// None when absent (an empty list overrides the stage's).
    pub key_parameters: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct RawAccessLog<'a> {
    pub format: Option<&'a str>,
}

#[derive(Debug)]
pub struct RawRoute<'a> {
    pub match_: &'a str,
    pub api_key_required: Option<bool>,
    pub throttle: Option<RawThrottle>,
    pub enforce: Option<bool>,
    /// `false` (CORS off), `true` (the stage policy) or a CORS object of the route's own.
    pub cors: Option<&'a Value<'a>>,
    pub cache: Option<&'a Value<'a>>,
}

const TOP: &[&str] = &[
    "stage",
    "enforce",
    "api_key",
    "usage_plans",
    "throttle",
    "client_throttle",
    "rate_limit_headers",
    "cors",
    "cache",
    "access_log",
    "filter_state",
    "routes",
    "rate_limit_service",
];

pub fn read_config<'a>(v: &'a Value<'a>) -> Result<RawConfig<'a>, FieldError> {
    let o = Obj::open(v, "", TOP)?;
    let api_key = match o.object("api_key", &["header", "keys"])? {
        None => None,
        Some(a) => {
            let mut keys = Vec::new();
            for (i, k) in a.array("keys")?.into_iter().flatten().enumerate() {
                // The item's path is written only for an error: a list of 20,000 keys spent
                // 7% of its load formatting paths.
                keys.push(read_key(k, "").map_err(|e| e.within(&a.item("keys", i)))?);
            }
            Some(RawApiKey {
                header: a.string("header")?,
                keys,
            })
        }
    };
    let usage_plans = match o.map("usage_plans")? {
        None => None,
        Some(m) => {
            let mut plans = Vec::with_capacity(m.len());
            for (name, p) in m.iter() {
                let path = join("usage_plans", name);
                let po = Obj::open(p, &path, &["throttle", "quota"])?;
                let quota = match po.object("quota", &["limit", "period"])? {
                    None => None,
                    Some(q) => Some(RawQuota {
                        limit: q.required_number("limit")?,
                        period: q.required_string("period")?,
                    }),
                };
                plans.push((
                    name,
                    RawPlan {
                        throttle: read_throttle(&po, "throttle")?,
                        quota,
                    },
                ));
            }
            Some(plans)
        }
    };
    let client_throttle = match o.object("client_throttle", &["by", "rate", "burst", "slots"])? {
        None => None,
        Some(c) => Some(RawClientThrottle {
            by: c.required_string("by")?,
            rate: c.required_number("rate")?,
            burst: c.required_number("burst")?,
            slots: c.number("slots")?,
        }),
    };
    let access_log = match o.object("access_log", &["format"])? {
        None => None,
        Some(a) => Some(RawAccessLog {
            format: a.string("format")?,
        }),
    };
    let routes = match o.array("routes")? {
        None => None,
        Some(items) => {
            let mut routes = Vec::with_capacity(items.len());
            for (i, r) in items.iter().enumerate() {
                let path = item("", "routes", i);
                let ro = Obj::open(
                    r,
                    &path,
                    &[
                        "match",
                        "api_key_required",
                        "throttle",
                        "enforce",
                        "cors",
                        "cache",
                    ],
                )?;
                routes.push(RawRoute {
                    match_: ro.required_string("match")?,
                    api_key_required: ro.bool("api_key_required")?,
                    throttle: read_throttle(&ro, "throttle")?,
                    enforce: ro.bool("enforce")?,
                    cors: ro.get("cors"),
                    cache: ro.get("cache"),
                });
            }
            Some(routes)
        }
    };
    Ok(RawConfig {
        stage: o.string("stage")?,
        enforce: o.bool("enforce")?,
        api_key,
        usage_plans,
        throttle: read_throttle(&o, "throttle")?,
        client_throttle,
        rate_limit_headers: o.string("rate_limit_headers")?,
        cors: o.get("cors"),
        cache: o.get("cache"),
        access_log,
        filter_state: o.get("filter_state"),
        routes,
        rate_limit_service: o.get("rate_limit_service"),
    })
}

fn read_key<'a>(v: &'a Value<'a>, path: &str) -> Result<RawKey<'a>, FieldError> {
    let k = Obj::open(
        v,
        path,
        &["id", "sha256", "value", "usage_plan", "invalidate_cache"],
    )?;
    Ok(RawKey {
        id: k.required_string("id")?,
        sha256: k.string("sha256")?,
        value: k.string("value")?,
        usage_plan: k.string("usage_plan")?,
        invalidate_cache: k.bool("invalidate_cache")?,
    })
}

fn read_throttle(parent: &Obj<'_, '_>, key: &str) -> Result<Option<RawThrottle>, FieldError> {
    match parent.object(key, &["rate", "burst"])? {
        None => Ok(None),
        Some(t) => Ok(Some(RawThrottle {
            rate: t.required_number("rate")?,
            burst: t.required_number("burst")?,
        })),
    }
}

/// Reads a CORS object at `path`.
pub fn read_cors(v: &Value<'_>, path: &str) -> Result<RawCors, FieldError> {
    let c = Obj::open(
        v,
        path,
        &[
            "allow_origins",
            "allow_methods",
            "allow_headers",
            "expose_headers",
            "max_age",
            "allow_credentials",
            "allow_private_network",
        ],
    )?;
    Ok(RawCors {
        allow_origins: c.strings("allow_origins")?,
        allow_methods: c.strings("allow_methods")?,
        allow_headers: c.strings("allow_headers")?,
        expose_headers: c.strings("expose_headers")?,
        max_age: c.number("max_age")?,
        allow_credentials: c.bool("allow_credentials")?,
        allow_private_network: c.bool("allow_private_network")?,
    })
}

/// Reads a `cache` object at `path`.
pub fn read_cache<'a>(v: &'a Value<'a>, path: &str) -> Result<RawCache<'a>, FieldError> {
    let c = Obj::open(
        v,
        path,
        &[
            "enabled",
            "ttl",
            "require_authorization",
            "unauthorized_strategy",
            "key_parameters",
            "methods",
        ],
    )?;
    let list = |key: &str| -> Result<Option<Vec<String>>, FieldError> {
        match c.get(key) {
            None => Ok(None),
            Some(_) => c.strings(key).map(Some),
        }
    };
    Ok(RawCache {
        enabled: c.bool("enabled")?,
        ttl: c.number("ttl")?,
        require_authorization: c.bool("require_authorization")?,
        unauthorized_strategy: c.string("unauthorized_strategy")?,
        key_parameters: list("key_parameters")?,
        methods: list("methods")?,
    })
}
