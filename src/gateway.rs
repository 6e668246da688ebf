//! The request pipeline, in the contract's order: CORS preflight, API key, throttles (usage
//! plan, route, stage, client), quota, then the cache plan (key, invalidation). Pure: the
//! request, the counter store and the clock come in through traits and arguments; a
//! [`Decision`] comes out for the filter to apply.

use crate::cache::{self, CachePlan, Invalidation};
use crate::config::{ClientBy, Config, Route};
use crate::cors::{self, ActualCors, CorsPolicy, Preflight, PreflightDecision};
use crate::ratelimit_service::{self as rls, KeyFacts, RequestFacts};
use crate::throttle::bucket::{self, BucketSpec, BucketState};
use crate::throttle::headers::{self, PolicyReport};
use crate::throttle::quota::{self, QuotaState};
use crate::throttle::store::{self, SharedStore, StoreError};
use crate::token::split_once_str;

/// What the pipeline needs to read from the request. Values are borrowed from the source (the
/// filter's reads all request headers with one host call); the source address is fetched only
/// when a check asks for it.
pub trait RequestSource {
    /// A request header's first value (lowercase name, pseudo-headers such as `:method`
    /// included).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every value of a request header, joined with `, ` (what the upstream sees of a header
    /// sent more than once).
    fn header_joined(&self, name: &str) -> Option<Vec<u8>> {
        self.header(name).map(<[u8]>::to_vec)
    }
    /// A request header's value when it is sent once; `Err(Repeated)` when it is sent more
    /// than once (a credential must name one identity).
    fn header_once(&self, name: &str) -> Option<Result<&[u8], Repeated>> {
        self.header(name).map(Ok)
    }
    /// The downstream address as Envoy reports it (`source.address`, `ip:port`).
    fn source_address(&self) -> Option<&[u8]>;
    /// The request has a body (its headers did not end the stream).
    fn has_body(&self) -> bool {
        false
    }
}

/// A header sent more than once where one value is expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repeated;

/// Why the filter refused (or, in report-only mode, would have refused) a request. The names
/// are API Gateway's `$context.error.responseType` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Throttled,
    QuotaExceeded,
    InvalidApiKey,
    CorsPreflightDenied,
    /// A client that may not invalidate asked for a fresh response under `FAIL_WITH_403`.
    CacheInvalidationDenied,
    /// The path cannot be matched unambiguously (see [`crate::routes::is_ambiguous_path`]).
    BadRequest,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Throttled => "THROTTLED",
            ErrorType::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorType::InvalidApiKey => "INVALID_API_KEY",
            ErrorType::CorsPreflightDenied => "CORS_PREFLIGHT_DENIED",
            ErrorType::CacheInvalidationDenied => "CACHE_INVALIDATION_DENIED",
            ErrorType::BadRequest => "BAD_REQUEST_PARAMETERS",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorType::Throttled | ErrorType::QuotaExceeded => 429,
            ErrorType::InvalidApiKey
            | ErrorType::CorsPreflightDenied
            | ErrorType::CacheInvalidationDenied => 403,
            ErrorType::BadRequest => 400,
        }
    }

    /// The `message` of the JSON body, as API Gateway words it.
    pub fn message(self) -> &'static str {
        match self {
            ErrorType::Throttled => "Too Many Requests",
            ErrorType::QuotaExceeded => "Limit Exceeded",
            ErrorType::InvalidApiKey
            | ErrorType::CorsPreflightDenied
            | ErrorType::CacheInvalidationDenied => "Forbidden",
            ErrorType::BadRequest => "Bad Request",
        }
    }

    /// The JSON body of the filter's own response.
    pub fn body(self) -> &'static str {
        match self {
            ErrorType::Throttled => r#"{"message":"Too Many Requests"}"#,
            ErrorType::QuotaExceeded => r#"{"message":"Limit Exceeded"}"#,
            ErrorType::InvalidApiKey
            | ErrorType::CorsPreflightDenied
            | ErrorType::CacheInvalidationDenied => r#"{"message":"Forbidden"}"#,
            ErrorType::BadRequest => r#"{"message":"Bad Request"}"#,
        }
    }
}

/// gRPC's RESOURCE_EXHAUSTED.
pub const GRPC_RESOURCE_EXHAUSTED: i32 = 8;

/// The filter's answer to a gRPC or gRPC-Web request (`content-type: application/grpc...`),
/// trailers-only in the headers: `:status` 200, `grpc-status` and `grpc-message` (the JSON
/// body), no body; the other headers stay. A 429 (throttle, quota, the rate limit service) is
/// RESOURCE_EXHAUSTED (8), as Envoy's own rate limit filters can be set to answer: gRPC's HTTP
/// mapping would make it UNAVAILABLE, which clients and retry policies retry at once. A 403
/// is PERMISSION_DENIED (7), a 400 INTERNAL (13), as that mapping has them. Envoy builds its
/// gRPC form of a reply (content type `application/grpc`) only for requests that were gRPC
/// when they arrived, so a gRPC-Web client got a bare 429 (UNAVAILABLE to it; behind Envoy's
/// `grpc_web` filter, which hands tollgate `application/grpc`, `grpc-status` 14). Returns the
/// headers and the status, for the host's gRPC form too.
pub fn grpc_answer(
    status: u16,
    headers: &[(&'static str, String)],
    body: Option<&str>,
) -> (Vec<(&'static str, String)>, i32) {
    let code = match status {
        429 => GRPC_RESOURCE_EXHAUSTED,
        403 => 7,
        400 => 13,
        _ => 2,
    };
    let mut out: Vec<_> = headers
        .iter()
        .filter(|(n, _)| *n != "content-type")
        .cloned()
        .collect();
    out.push(("grpc-status", code.to_string()));
    out.push(("grpc-message", body.unwrap_or_default().to_string()));
    (out, code)
}

/// What to do with the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Let it go on to the cache filter and the upstream.
    Forward,
    /// Answer it now with this status, headers and body (`None`: no body).
    Respond {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Option<&'static str>,
    },
}

/// The pipeline's verdict on one request.
#[derive(Debug)]
pub struct Decision {
    pub outcome: Outcome,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// Index of the API key presented, when valid.
    pub key: Option<usize>,
    /// The check that failed, whether or not it was enforced.
    pub error: Option<ErrorType>,
    /// Rate-limit headers to add to the upstream's response.
    pub response_headers: Vec<(&'static str, String)>,
    /// What the route's CORS policy allowed this origin (actual request): the upstream's
    /// response gets `CorsPolicy::actual_headers` of it.
    pub cors: Option<ActualCors>,
    /// A preflight about a route with CORS off, which its upstream answers: no CORS policy
    /// touches the response.
    pub cors_off: bool,
    /// The counter store failed; the request was refused to keep the limit (logged by the host).
    pub store_failure: Option<StoreFailure>,
    /// How a forwarded request goes through Envoy's cache filter.
    pub cache: CachePlan,
    /// The request passed every local check and waits for the rate limit service's answer
    /// ([`conclude`] applies it). `outcome` is `Forward` meanwhile.
    pub service_call: Option<ServiceCall>,
    /// Headers the rate limit service asked to add to the response (safe names only).
    pub service_headers: Vec<(String, String)>,
    /// What the local checks took for the request, given back should it be refused later.
    pub spent: Spent,
    /// What the local checks told of their policies (`response_headers` renders them).
    reports: Vec<PolicyReport>,
    /// The routes of this request's earlier legs (internal redirects), the last four: a leg
    /// back on one of them is not checked against its throttle again.
    earlier_legs: [Option<usize>; 4],
    /// A later leg of an internal redirect: what its earlier legs took stays spent, whatever
    /// becomes of it, and its reports are not refunded ([`refund_own`]).
    later_leg: bool,
}

/// What the local checks took for one request: a token of each bucket that passed and a unit
/// of the quota. A request refused after them (by a later check, by cache invalidation or by
/// the rate limit service) gets them back ([`give_back`]), so that only admitted requests
/// spend tokens and quota: a client over its own limit cannot drain a bucket it shares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Spent {
    /// The API key (index) whose usage-plan bucket gave a token.
    plan: Option<usize>,
    /// The route (index) whose bucket gave a token.
    route: Option<usize>,
    stage: bool,
    /// The client slot whose bucket gave a token.
    client: Option<u32>,
    /// The API key (index) whose quota counted the request, and the window it counted in.
    quota: Option<(usize, i64)>,
}

/// [`refund`] of what a refused request took itself: every report of a first leg; for a later
/// leg of an internal redirect only its route's, when it took that token (the earlier legs
/// reached the upstream and stay charged).
fn refund_own(spent: &Spent, later_leg: bool, reports: &mut [PolicyReport]) {
    for r in reports {
        if !later_leg || (r.name == "route" && spent.route.is_some()) {
            refund(std::slice::from_mut(r));
        }
    }
}

/// The reports of policies whose checks passed (each took a token or a quota unit), as they
/// stand once a refused request gives that back: one more remaining, at most the limit, and a
/// bucket full again has no next token to wait for (a bucket's next token is as far as before;
/// a quota's reset is its window's end). A refused request's answer tells the client what it
/// has, not what it would have had if the refusal had cost it.
fn refund(passed: &mut [PolicyReport]) {
    for r in passed {
        r.remaining = r.remaining.saturating_add(1).min(r.limit);
        if r.name != "quota" && r.remaining >= r.limit {
            r.reset_s = 0;
        }
    }
}

/// Gives back what the local checks took for a refused request (see [`Spent`]). Best effort:
/// a store that fails here leaves the limit stricter, never looser.
fn give_back(cfg: &Config, keys: &StoreKeys, store: &dyn SharedStore, spent: &mut Spent) {
    let spent = std::mem::take(spent);
    let bucket = |key: &str, spec: &BucketSpec| {
        let _ = store::update(store, key, |cur| {
            let next = cur.and_then(BucketState::decode).map(|s| s.refunded(spec));
            ((), next.map(|s| s.encode()))
        });
    };
    let api_keys = cfg.api_keys.as_ref().map_or(&[][..], |k| k.keys());
    let plan_of = |i: usize| api_keys.get(i)?.plan.and_then(|p| cfg.plans.get(p));
    if let Some(i) = spent.plan {
        if let (Some(spec), Some(key)) = (plan_of(i).and_then(|p| p.throttle), keys.plan.get(i)) {
            bucket(key, &spec);
        }
    }
    if let Some(i) = spent.route {
        if let (Some(spec), Some(key)) = (
            cfg.routes.get(i).and_then(|r| r.throttle),
            keys.routes.get(i),
        ) {
            bucket(key, &spec);
        }
    }
    if let (true, Some(spec)) = (spent.stage, &cfg.stage_throttle) {
        bucket(&keys.stage, spec);
    }
    if let (Some(slot), Some(ct)) = (spent.client, &cfg.client_throttle) {
        bucket(&keys.client(slot), &ct.spec);
    }
    if let Some((i, window)) = spent.quota {
        if let Some(key) = keys.quota.get(i) {
            let _ = store::update(store, key, |cur| {
                let next = cur
                    .and_then(QuotaState::decode)
                    .filter(|s| s.window_start == window && s.used > 0)
                    .map(|s| QuotaState {
                        used: s.used - 1,
                        ..s
                    });
                ((), next.map(|s| s.encode()))
            });
        }
    }
}

impl Decision {
    /// A decision with no key, no rate-limit headers, no store failure, no cache plan and no
    /// service call yet: what each step of the pipeline starts from.
    fn new(
        outcome: Outcome,
        route: Option<usize>,
        error: Option<ErrorType>,
        cors: Option<ActualCors>,
    ) -> Decision {
        Decision {
            outcome,
            route,
            key: None,
            error,
            response_headers: Vec::new(),
            cors,
            cors_off: false,
            store_failure: None,
            cache: CachePlan::Off,
            service_call: None,
            service_headers: Vec::new(),
            earlier_legs: [None; 4],
            later_leg: false,
            spent: Spent::default(),
            reports: Vec::new(),
        }
    }
}

/// A `ShouldRateLimit` call to make for a request (docs/RATE_LIMIT_SERVICE.md).
#[derive(Debug, PartialEq, Eq)]
pub struct ServiceCall {
    /// The encoded `RateLimitRequest`.
    pub message: Vec<u8>,
    /// The check of each descriptor sent, in order.
    pub checks: Vec<rls::Check>,
    /// The policies the local checks reported, merged with the service's in [`conclude`].
    pub reports: Vec<PolicyReport>,
}

/// How a call to the rate limit service ended, for the metrics and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceResult {
    Ok,
    OverLimit,
    Failure(rls::CallFailure),
}

impl ServiceResult {
    /// The `result` label of `rate_limit_service_calls`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceResult::Ok => "ok",
            ServiceResult::OverLimit => "over_limit",
            ServiceResult::Failure(_) => "failure",
        }
    }
}

/// Shared-data key names, built once per configuration. All keys share a prefix naming the
/// plugin, so other plugins on the same VM id cannot collide with them.
#[derive(Debug)]
pub struct StoreKeys {
    stage: String,
    routes: Vec<String>,
    /// Per API key (same index as the key table): its usage plan bucket and quota counter.
    plan: Vec<String>,
    quota: Vec<String>,
    client_prefix: String,
    /// The secret that places clients in slots ([`client_slot`]): one per process, the same in
    /// every worker ([`settle_client_seed`]). Zero until settled (tests, benches).
    client_seed: [u8; 16],
}

impl StoreKeys {
    /// The keys under `prefix` (`tollgate:<plugin name>:`). Every counter is the stage's own
    /// (`<prefix>stage:<stage>`, the stage's bucket, and under it `:route:<match>`,
    /// `:client:<slot>`, `:plan:<plan>:<key id>` and `:quota:<plan>:<key id>`), so two filters
    /// of one plugin name and VM with different stages never share a counter, as the rate limit
    /// service's descriptors (which start with the stage) never do; a key moved to another plan
    /// starts afresh, as its descriptors change too. (Stage, plan and key names hold no `:`, and
    /// each kind has its own word after the stage: no two counters share a key.)
    pub fn new(prefix: &str, cfg: &Config) -> StoreKeys {
        let keys = cfg.api_keys.as_ref().map_or(&[][..], |k| k.keys());
        let stage = format!("{prefix}stage:{}", cfg.stage);
        let per_plan = |what: &str| -> Vec<String> {
            keys.iter()
                .map(|k| {
                    let plan = k.plan.and_then(|p| cfg.plans.get(p));
                    let plan = plan.map_or("", |p| p.name.as_str());
                    format!("{stage}:{what}:{plan}:{}", k.id)
                })
                .collect()
        };
        StoreKeys {
            routes: cfg
                .routes
                .iter()
                .map(|r| format!("{stage}:route:{}", r.name.as_deref().unwrap_or("")))
                .collect(),
            plan: per_plan("plan"),
            quota: per_plan("quota"),
            client_prefix: format!("{stage}:client:"),
            client_seed: [0; 16],
            stage,
        }
    }

    fn client(&self, slot: u32) -> String {
        format!("{}{slot}", self.client_prefix)
    }

    /// `<stage key>:client-slots`: how many client slots exist (slots `0..n`, 4 bytes little
    /// endian), written once they all do.
    fn client_slots_made(&self) -> String {
        format!("{}:client-slots", self.stage)
    }

    /// `<stage key>:client-seed`: the stage's [`StoreKeys::client_seed`], 16 bytes.
    fn client_seed_key(&self) -> String {
        format!("{}:client-seed", self.stage)
    }

    /// `tollgate:<plugin name>:stage:<stage>`, under which the stage's keys are.
    pub fn stage_prefix(&self) -> &str {
        &self.stage
    }
}

/// What a load's mark ([`warnings_mark`]) stands for besides the configuration: tollgate's
/// version and the layout of its keys and values in shared data. A module swapped into a running
/// Envoy (Istio keeps shared data across module updates of one VM id) with another layout must
/// make its own counters: bump the `store` number with any change to a key or an encoding.
pub const MARK_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+store.1");

/// The mark of a configuration's load (its summary line and start-up warnings, and that its
/// counters exist): the first 16 bytes of the SHA-256 of `version` ([`MARK_VERSION`]), the
/// configuration's digest and the warnings' texts (none is a mark too).
pub fn warnings_mark(version: &str, config_digest: &[u8], warnings: &[String]) -> [u8; 16] {
    let mut text = version.as_bytes().to_vec();
    text.push(0);
    text.extend_from_slice(config_digest);
    for w in warnings {
        text.push(0);
        text.extend_from_slice(w.as_bytes());
    }
    let sha = crate::keys::sha256(&text);
    sha.first_chunk::<16>().copied().unwrap_or_default()
}

/// Whether a configuration's load is this root context's to log: Envoy configures one per
/// worker, one on the main thread and a canary, each of which would log it. The first to put
/// `mark` ([`warnings_mark`]) in `key` logs; the others, and a reload of the same
/// configuration, find it there. One key per plugin and stage, so shared data stays fixed. A store
/// that fails lets every context log.
pub fn first_to_warn(store: &dyn SharedStore, key: &str, mark: [u8; 16]) -> bool {
    store::update(store, key, |current| {
        if current == Some(&mark[..]) {
            (false, None)
        } else {
            (true, Some(mark))
        }
    })
    .unwrap_or(true)
}

/// Creates every counter this configuration can touch, before any request: Envoy cannot
/// compare-and-swap a key that does not exist, so creating keys on first use could lose an
/// update between two workers. Existing counters (from before a reload) are kept. The key space
/// is fixed: it does not grow with the number of clients. Returns how many keys were created.
pub fn initialize_store(
    cfg: &Config,
    keys: &StoreKeys,
    store: &dyn SharedStore,
    now_ns: u64,
) -> Result<usize, StoreError> {
    let mut created = 0;
    let mut bucket = |key: &str, spec: &BucketSpec| -> Result<(), StoreError> {
        if store::ensure(store, key, &BucketState::full(spec, now_ns).encode())? {
            created += 1;
        }
        Ok(())
    };
    if let Some(spec) = &cfg.stage_throttle {
        bucket(&keys.stage, spec)?;
    }
    for (route, key) in cfg.routes.iter().zip(&keys.routes) {
        if let Some(spec) = &route.throttle {
            bucket(key, spec)?;
        }
    }
    let api_keys = cfg.api_keys.as_ref().map_or(&[][..], |k| k.keys());
    for (i, k) in api_keys.iter().enumerate() {
        let Some(plan) = k.plan.and_then(|p| cfg.plans.get(p)) else {
            continue;
        };
        if let (Some(spec), Some(key)) = (&plan.throttle, keys.plan.get(i)) {
            bucket(key, spec)?;
        }
    }
    if let Some(ct) = &cfg.client_throttle {
        // Slots, once made, exist until Envoy restarts (shared data has no delete): a reload
        // makes only the ones it adds, instead of reading every slot (up to 1,048,576 host
        // calls in each worker's root context) for each configuration pushed.
        let made_key = keys.client_slots_made();
        let made = store
            .get(&made_key)?
            .and_then(|(v, _)| v.first_chunk::<4>().map(|b| u32::from_le_bytes(*b)))
            .unwrap_or(0);
        if made < ct.slots {
            for slot in made..ct.slots {
                bucket(&keys.client(slot), &ct.spec)?;
            }
            store.set(&made_key, &ct.slots.to_le_bytes(), None)?;
        }
    }
    for (i, k) in api_keys.iter().enumerate() {
        let has_quota = k
            .plan
            .and_then(|p| cfg.plans.get(p))
            .is_some_and(|p| p.quota.is_some());
        if let (true, Some(key)) = (has_quota, keys.quota.get(i)) {
            if store::ensure(store, key, &[])? {
                created += 1;
            }
        }
    }
    Ok(created)
}

/// [`initialize_store`] unless a root context of the process loaded this configuration (and
/// version) before: Envoy configures a root context per worker, one on the main thread and a
/// canary, each on its own thread, and only the first needs to look at every counter (two per
/// API key with a plan: 60,000 host calls for 30,000 keys, in each worker's thread, for each
/// configuration pushed). The first puts `mark` ([`warnings_mark`]) in `loaded_key` once its
/// counters exist ([`first_to_warn`], after this); the others find it there. Counters are never
/// deleted (shared data outlives reloads and the VM, and goes only with the process, marks
/// too), so the mark stands for counters that exist. Returns how many keys were created.
pub fn initialize_store_once(
    cfg: &Config,
    keys: &StoreKeys,
    store: &dyn SharedStore,
    now_ns: u64,
    loaded: (&str, [u8; 16]),
) -> Result<usize, StoreError> {
    let (loaded_key, mark) = loaded;
    // A store that cannot read the mark makes the counters (and says so if it fails there).
    if matches!(store.get(loaded_key), Ok(Some((v, _))) if v == mark) {
        return Ok(0);
    }
    initialize_store(cfg, keys, store, now_ns)
}

/// Settles the secret that places this stage's clients in slots: `fresh` (random bytes from
/// the host) unless another root context of the process put one in shared data first, which is
/// then taken, so every worker places a client in the same slot. Envoy configures the main
/// thread's root context before it hands the plugin to the workers, so the first one settles it
/// for the process; it lasts until Envoy restarts (reloads keep it, and with it the slots).
pub fn settle_client_seed(
    store: &dyn SharedStore,
    keys: &mut StoreKeys,
    fresh: [u8; 16],
) -> Result<(), StoreError> {
    let key = keys.client_seed_key();
    // (Nothing else writes this key: what is there is a seed.)
    keys.client_seed = match store.get(&key)?.and_then(|(v, _)| v.first_chunk().copied()) {
        Some(seed) => seed,
        None => {
            store.set(&key, &fresh, None)?;
            fresh
        }
    };
    Ok(())
}

/// The slot of a client identity. Two clients in the same slot share a bucket: a collision
/// makes a limit stricter for both, never looser.
///
/// The hash is SipHash-1-3 (std's `DefaultHasher`, the keyed hash Rust's maps rely on against
/// chosen collisions) over a secret `seed` and the identity: who does not know the seed cannot
/// pick an identity (a header value, an address in their IPv6 range) that lands in another
/// client's slot to drain its bucket. (SHA-256, which the module has for API keys, cost about
/// 5,000 instructions per request more. std may change the algorithm in a later Rust, which
/// rust-toolchain.toml pins: a module built with another would place clients anew, once.)
pub fn client_slot(identity: &[u8], slots: u32, seed: &[u8; 16]) -> u32 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(seed);
    hasher.write(identity);
    let h = hasher.finish();
    let slots = u64::from(slots.max(1));
    u32::try_from(h % slots).unwrap_or(0)
}

/// The IP of an address `ip:port`, `[v6]:port` or a bare IP (Envoy's `source.address`), in
/// full: what the access log shows as `identity.sourceIp`.
pub fn address_ip(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if address.matches(':').count() == 1 {
        address.split(':').next().unwrap_or("")
    } else {
        address
    }
}

/// The client identity of an address `ip:port` or `[v6]:port`: the IP without the port; an
/// IPv6 address is reduced to its /64 network (one host usually owns a whole /64), unless it
/// carries an IPv4 client's address ([`embedded_ipv4`]), which is then the identity.
pub fn ip_identity(address: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(address);
    let host = address_ip(&s);
    if let Some(all) = ipv6_groups(host) {
        if let Some([a, b, c, d]) = embedded_ipv4(all) {
            return format!("{a}.{b}.{c}.{d}").into_bytes();
        }
        let mut out = String::with_capacity(24);
        for (i, group) in all.iter().take(4).enumerate() {
            if i > 0 {
                out.push(':');
            }
            out.push_str(&format!("{group:x}"));
        }
        out.push_str("::/64");
        return out.into_bytes();
    }
    host.as_bytes().to_vec()
}

/// The IPv4 address an IPv6 address stands for, in the forms whose /64 is shared by every IPv4
/// client, so a /64 would put them all in one bucket: IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d` (not `::` or `::1`), and the
/// NAT64 well-known prefix `64:ff9b::a.b.c.d` (RFC 6052).
fn embedded_ipv4(all: [u16; 8]) -> Option<[u8; 4]> {
    let v4 = match all {
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0xffff, 0, hi, lo]
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => (hi, lo),
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => (hi, lo),
        _ => return None,
    };
    let ([a, b], [c, d]) = (v4.0.to_be_bytes(), v4.1.to_be_bytes());
    Some([a, b, c, d])
}

/// The eight groups of an IPv6 address in text form, or `None` when the text is not one.
/// A small parser of our own: `std::net`'s costs several KB of wasm.
pub(crate) fn ipv6_groups(text: &str) -> Option<[u16; 8]> {
    let text = text.split('%').next().unwrap_or(text); // zone id
    if !text.contains(':') || text.len() > 45 {
        return None;
    }
    fn groups(part: &str, out: &mut Vec<u16>, may_end_v4: bool) -> Option<()> {
        if part.is_empty() {
            return Some(());
        }
        let items: Vec<&str> = part.split(':').collect();
        let last = items.len().saturating_sub(1);
        for (i, g) in items.iter().enumerate() {
            if i == last && may_end_v4 && g.contains('.') {
                let mut octets = [0u8; 4];
                let mut n = 0;
                for o in g.split('.') {
                    *octets.get_mut(n)? = o.parse().ok().filter(|_| !o.is_empty())?;
                    n += 1;
                }
                if n != 4 {
                    return None;
                }
                let [a, b, c, d] = octets;
                out.push(u16::from_be_bytes([a, b]));
                out.push(u16::from_be_bytes([c, d]));
            } else {
                if g.is_empty() || g.len() > 4 {
                    return None;
                }
                out.push(u16::from_str_radix(g, 16).ok()?);
            }
        }
        Some(())
    }
    let mut head = Vec::with_capacity(8);
    let mut tail = Vec::with_capacity(8);
    match split_once_str(text, "::") {
        Some((h, t)) => {
            if split_once_str(t, "::").is_some() {
                return None;
            }
            groups(h, &mut head, false)?;
            groups(t, &mut tail, true)?;
            if head.len() + tail.len() > 7 {
                return None;
            }
        }
        None => {
            groups(text, &mut head, true)?;
            if head.len() != 8 {
                return None;
            }
        }
    }
    let mut all = [0u16; 8];
    for (slot, g) in all.iter_mut().zip(head.iter()) {
        *slot = *g;
    }
    for (slot, g) in all.iter_mut().rev().zip(tail.iter().rev()) {
        *slot = *g;
    }
    Some(all)
}

enum Check {
    Pass(PolicyReport),
    Fail {
        report: PolicyReport,
        error: ErrorType,
        retry_after_s: u64,
    },
    StoreFailed(StoreFailure),
}

/// A check's outcome from its report: a pass, or the error with its Retry-After.
fn verdict(report: PolicyReport, allowed: bool, error: ErrorType, retry_after_s: u64) -> Check {
    if allowed {
        Check::Pass(report)
    } else {
        Check::Fail {
            report,
            error,
            retry_after_s,
        }
    }
}

fn check_bucket(
    name: &'static str,
    spec: &BucketSpec,
    key: &str,
    store: &dyn SharedStore,
    now_ns: u64,
) -> Check {
    if now_ns == 0 {
        return Check::StoreFailed(StoreFailure {
            check: name,
            why: NO_CLOCK,
        });
    }
    let result = store::update(store, key, |cur| {
        let prior = cur
            .and_then(BucketState::decode)
            .unwrap_or_else(|| BucketState::full(spec, now_ns));
        let (outcome, next) = bucket::take(spec, prior, now_ns);
        // A rejected request changes nothing worth a write.
        let write = if outcome.allowed {
            Some(next.encode())
        } else {
            None
        };
        (outcome, write)
    });
    match result {
        Ok(o) => {
            let report = PolicyReport {
                name,
                limit: spec.burst,
                window_s: spec.window_secs(),
                remaining: o.remaining,
                reset_s: o.reset_s,
            };
            verdict(
                report,
                o.allowed,
                ErrorType::Throttled,
                headers::retry_after_secs(o.wait_ns),
            )
        }
        Err(e) => Check::StoreFailed(update_failure(name, e)),
    }
}

fn check_quota(
    limit: u64,
    period: quota::Period,
    key: &str,
    store: &dyn SharedStore,
    now_ns: u64,
) -> (Check, Option<i64>) {
    if now_ns == 0 {
        let failure = StoreFailure {
            check: "quota",
            why: NO_CLOCK,
        };
        return (Check::StoreFailed(failure), None);
    }
    let now_s = unix_secs(now_ns);
    let result = store::update(store, key, |cur| {
        let prior = cur.and_then(QuotaState::decode);
        let (outcome, next) = quota::consume(limit, period, prior, now_s);
        let counted_in = next.filter(|_| outcome.allowed).map(|s| s.window_start);
        ((outcome, counted_in), next.map(|s| s.encode()))
    });
    let check = match result {
        Ok((o, _)) => {
            let report = PolicyReport {
                name: "quota",
                limit,
                window_s: quota::window_length_s(period, now_s),
                remaining: o.remaining,
                reset_s: o.reset_after_s,
            };
            verdict(
                report,
                o.allowed,
                ErrorType::QuotaExceeded,
                o.reset_after_s.max(1),
            )
        }
        Err(e) => Check::StoreFailed(update_failure("quota", e)),
    };
    (check, result.ok().and_then(|(_, w)| w))
}

/// Whole seconds of a host clock reading, as quota windows count them.
fn unix_secs(now_ns: u64) -> i64 {
    i64::try_from(now_ns / 1_000_000_000).unwrap_or(i64::MAX)
}

/// How long a request would wait for the quota at `key` (0 when a unit is left), read without
/// consuming one: a refused request's Retry-After covers the quota behind the check that
/// refused it.
fn quota_wait_s(
    limit: u64,
    period: quota::Period,
    key: &str,
    store: &dyn SharedStore,
    now_ns: u64,
) -> u64 {
    let Ok(Some((bytes, _))) = store.get(key) else {
        return 0;
    };
    let (o, _) = quota::consume(limit, period, QuotaState::decode(&bytes), unix_secs(now_ns));
    if o.allowed {
        0
    } else {
        o.reset_after_s.max(1)
    }
}

/// Why a limit refuses every request while the host's clock cannot be read (`now_ns` 0):
/// without it no bucket can refill and no quota window can be told.
const NO_CLOCK: &str = "the host clock could not be read";

/// Why a check could not be made, and which: the request was refused to keep the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreFailure {
    /// The check: `plan`, `route`, `stage`, `client` or `quota`.
    pub check: &'static str,
    pub why: &'static str,
}

impl std::fmt::Display for StoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (the {} counter); request refused to keep the limit",
            self.why, self.check
        )
    }
}

/// A [`StoreFailure`] of `check` for why its update gave up.
fn update_failure(check: &'static str, e: store::UpdateError) -> StoreFailure {
    StoreFailure {
        check,
        why: e.as_str(),
    }
}

/// The filter's own answer to a refused request; `cors`: the policy of the request's route and
/// what it allowed this origin, so that a browser can read the answer.
fn local_response(
    error: ErrorType,
    mut headers: Vec<(&'static str, String)>,
    cors: Option<(&CorsPolicy, Option<&ActualCors>)>,
) -> Outcome {
    headers.push(("content-type", "application/json".to_string()));
    // Under a CORS policy the answer depends on `Origin` whether or not it was allowed (as
    // on forwarded responses): a shared cache that stores errors must not hand a refused
    // origin's answer, without CORS headers, to an allowed one.
    if let Some((policy, allowed)) = cors {
        if let Some(c) = allowed {
            headers.extend(policy.actual_headers(c).map(|(n, v)| (n, v.to_string())));
        }
        if allowed.is_none_or(|c| c.vary_origin) {
            headers.push(("vary", "Origin".to_string()));
        }
    }
    Outcome::Respond {
        status: error.status(),
        headers,
        body: Some(error.body()),
    }
}

/// What the first leg of an internal redirect hands its second leg, under the stream's start
/// time (`request.time`), which Envoy copies from the first leg's stream to the second's and
/// no client can set.
#[derive(Debug)]
pub struct Handover {
    /// `request.time` of the stream, ns since the epoch.
    pub stream_start_ns: u64,
    /// When the first leg's request headers reached the filter (host clock, ns): the client's
    /// request started then.
    pub started_ns: u64,
    /// When the first leg handed over (host clock, ns): the wait starts then.
    pub left_ns: u64,
    /// The first leg's decision: what it charged (tokens, quota, rate limit service headers)
    /// and told (its policies' reports, a report-only error), for the second leg to go on from.
    pub first_leg: Decision,
    /// The first leg's metric series (its route and method), for a second leg tollgate never
    /// sees (a filter before it answers): counted as the client's request. (A 303 turns a POST
    /// into a GET, which the POST route has no series for.)
    pub series: Option<usize>,
}

/// Handovers waiting for their second legs, each claimed once by the leg with its stream
/// start. Envoy runs the second leg at once on the same worker, so a handover normally waits
/// for no other request. One waits longer while a filter before tollgate holds the second leg
/// (an external authorization call), and one whose leg tollgate never sees (the filter off on
/// that route, an earlier filter answering it) is given up after [`HANDOVER_WAIT_NS`].
#[derive(Debug, Default)]
pub struct Handovers {
    waiting: Vec<Handover>,
}

/// At most this many handovers wait (per configuration and worker); one more is given up (its
/// second leg is then charged as a request of its own).
pub const HANDOVERS_MAX: usize = 64;
/// How long a handover waits for its second leg.
pub const HANDOVER_WAIT_NS: u64 = 10_000_000_000;

impl Handovers {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Keeps `h`; when [`HANDOVERS_MAX`] wait already, the one that waited longest gives way:
    /// it is the likeliest never to be claimed (its next leg answered before tollgate saw it
    /// on HTTP/3, or tollgate off on its route), and a fresh one would otherwise be lost and
    /// its next leg charged again. (The ones that waited too long are given up by
    /// [`Handovers::claim`], which every request's headers run while any waits.)
    pub fn put(&mut self, h: Handover) {
        if self.waiting.len() >= HANDOVERS_MAX {
            let oldest = self
                .waiting
                .iter()
                .enumerate()
                .min_by_key(|(_, w)| w.left_ns)
                .map(|(i, _)| i);
            if let Some(i) = oldest {
                self.take_at(i);
            }
        }
        self.waiting.push(h);
    }

    /// The handover at `i` (a valid index), taken; the last one takes its place.
    fn take_at(&mut self, i: usize) -> Option<Handover> {
        let last = self.waiting.pop()?;
        match self.waiting.get_mut(i) {
            Some(slot) => Some(std::mem::replace(slot, last)),
            None => Some(last),
        }
    }

    /// The handover of the stream that started at `stream_start_ns`, taken; the ones that
    /// waited too long by `now_ns` are given up.
    pub fn claim(&mut self, stream_start_ns: u64, now_ns: u64) -> Option<Handover> {
        let mut found = None;
        let mut i = 0;
        while let Some(h) = self.waiting.get(i) {
            let expired = now_ns.saturating_sub(h.left_ns) >= HANDOVER_WAIT_NS;
            if expired {
                self.take_at(i);
            } else if h.stream_start_ns == stream_start_ns && found.is_none() {
                found = self.take_at(i);
            } else {
                i += 1;
            }
        }
        found
    }
}

/// Runs the pipeline for one request.
pub fn decide(
    cfg: &Config,
    keys: &StoreKeys,
    store: &dyn SharedStore,
    now_ns: u64,
    req: &dyn RequestSource,
) -> Decision {
    decide_leg(cfg, keys, store, now_ns, req, None)
}

/// Runs the pipeline for one request, or for a later leg of one Envoy redirected internally
/// (`first_leg`: the previous leg's decision; Envoy follows the upstream's redirect itself,
/// `internal_redirect_policy`, and runs the filter chain again for the new location). That leg
/// is checked as any request is (route, API key, CORS, cache) but charged only what the earlier
/// legs were not: the client made one request, whose stage, plan, client and quota charges and
/// rate limit service call the first leg took. On another route than the previous leg's, it
/// takes that route's throttle token (when the throttle is checked locally). Its answer
/// carries the legs' rate-limit headers; refused, it gives back what it took itself (its
/// earlier legs reached the upstream and stay charged).
pub fn decide_leg(
    cfg: &Config,
    keys: &StoreKeys,
    store: &dyn SharedStore,
    now_ns: u64,
    req: &dyn RequestSource,
    first_leg: Option<Decision>,
) -> Decision {
    let mut decision = admit(cfg, keys, store, now_ns, req, first_leg);
    if decision.outcome == Outcome::Forward && cfg.caching {
        plan_cache(cfg, &mut decision, req);
        if decision.outcome != Outcome::Forward {
            decision.service_call = None;
        }
    }
    // Refused, or in report-only mode counted as refused: nothing spent. That is what the
    // throttles took before one refused and what the checks took before the cache refused (a
    // redirect's later leg holds only what it took itself).
    if decision.error.is_some() || decision.outcome != Outcome::Forward {
        give_back(cfg, keys, store, &mut decision.spent);
    }
    decision
}

/// Step 4, the cache (contract, "Cache"), for a request that goes on: whether it goes through
/// Envoy's cache filter, under which key, and what becomes of a request for a fresh response.
fn plan_cache(cfg: &Config, decision: &mut Decision, req: &dyn RequestSource) {
    let route = cfg.route(decision.route);
    let method = req.header(":method").unwrap_or_default();
    let get_or_head = method == b"GET" || method == b"HEAD";
    // Envoy's cache filter leaves requests with a body, or with credentials or validators of
    // their own, alone.
    let envoy_skips = get_or_head
        && (req.has_body()
            || cache::UNCACHEABLE_REQUEST_HEADERS
                .iter()
                .any(|h| req.header(h).is_some()));
    let path = req.header(":path").unwrap_or_default();
    let policy = match &route.cache {
        // A query whose parameters depend on how the upstream reads `;` goes around the cache,
        // as its key cannot be told.
        Some(p) if p.methods.allows(method) && !envoy_skips && !cache::ambiguous_query(p, path) => {
            p
        }
        _ => {
            decision.cache = CachePlan::Bypass {
                shield: get_or_head && !envoy_skips,
            };
            return;
        }
    };
    let cache_control = req.header("cache-control");
    let pragma = if cache_control.is_none() {
        req.header("pragma")
    } else {
        None
    };
    let asks = cache::asks_for_fresh(cache_control, pragma);
    let may_invalidate = decision
        .key
        .and_then(|i| cfg.api_keys.as_ref()?.keys().get(i))
        .is_some_and(|k| k.invalidate_cache);
    // A key header (of the cache key) sent more than once: the upstream answers for every copy.
    let rewrite = cache::key_rewrite(policy, path, &mut |h| req.header_joined(h));
    let (refresh, warn) = match cache::invalidation(policy, asks, may_invalidate) {
        Invalidation::NotAsked => (false, false),
        Invalidation::Refresh => (true, false),
        Invalidation::Ignore { warn } => (false, warn),
        Invalidation::Deny => {
            let error = ErrorType::CacheInvalidationDenied;
            // Refused: what the checks took goes back (`decide_leg`), and the answer says so. With
            // a rate limit service call to make, the local checks' reports wait in the call.
            let reports = match decision.service_call.as_mut() {
                Some(call) => &mut call.reports,
                None => &mut decision.reports,
            };
            // (A report-only refusal by a throttle refunded them already.)
            if decision.error.is_none() {
                refund_own(&decision.spent, decision.later_leg, reports);
            }
            let rendered = headers::render(cfg.rate_limit_headers, reports);
            if route.enforce {
                decision.outcome = local_response(
                    error,
                    rendered,
                    cfg.cors_for(route).map(|p| (p, decision.cors.as_ref())),
                );
                decision.error = Some(error);
                return;
            }
            // Report-only: say what enforcement would do, serve from the cache as usual. The
            // rate limit service is not asked: under enforcement the request ends here.
            decision.error.get_or_insert(error);
            if let Some(call) = decision.service_call.take() {
                decision.reports = call.reports;
            }
            decision.response_headers = rendered;
            (false, false)
        }
    };
    decision.cache = CachePlan::Lookup {
        rewrite,
        refresh,
        warn,
    };
}

/// Steps 1 to 3: preflight, key, throttles and quota.
fn admit(
    cfg: &Config,
    keys: &StoreKeys,
    store: &dyn SharedStore,
    now_ns: u64,
    req: &dyn RequestSource,
    first_leg: Option<Decision>,
) -> Decision {
    let method = req.header(":method").unwrap_or_default();
    let path = req.header(":path").unwrap_or_default();
    let origin = req.header("origin");

    // 0. A path whose route depends on how the upstream reads `;` is refused, not guessed at.
    //    Without routes every path gets the stage's settings: nothing to guess, and `{}`
    //    passes all traffic through.
    if !cfg.table.is_empty() && crate::routes::is_ambiguous_path(path) {
        let policy = cfg.cors_for(cfg.route(None));
        let cors = policy.and_then(|p| p.actual(origin));
        // No route can be told, so any route that enforces refuses it: a report-only stage
        // must not let such a path past a route that enforces.
        let enforced = cfg.enforce || cfg.routes.iter().any(|r| r.enforce);
        let outcome = if enforced {
            local_response(
                ErrorType::BadRequest,
                Vec::new(),
                policy.map(|p| (p, cors.as_ref())),
            )
        } else {
            Outcome::Forward
        };
        // (A later leg refused here took nothing itself; its earlier legs reached the upstream
        // and stay charged.)
        return Decision::new(outcome, None, Some(ErrorType::BadRequest), cors);
    }

    // 1. CORS preflight, routed by the method it asks about. On a route with CORS off the
    //    upstream answers preflights: the request goes on untouched by any CORS policy, as the
    //    `OPTIONS` request it is (checked as its own route's: the headers a client sends must
    //    not pick which route's key and limits it meets).
    let mut upstream_preflight = false;
    if method == b"OPTIONS" {
        if let Some(origin) = origin {
            if let Some(requested) = req.header("access-control-request-method") {
                let route_idx = cfg.table.find(requested, path);
                let route = cfg.route(route_idx);
                if route_idx.is_some() && cfg.cors_for(route).is_none() {
                    upstream_preflight = true;
                }
                if let Some(policy) = cfg.cors_for(route) {
                    let request_headers = req.header("access-control-request-headers");
                    let pna = req.header("access-control-request-private-network");
                    let pre = Preflight {
                        origin,
                        request_method: requested,
                        request_headers,
                        request_private_network: pna
                            .is_some_and(|v| v.eq_ignore_ascii_case(b"true")),
                    };
                    let (outcome, error) = match policy.preflight(&pre) {
                        PreflightDecision::Allowed(mut headers) => {
                            // Browsers reuse the headers a preflight allowed for any request to
                            // the URL, whatever its method: unless every method's route here
                            // would allow the same, the answer must not be cached.
                            if pre.request_headers.is_some_and(|h| !h.is_empty())
                                && !crate::metrics::METHODS.iter().all(|m| {
                                    let m = m.as_bytes();
                                    // (`OTHER` names no method: an ANY route's is some other's.)
                                    if m == b"OTHER" {
                                        return true;
                                    }
                                    let other = cfg.route(cfg.table.find(m, path));
                                    // Origin and headers only: a method that route's policy
                                    // refuses gets a preflight of its own anyway (the answer
                                    // names the asked method alone), and GET always passes.
                                    // And credentials: an answer that allows them is reused
                                    // for credentialed requests, which that route's policy
                                    // may refuse.
                                    // (This preflight's own policy allowed them: no need
                                    // to ask it again, as `{}` routes every method to it.)
                                    cfg.cors_for(other).is_some_and(|p| {
                                        let asked = Preflight {
                                            request_method: b"GET",
                                            ..pre
                                        };
                                        std::ptr::eq(p, policy)
                                            || ((p.allows_credentials()
                                                || !policy.allows_credentials())
                                                && p.admits(&asked))
                                    })
                                })
                            {
                                cors::expire_at_once(&mut headers);
                            }
                            (
                                Outcome::Respond {
                                    status: 204,
                                    headers,
                                    body: None,
                                },
                                None,
                            )
                        }
                        PreflightDecision::Denied => (
                            local_response(ErrorType::CorsPreflightDenied, Vec::new(), None),
                            Some(ErrorType::CorsPreflightDenied),
                        ),
                    };
                    // (A later leg answered here, a preflight the upstream redirected: its
                    // earlier legs reached the upstream and stay charged.)
                    return Decision::new(outcome, route_idx, error, None);
                }
            }
        }
    }

    let route_idx = cfg.table.find(method, path);
    let route: &Route = cfg.route(route_idx);
    let cors = if upstream_preflight {
        None
    } else {
        cfg.cors_for(route).and_then(|p| p.actual(origin))
    };
    let mut decision = Decision::new(Outcome::Forward, route_idx, None, cors);
    decision.cors_off = upstream_preflight;

    // 2. API key.
    let mut key = None;
    if let Some(api_keys) = &cfg.api_keys {
        // A key header sent twice is refused: tollgate would check one value while the
        // upstream sees both (joined, or the last), and no key is a list.
        match req.header_once(&api_keys.header) {
            Some(Ok(value)) => match api_keys.lookup_index(value) {
                Some((i, k)) => key = Some((i, k)),
                None => decision.error = Some(ErrorType::InvalidApiKey),
            },
            Some(Err(Repeated)) => decision.error = Some(ErrorType::InvalidApiKey),
            None if route.api_key_required => decision.error = Some(ErrorType::InvalidApiKey),
            None => {}
        }
    }
    decision.key = key.map(|(i, _)| i);
    if decision.error.is_some() {
        // (A later leg refused here took nothing itself; its earlier legs reached the upstream
        // and stay charged.)
        if route.enforce {
            decision.outcome = local_response(
                ErrorType::InvalidApiKey,
                Vec::new(),
                cfg.cors_for(route).map(|p| (p, decision.cors.as_ref())),
            );
        }
        return decision;
    }
    // The second leg of an internal redirect starts from what its first leg was charged.
    let first = first_leg.is_none();
    decision.later_leg = !first;
    let (mut reports, mut spent) = match first_leg {
        Some(c) => {
            decision.error = c.error;
            decision.service_headers = c.service_headers;
            decision.earlier_legs = c.earlier_legs;
            // The previous leg's route; when every slot is taken, the oldest gives way (a
            // chain that comes back comes back to a recent route more likely).
            let legs = &mut decision.earlier_legs;
            match legs.iter_mut().find(|s| s.is_none()) {
                Some(slot) => *slot = c.route,
                None => {
                    legs.rotate_left(1);
                    if let Some(last) = legs.last_mut() {
                        *last = c.route;
                    }
                }
            }
            // What the earlier legs took stays spent: they reached the upstream. This leg
            // spends (and, refused, gives back) only its own.
            (c.reports, Spent::default())
        }
        None => (Vec::new(), Spent::default()),
    };
    // A route an earlier leg was on was checked then (A -> B -> A takes A's token once).
    let check_route = route_idx.is_none_or(|i| !decision.earlier_legs.contains(&Some(i)));
    // A later leg of a request an earlier leg counted as refused (report-only): that leg's
    // reports were refunded then, and what this leg takes goes back too (`decide_leg`).
    let refused_before = decision.error.is_some();

    // 3. Throttles, then the quota. A check delegated to the rate limit service runs locally
    //    only in front of the call (`local_first`, buckets only), never instead of it.
    let svc = cfg.rate_limit_service.as_ref();
    let local = |c: rls::Check| match svc {
        Some(s) if s.delegates(c) => s.local_first && c != rls::Check::Quota,
        _ => true,
    };
    let plan = key.and_then(|(_, k)| k.plan).and_then(|p| cfg.plans.get(p));
    // (A cell: the reads of later checks below look at it between the checks.)
    let failure: std::cell::Cell<Option<(ErrorType, u64)>> = std::cell::Cell::new(None);
    let run = |check: Check, reports: &mut Vec<PolicyReport>, decision: &mut Decision| match check {
        Check::Pass(r) => {
            reports.push(r);
            true
        }
        Check::Fail {
            report,
            error,
            retry_after_s,
        } => {
            reports.push(report);
            failure.set(Some((error, retry_after_s)));
            false
        }
        Check::StoreFailed(why) => {
            decision.store_failure = Some(why);
            failure.set(Some((ErrorType::Throttled, 1)));
            false
        }
    };
    let mut passed = true;
    // The checks after a refusal are read, not charged: a refused request's Retry-After is the
    // longest wait of the local checks that apply to it (a client that waits as told must not
    // meet the next one empty). Only for an answer that carries it.
    let mut later_wait_s = 0u64;
    // A bucket makes a request wait one token's refill at most: read only when that is longer
    // than the wait known so far.
    let worth_reading = |spec: &BucketSpec, later_wait_s: u64| {
        let known = failure.get().map_or(0, |(_, s)| s).max(later_wait_s);
        headers::retry_after_secs(spec.token_ns()) > known
    };
    let wait_of = |spec: &BucketSpec, k: &str| match store.get(k) {
        Ok(Some((bytes, _))) => BucketState::decode(&bytes)
            .map(|state| bucket::peek(spec, state, now_ns))
            .filter(|o| !o.allowed)
            .map_or(0, |o| headers::retry_after_secs(o.wait_ns)),
        _ => 0,
    };
    if let (Some(p), Some((i, _)), true) = (plan, key, first && local(rls::Check::Plan)) {
        if let (Some(spec), Some(k)) = (&p.throttle, keys.plan.get(i)) {
            passed = run(
                check_bucket("plan", spec, k, store, now_ns),
                &mut reports,
                &mut decision,
            );
            spent.plan = passed.then_some(i);
        }
    }
    // Whether a refusal's Retry-After is worth reading the later checks for.
    let peek = |passed: bool, decision: &Decision| {
        !passed && route.enforce && decision.store_failure.is_none() && now_ns != 0
    };
    if !first && check_route && route.throttle.is_some() {
        // A redirect's next leg checks its own route (here or through the service): its
        // report replaces the earlier leg's.
        reports.retain(|r| r.name != "route");
    }
    if check_route && local(rls::Check::Route) {
        if let (Some(spec), Some(i)) = (&route.throttle, route_idx) {
            if let Some(k) = keys.routes.get(i) {
                if passed {
                    passed = run(
                        check_bucket("route", spec, k, store, now_ns),
                        &mut reports,
                        &mut decision,
                    );
                    spent.route = passed.then_some(i);
                } else if peek(passed, &decision) && worth_reading(spec, later_wait_s) {
                    later_wait_s = later_wait_s.max(wait_of(spec, k));
                }
            }
        }
    }
    if first && local(rls::Check::Stage) {
        if let Some(spec) = &cfg.stage_throttle {
            if passed {
                passed = run(
                    check_bucket("stage", spec, &keys.stage, store, now_ns),
                    &mut reports,
                    &mut decision,
                );
                spent.stage = passed;
            } else if peek(passed, &decision) && worth_reading(spec, later_wait_s) {
                later_wait_s = later_wait_s.max(wait_of(spec, &keys.stage));
            }
        }
    }
    let mut client_identity = None;
    if first {
        if let Some(ct) = &cfg.client_throttle {
            if passed {
                let identity = client_identity_of(ct, key.map(|(_, k)| k), req);
                if local(rls::Check::Client) {
                    let slot = client_slot(&identity, ct.slots, &keys.client_seed);
                    passed = run(
                        check_bucket("client", &ct.spec, &keys.client(slot), store, now_ns),
                        &mut reports,
                        &mut decision,
                    );
                    spent.client = passed.then_some(slot);
                }
                client_identity = Some(identity);
            } else if peek(passed, &decision)
                && local(rls::Check::Client)
                && worth_reading(&ct.spec, later_wait_s)
            {
                // (The identity, which may cost a host call, only when worth it.)
                let identity = client_identity_of(ct, key.map(|(_, k)| k), req);
                let k = keys.client(client_slot(&identity, ct.slots, &keys.client_seed));
                later_wait_s = later_wait_s.max(wait_of(&ct.spec, &k));
            }
        }
    }
    if first && local(rls::Check::Quota) {
        if let (Some(q), Some((i, _))) = (plan.and_then(|p| p.quota), key) {
            if let Some(k) = keys.quota.get(i) {
                if passed {
                    let (check, window) = check_quota(q.limit, q.period, k, store, now_ns);
                    if run(check, &mut reports, &mut decision) {
                        spent.quota = window.map(|w| (i, w));
                    }
                } else if peek(passed, &decision) {
                    later_wait_s =
                        later_wait_s.max(quota_wait_s(q.limit, q.period, k, store, now_ns));
                }
            }
        }
    }
    let failure = failure
        .get()
        .map(|(error, retry_after_s)| (error, retry_after_s.max(later_wait_s)));

    // A request refused here gets back what the checks before took (`decide_leg`), and its
    // answer says so.
    decision.spent = spent;
    if refused_before {
        // Only a later leg's route check can have run: its token goes back.
        if spent.route.is_some() {
            if let Some(route_report) = reports.last_mut() {
                refund(std::slice::from_mut(route_report));
            }
        }
    } else if !first {
        // A later leg's only check is its route's, which took nothing if it failed; the
        // earlier legs' charges stay, and their reports say so.
    } else if decision.store_failure.is_some() {
        // The check the store failed has no report: every report is of one that passed.
        refund(&mut reports);
    } else if failure.is_some() {
        // The last report is the failed check's, which took nothing.
        if let Some((_, passed)) = reports.split_last_mut() {
            refund(passed);
        }
    }

    if !first {
        // A later leg's own route report goes where a first leg lists it, not last.
        if let Some(r) = reports.pop_if(|r| r.name == "route") {
            headers::put_report(&mut reports, r);
        }
    }

    // 4. The rate limit service, for a request every local check admitted. A later leg's first
    //    leg made the call; a later leg on another route asks about that route's throttle
    //    only (when the service holds it), so a redirect cannot skip a fleet-wide route limit.
    //    A leg of a request an earlier leg counted as refused (report-only) asks nothing: under
    //    enforcement the request would have ended there, and the service is charged as then.
    let ask_route = check_route && route.throttle.is_some() && !refused_before;
    if let (None, Some(s), true) = (failure, svc, first || ask_route) {
        let client = client_identity.as_deref().map(descriptor_text);
        let facts = RequestFacts {
            stage: &cfg.stage,
            route: route.throttle.and(route.name.as_deref()),
            stage_throttle: first && cfg.stage_throttle.is_some(),
            key: key.filter(|_| first).and_then(|(_, k)| {
                let p = cfg.plans.get(k.plan?)?;
                Some(KeyFacts {
                    id: &k.id,
                    usage_plan: &p.name,
                    throttle: p.throttle.is_some(),
                    quota_period: p.quota.map(|q| q.period.as_str()),
                })
            }),
            client: client.as_deref(),
        };
        let descriptors = rls::build_descriptors(s, &facts);
        if !descriptors.is_empty() {
            decision.service_call = Some(ServiceCall {
                message: rls::encode_request(&rls::build_request(s, &descriptors)),
                checks: descriptors.iter().map(|(c, _)| *c).collect(),
                reports,
            });
            return decision;
        }
    }

    let rl_headers = headers::render(cfg.rate_limit_headers, &reports);
    // A later leg carries its first leg's service headers: none may repeat one tollgate sends.
    if !decision.service_headers.is_empty() {
        let carried = std::mem::take(&mut decision.service_headers);
        decision.service_headers = rls::passed_on(carried, &rl_headers);
    }
    match failure {
        Some((error, retry_after)) => {
            decision.error = Some(error);
            if route.enforce {
                let mut h = rl_headers;
                h.push(("retry-after", retry_after.to_string()));
                decision.outcome = local_response(
                    error,
                    h,
                    cfg.cors_for(route).map(|p| (p, decision.cors.as_ref())),
                );
            } else {
                decision.response_headers = rl_headers;
            }
        }
        None => decision.response_headers = rl_headers,
    }
    decision.reports = reports;
    decision
}

/// A client identity as a descriptor value (text): bytes that are not UTF-8 are written as
/// `\xHH`, so distinct values stay distinct (`U+FFFD` made them one). A header value that is
/// itself the text `\xHH` reads the same; header identities are the client's to choose anyway.
fn descriptor_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return s.into();
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.into()
}

/// The identity a client bucket counts: the API key's id (`by: api_key`), a header's value
/// (`by: header:NAME`), else the source IP (an IPv6 address by its /64).
fn client_identity_of(
    ct: &crate::config::ClientThrottle,
    key: Option<&crate::keys::ApiKey>,
    req: &dyn RequestSource,
) -> Vec<u8> {
    match (&ct.by, key) {
        (ClientBy::ApiKey, Some(k)) => {
            let mut v = b"key:".to_vec();
            v.extend_from_slice(k.id.as_bytes());
            v
        }
        (ClientBy::Header(h), _) => match req.header(h) {
            Some(v) => {
                let mut id = b"hdr:".to_vec();
                id.extend_from_slice(v);
                id
            }
            None => ip_identity(req.source_address().unwrap_or_default()),
        },
        _ => ip_identity(req.source_address().unwrap_or_default()),
    }
}

/// Applies the rate limit service's answer (or the call's failure) to a decision that was
/// waiting for it: a 429 when the service refuses (or fails under `failure_mode: deny`) and
/// the route enforces, else the request goes on. The `RateLimit` headers combine the local
/// checks' policies with the service's statuses; a check the service answered for is reported
/// from the service only. Returns how the call ended.
pub fn conclude(
    cfg: &Config,
    keys: &StoreKeys,
    store: &dyn SharedStore,
    decision: &mut Decision,
    call: ServiceCall,
    reply: Result<&[u8], rls::CallFailure>,
) -> ServiceResult {
    let Some(svc) = &cfg.rate_limit_service else {
        return ServiceResult::Ok;
    };
    let answer = rls::interpret(svc, &call.checks, reply);
    let mut reports = call.reports;
    if answer.refuse.is_some() {
        // What the local checks took goes back (below), and their reports say so. (When the
        // service answered, its reports then replace those of the checks it holds.) A later
        // leg's took only its route's token: the earlier legs' stay spent.
        refund_own(&decision.spent, decision.later_leg, &mut reports);
    }
    if answer.failure.is_none() {
        // A check the service told a limit for is reported from the service; one it said
        // nothing about (Limitador sends no per-descriptor statuses) keeps its local report
        // (`local_first`), if any.
        for a in &answer.reports {
            headers::put_report(&mut reports, a.clone());
        }
    }
    let rl_headers = headers::render(cfg.rate_limit_headers, &reports);
    // A later leg's call (about its route): the earlier call's headers stay, but for the names
    // this answer sets again; all are then checked against the headers tollgate now sends.
    let mut merged = std::mem::take(&mut decision.service_headers);
    merged.retain(|(n, _)| !answer.headers.iter().any(|(m, _)| m == n));
    merged.extend(answer.headers);
    decision.service_headers = rls::passed_on(merged, &rl_headers);
    decision.reports = reports;
    let route = cfg.route(decision.route);
    match answer.refuse {
        Some(error) => {
            // Refused by the service (or its failure): the local checks' tokens and quota
            // go back.
            give_back(cfg, keys, store, &mut decision.spent);
            decision.error = Some(error);
            if route.enforce {
                let mut h = rl_headers;
                h.push(("retry-after", answer.retry_after_s.max(1).to_string()));
                decision.outcome = local_response(
                    error,
                    h,
                    cfg.cors_for(route).map(|p| (p, decision.cors.as_ref())),
                );
                decision.cache = CachePlan::Off;
            } else {
                decision.response_headers = rl_headers;
            }
        }
        None => decision.response_headers = rl_headers,
    }
    match answer.failure {
        Some(f) => ServiceResult::Failure(f),
        None if answer.refuse.is_some() => ServiceResult::OverLimit,
        None => ServiceResult::Ok,
    }
}

/// A request that ended while it waited for the rate limit service (the client went away, or
/// Envoy ended the stream: a timeout, a body over its buffer): it never reached the upstream,
/// so what its local checks took goes back, as for a refusal.
pub fn abandon(cfg: &Config, keys: &StoreKeys, store: &dyn SharedStore, decision: &mut Decision) {
    give_back(cfg, keys, store, &mut decision.spent);
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &[u8], origin: bool, request_method: bool) -> bool {
    cors::is_preflight(method, origin, request_method)
}

#[cfg(test)]
mod tests;
