//! The configuration as users write it (the contract's JSON), deserialised strictly: unknown
//! fields and wrong types are errors. Semantic checks live in `compile`.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Number, Value};

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub stage: Option<String>,
    pub enforce: Option<bool>,
    pub api_key: Option<RawApiKey>,
    pub usage_plans: Option<BTreeMap<String, RawPlan>>,
    pub throttle: Option<RawThrottle>,
    pub client_throttle: Option<RawClientThrottle>,
    pub rate_limit_headers: Option<String>,
    /// A CORS object (checked in `compile`, so that errors keep their path).
    pub cors: Option<Value>,
    pub cache: Option<Value>,
    pub access_log: Option<RawAccessLog>,
    pub routes: Option<Vec<RawRoute>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub header: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub id: String,
    pub sha256: Option<String>,
    pub value: Option<String>,
    pub usage_plan: Option<String>,
    pub invalidate_cache: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub throttle: Option<RawThrottle>,
    pub quota: Option<RawQuota>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawThrottle {
    pub rate: Number,
    pub burst: Number,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub limit: Number,
    pub period: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawClientThrottle {
    pub by: String,
    pub rate: Number,
    pub burst: Number,
    pub slots: Option<Number>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default)]
    pub allow_methods: Vec<String>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub max_age: Option<Number>,
    pub allow_credentials: Option<bool>,
    pub allow_private_network: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub match_: String,
    pub api_key_required: Option<bool>,
    pub throttle: Option<RawThrottle>,
    pub enforce: Option<bool>,
    /// `false` (CORS off), `true` (the stage policy) or a CORS object of the route's own.
    pub cors: Option<Value>,
    pub cache: Option<Value>,
}
