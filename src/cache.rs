//! API caching policy (contract, "Cache"): which requests go through Envoy's cache filter, under
//! which key, who may ask for a fresh response, and how long a response may be kept. Pure: the
//! filter reads the headers, calls these functions and applies what they return.
//!
//! Envoy's `envoy.filters.http.cache` stores and serves the responses; tollgate runs twice around
//! it (docs/CACHING.md):
//! - the main role, before the cache filter, normalises the request's query string to the cache
//!   key ([`key_query`]) and stashes the original query in [`QUERY_STASH`], marks the request
//!   with a per-request token ([`MARKER`]), and applies the invalidation policy
//!   ([`invalidation`]);
//! - the upstream role, an upstream HTTP filter of the cluster, puts the original query back
//!   ([`restore_query`]), so the upstream receives exactly what the client sent, echoes the token
//!   on the response and sets the lifetime the cache filter stores it for ([`storage`]), keeping
//!   the upstream's own `Cache-Control` in [`CONTROL_STASH`];
//! - back in the main role, an echoed token equal to the request's own means the upstream
//!   answered (miss); any other token means the response came out of the cache (hit)
//!   ([`classify`]). The main role gives the client the upstream's `Cache-Control` back and
//!   removes every internal header.

use crate::error::Quoted;

/// Longest TTL a configuration may give, in seconds (API Gateway's limit).
pub const MAX_TTL_S: u32 = 3600;
/// TTL when none is configured.
pub const DEFAULT_TTL_S: u32 = 300;

/// Request header (main role -> upstream role) and response header (upstream role -> main role):
/// `<token> <ttl> <query id>` on the request ([`Marker`]), `<token>` on the response.
pub const MARKER: &str = "x-tollgate-cache";
/// Request header: the query the client sent (`?...`, or `-` for none) when the main role
/// replaced it with the cache key's.
pub const QUERY_STASH: &str = "x-tollgate-cache-query";
/// Response header: the upstream's own `Cache-Control` (`=<value>`, or `-` for none) when the
/// upstream role replaced it for the cache filter.
pub const CONTROL_STASH: &str = "x-tollgate-cache-control";
/// Response header: the `ETag` the client is to get (`=<value>`, or `-` for none) when the
/// upstream role gave a 304 that must not be stored an entity tag of its own
/// ([`unmatched_etag`]).
pub const ETAG_STASH: &str = "x-tollgate-cache-etag";
/// Request headers a client must never be able to send (removed by the main role).
pub const INTERNAL_REQUEST_HEADERS: [&str; 2] = [MARKER, QUERY_STASH];
/// Response headers the client never sees, and an upstream may not set (removed by both roles).
pub const INTERNAL_RESPONSE_HEADERS: [&str; 3] = [MARKER, CONTROL_STASH, ETAG_STASH];

/// The `If-None-Match` value that makes Envoy's cache filter leave a request alone (it neither
/// looks up nor stores requests with a validator of their own); no entity tag ever matches it,
/// and the upstream role removes it before the upstream sees it.
pub const BYPASS_VALIDATOR: &str = "\"tollgate-cache-bypass\"";

/// Request headers with which Envoy's cache filter neither answers from nor stores into the
/// cache (the conditional headers it does not handle, and credentials).
pub const UNCACHEABLE_REQUEST_HEADERS: [&str; 4] = [
    "authorization",
    "if-none-match",
    "if-modified-since",
    "if-range",
];

/// The `Warning` of `SUCCEED_WITH_RESPONSE_HEADER`.
pub const UNAUTHORIZED_WARNING: &str =
    "199 - \"cache invalidation not authorized; Cache-Control ignored\"";

/// What to do when a client that may not invalidate asks for a fresh response (API Gateway's
/// `unauthorizedCacheControlHeaderStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnauthorizedStrategy {
    FailWith403,
    SucceedWithResponseHeader,
    SucceedWithoutResponseHeader,
}

impl UnauthorizedStrategy {
    pub fn parse(s: &str) -> Option<UnauthorizedStrategy> {
        match s {
            "FAIL_WITH_403" => Some(UnauthorizedStrategy::FailWith403),
            "SUCCEED_WITH_RESPONSE_HEADER" => Some(UnauthorizedStrategy::SucceedWithResponseHeader),
            "SUCCEED_WITHOUT_RESPONSE_HEADER" => {
                Some(UnauthorizedStrategy::SucceedWithoutResponseHeader)
            }
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnauthorizedStrategy::FailWith403 => "FAIL_WITH_403",
            UnauthorizedStrategy::SucceedWithResponseHeader => "SUCCEED_WITH_RESPONSE_HEADER",
            UnauthorizedStrategy::SucceedWithoutResponseHeader => "SUCCEED_WITHOUT_RESPONSE_HEADER",
        }
    }
}

/// One entry of `key_parameters`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyParameter {
    /// A query string parameter, by name (case-sensitive).
    Query(String),
    /// A request header, lowercase.
    Header(String),
}

fn is_query_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'[' | b']')
}

/// Parses `querystring.NAME` or `header.NAME` (API Gateway's `method.request.` prefix is
/// accepted too). The message says what is wrong.
pub fn parse_key_parameter(text: &str) -> Result<KeyParameter, String> {
    let s = text.strip_prefix("method.request.").unwrap_or(text);
    if let Some(name) = s.strip_prefix("querystring.") {
        if name.is_empty() || name.len() > 128 || !name.bytes().all(is_query_name_byte) {
            return Err(format!(
                "{text}: a query parameter name is 1 to 128 letters, digits, '-', '.', '_', '~', '[' or ']'", text = Quoted(text)));
        }
        return Ok(KeyParameter::Query(name.to_string()));
    }
    if let Some(name) = s.strip_prefix("header.") {
        let lower = name.to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 256 || !crate::token::is_token(lower.as_bytes()) {
            return Err(format!(
                "{text}: not a valid HTTP header name",
                text = Quoted(text)
            ));
        }
        if lower.starts_with("x-tollgate-") {
            return Err(format!(
                "{text}: x-tollgate-* headers are tollgate's own",
                text = Quoted(text)
            ));
        }
        if lower == "authorization" {
            return Err(format!(
                "{text}: Envoy's cache filter never caches a request with Authorization, so this would split nothing",
                text = Quoted(text)
            ));
        }
        if REWRITTEN_REQUEST_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "{text}: tollgate interprets {lower} itself and rewrites it before the cache, so it cannot split entries",
                text = Quoted(text)
            ));
        }
        return Ok(KeyParameter::Header(lower));
    }
    if s.starts_with("path.") {
        return Err(format!(
            "{text}: the whole path is always part of the cache key; name \"querystring.NAME\" or \"header.NAME\"", text = Quoted(text)));
    }
    Err(format!(
        "{text}: must be \"querystring.NAME\" or \"header.NAME\"",
        text = Quoted(text)
    ))
}

/// The request methods served through the cache. Envoy's cache filter stores only GET
/// responses; it answers HEAD requests from GET entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheMethods {
    pub get: bool,
    pub head: bool,
}

impl CacheMethods {
    pub const DEFAULT: CacheMethods = CacheMethods {
        get: true,
        head: true,
    };

    pub fn allows(self, method: &[u8]) -> bool {
        match method {
            b"GET" => self.get,
            b"HEAD" => self.head,
            _ => false,
        }
    }
}

/// A `cache` section as written (stage or route): every field optional, so that a route's
/// section overrides the stage's field by field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheSettings {
    pub enabled: Option<bool>,
    pub ttl_s: Option<u32>,
    pub require_authorization: Option<bool>,
    pub unauthorized_strategy: Option<UnauthorizedStrategy>,
    pub key_parameters: Option<Vec<KeyParameter>>,
    pub methods: Option<CacheMethods>,
}

impl CacheSettings {
    /// These settings with every field `over` sets replaced.
    pub fn overlay(&self, over: &CacheSettings) -> CacheSettings {
        CacheSettings {
            enabled: over.enabled.or(self.enabled),
            ttl_s: over.ttl_s.or(self.ttl_s),
            require_authorization: over.require_authorization.or(self.require_authorization),
            unauthorized_strategy: over.unauthorized_strategy.or(self.unauthorized_strategy),
            key_parameters: over
                .key_parameters
                .clone()
                .or_else(|| self.key_parameters.clone()),
            methods: over.methods.or(self.methods),
        }
    }

    /// The policy these settings give, with the defaults filled in; None when caching is off
    /// (`enabled: false` or `ttl: 0`). A section that exists is enabled unless it says not.
    pub fn policy(&self) -> Option<CachePolicy> {
        if !self.enabled.unwrap_or(true) {
            return None;
        }
        let ttl_s = self.ttl_s.unwrap_or(DEFAULT_TTL_S).min(MAX_TTL_S);
        if ttl_s == 0 {
            return None;
        }
        let mut query_keys = Vec::new();
        let mut header_keys = Vec::new();
        for p in self.key_parameters.iter().flatten() {
            match p {
                KeyParameter::Query(n) => query_keys.push(canonical_name(n.as_bytes())),
                KeyParameter::Header(n) => header_keys.push(n.clone()),
            }
        }
        sort_dedup(&mut query_keys);
        sort_dedup(&mut header_keys);
        let loose_query_keys = query_keys.iter().map(|k| loose_name(k)).collect();
        Some(CachePolicy {
            query_id: query_keys_id(&query_keys),
            ttl_s,
            require_authorization: self.require_authorization.unwrap_or(true),
            unauthorized_strategy: self
                .unauthorized_strategy
                .unwrap_or(UnauthorizedStrategy::SucceedWithResponseHeader),
            query_keys,
            loose_query_keys,
            header_keys,
            methods: self.methods.unwrap_or(CacheMethods::DEFAULT),
        })
    }
}

/// The cache policy in force for one route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// Lifetime of a stored response, 1 to [`MAX_TTL_S`] seconds.
    pub ttl_s: u32,
    /// Only keys with `invalidate_cache` may ask for a fresh response.
    pub require_authorization: bool,
    pub unauthorized_strategy: UnauthorizedStrategy,
    /// Query parameter names in the key, canonical form, sorted.
    pub query_keys: Vec<Vec<u8>>,
    /// `query_keys` as the most lenient readers take them ([`loose_name`]), same order.
    pub loose_query_keys: Vec<Vec<u8>>,
    /// [`query_keys_id`] of `query_keys`: names them in the [`MARKER`], so that the upstream
    /// role finds them in its own configuration whatever the route's place there.
    pub query_id: u64,
    /// Header names in the key, lowercase, sorted.
    pub header_keys: Vec<String>,
    pub methods: CacheMethods,
}

// ---------------------------------------------------------------------------------------------
// The cache key

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends one decoded byte in canonical form: unreserved characters other than `~` as they
/// are, every other byte as `%XX` (upper-case hex). `~` is escaped so that the key's header
/// entries (`~h.`) can never collide with a query parameter.
fn push_canonical(b: u8, out: &mut Vec<u8>) {
    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
        out.push(b);
    } else {
        out.push(b'%');
        out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
        out.push(HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0'));
    }
}

/// Canonical form of a raw query component: `%XX` escapes are decoded and re-encoded, so
/// `%7e`, `%7E` and `~` are one spelling, and `%41` is `A`. A literal `+` stays `+` (it may mean
/// a space), distinct from `%2B` and `%20`: two spellings that a server could read differently
/// never share an entry.
fn canonical_component(raw: &[u8], out: &mut Vec<u8>) {
    for unit in decode(raw) {
        match unit {
            Unit::Escaped(b) => push_canonical(b, out),
            Unit::Literal(b'+') => out.push(b'+'),
            Unit::Literal(b) => push_canonical(b, out),
        }
    }
}

/// One byte of a raw query component.
#[derive(Clone, Copy)]
enum Unit {
    /// Decoded from a `%XX` escape.
    Escaped(u8),
    /// As written (a `%` that starts no escape too).
    Literal(u8),
}

/// The bytes of a raw query component, `%XX` escapes decoded.
fn decode(raw: &[u8]) -> impl Iterator<Item = Unit> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *raw.get(i)?;
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex_value);
            let lo = raw.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                i += 3;
                return Some(Unit::Escaped(hi << 4 | lo));
            }
        }
        i += 1;
        Some(Unit::Literal(b))
    })
}

/// Canonical form of a configured (decoded) query parameter name.
fn canonical_name(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        push_canonical(b, &mut out);
    }
    out
}

/// Splits a `:path` into the path and the query (without `?`; None when there is no `?`).
/// A fragment, which clients should not send, stays in the query.
pub fn split_path(path: &[u8]) -> (&[u8], Option<&[u8]>) {
    match path.iter().position(|b| *b == b'?') {
        Some(i) => (
            path.get(..i).unwrap_or_default(),
            Some(path.get(i + 1..).unwrap_or_default()),
        ),
        None => (path, None),
    }
}

/// Request headers the main role rewrites before Envoy's cache filter (the client's freshness
/// directives are tollgate's to interpret): no key parameter can name them.
pub const REWRITTEN_REQUEST_HEADERS: [&str; 3] = ["cache-control", "pragma", "if-none-match"];

/// Hex digits of a header value's digest in the cache key: 128 bits of SHA-256.
const HEADER_DIGEST_HEX: usize = 32;

/// The cache key's query string for a request (without `?`; empty when nothing is kept): the
/// query parameters the policy names, canonical and sorted by name (repeated names keep their
/// order), then the named headers as `~h.<name>=<digest>`. A header's value is never written
/// (it may be a credential, such as an API key, and the key is the request's `:path`, which
/// access logs print): the first 128 bits of its SHA-256, in hex, split the entries instead.
/// Absent parameters and headers are left out; a parameter without `=` stays distinct from one
/// with an empty value.
pub fn key_query(
    policy: &CachePolicy,
    query: Option<&[u8]>,
    header: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
) -> Vec<u8> {
    // Every parameter, canonical, in the client's order.
    let mut pairs: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    if !policy.query_keys.is_empty() {
        for pair in query.unwrap_or_default().split(|b| *b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (raw_name, raw_value) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (
                    pair.get(..i).unwrap_or_default(),
                    Some(pair.get(i + 1..).unwrap_or_default()),
                ),
                None => (pair, None),
            };
            let mut name = Vec::with_capacity(raw_name.len());
            canonical_component(raw_name, &mut name);
            if policy.query_keys.binary_search(&name).is_err() {
                continue;
            }
            let value = raw_value.map(|v| {
                let mut out = Vec::with_capacity(v.len());
                canonical_component(v, &mut out);
                out
            });
            pairs.push((name, value));
        }
    }
    // Sorted by name without a sort: the policy's names are sorted, and one pass per name keeps
    // repeated parameters in the order the client gave them. Linear in the query's length for
    // each configured name.
    let mut kept: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(pairs.len());
    for key in &policy.query_keys {
        for (name, value) in &pairs {
            if name == key {
                kept.push((name.clone(), value.clone()));
            }
        }
    }
    let mut out = Vec::new();
    for (name, value) in kept {
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(&name);
        if let Some(v) = value {
            out.push(b'=');
            out.extend_from_slice(&v);
        }
    }
    for name in &policy.header_keys {
        let Some(value) = header(name) else {
            continue;
        };
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(b"~h.");
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        let digest = crate::keys::sha256(&value);
        for &b in digest.iter().take(HEADER_DIGEST_HEX / 2) {
            out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
            out.push(HEX.get(usize::from(b & 0x0f)).copied().unwrap_or(b'0'));
        }
    }
    out
}

/// The query-parameter part of a cache key query: without its header entries, which come
/// last (a query parameter's `~` is escaped, so `~h.` starts only a header entry).
fn query_part(key: &[u8]) -> &[u8] {
    if key.starts_with(b"~h.") {
        return &[];
    }
    match key.windows(4).position(|w| w == b"&~h.") {
        Some(i) => key.get(..i).unwrap_or_default(),
        None => key,
    }
}

/// How the main role rewrites a request's `:path` to its cache key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRewrite {
    /// The new `:path`: the path, then `?` and the key query when it is not empty.
    pub path: Vec<u8>,
    /// The [`QUERY_STASH`] value: `?` and the original query, or `-` when there was none.
    pub stash: Vec<u8>,
}

/// Whether the cache key of `path` under `policy` depends on how the upstream reads the query,
/// when the policy keeps query parameters:
/// - a `;`, which some frameworks (Rack 2, older Python and Java stacks) take for a separator
///   as `&` is, and others for data (`%3B` is data to all of them);
/// - a parameter whose name some reader takes for a key parameter's ([`loose_name`]): `Page`
///   beside `page` (ASP.NET ignores case), `page[]` (Express's `qs` and PHP read arrays),
///   `+page` and `page.size` for `page_size` (PHP trims leading spaces and turns ` ` and `.`
///   into `_`);
/// - a key parameter with a `%` that starts no escape (`%zz`), which some readers (Go) drop and
///   others keep.
pub fn ambiguous_query(policy: &CachePolicy, path: &[u8]) -> bool {
    if policy.query_keys.is_empty() {
        return false;
    }
    let Some(query) = split_path(path).1 else {
        return false;
    };
    if query.contains(&b';') {
        return true;
    }
    let bad_escape = |raw: &[u8]| decode(raw).any(|u| matches!(u, Unit::Literal(b'%')));
    let mut name = Vec::new();
    query.split(|b| *b == b'&').any(|pair| {
        let (raw_name, raw_value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (pair.get(..i).unwrap_or_default(), pair.get(i + 1..)),
            None => (pair, None),
        };
        name.clear();
        canonical_component(raw_name, &mut name);
        if policy.query_keys.binary_search(&name).is_ok() {
            bad_escape(raw_name) || raw_value.is_some_and(bad_escape)
        } else {
            policy.loose_query_keys.contains(&loose_name(raw_name))
        }
    })
}

/// A query parameter's name as the most lenient readers take it: decoded (`%XX`, and `+` as a
/// space), leading spaces dropped, cut at the first `[`, spaces and dots as `_`, ASCII lower
/// case. Two names alike in this form may be one parameter to some upstream.
fn loose_name(raw: &[u8]) -> Vec<u8> {
    decode(raw)
        .map(|u| match u {
            Unit::Escaped(b) => b,
            Unit::Literal(b'+') => b' ',
            Unit::Literal(b) => b,
        })
        .skip_while(|b| *b == b' ')
        .take_while(|b| *b != b'[')
        .map(|b| match b {
            b' ' | b'.' => b'_',
            _ => b.to_ascii_lowercase(),
        })
        .collect()
}

/// The rewrite of `path` to its cache key, None when the path already is its key.
pub fn key_rewrite(
    policy: &CachePolicy,
    path: &[u8],
    header: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
) -> Option<KeyRewrite> {
    let (base, query) = split_path(path);
    let key = key_query(policy, query, header);
    let same = match query {
        None => key.is_empty(),
        Some(q) => !key.is_empty() && q == key.as_slice(),
    };
    if same {
        return None;
    }
    let mut new_path = Vec::with_capacity(base.len() + key.len() + 1);
    new_path.extend_from_slice(base);
    if !key.is_empty() {
        new_path.push(b'?');
        new_path.extend_from_slice(&key);
    }
    Some(KeyRewrite {
        path: new_path,
        stash: stash_query(query),
    })
}

fn stash_query(query: Option<&[u8]>) -> Vec<u8> {
    match query {
        None => b"-".to_vec(),
        Some(q) => {
            let mut v = Vec::with_capacity(q.len() + 1);
            v.push(b'?');
            v.extend_from_slice(q);
            v
        }
    }
}

/// The upstream role's side of [`key_rewrite`]: given the `:path` it sees (possibly rewritten
/// by Envoy's route since, in its path part only) and the [`QUERY_STASH`] value, the `:path` to
/// send upstream: the current path with the client's original query. None when the stash is
/// malformed or (with `policy`, the key's) does not normalise to the current query's
/// parameters, so a request that did not come through the main role cannot swap in a query of
/// its choosing under a key it did not earn. Without `policy` (the upstream role does not know
/// the key the main role used) the stash is not compared, and the caller must not let the
/// response be stored. The key's header entries are not compared: Envoy's route may add or
/// remove those headers on the way (`request_headers_to_remove`), and they never reach the
/// upstream's query.
pub fn restore_query(
    policy: Option<&CachePolicy>,
    current: &[u8],
    stash: &[u8],
) -> Option<Vec<u8>> {
    let original: Option<&[u8]> = match stash.split_first() {
        Some((b'-', [])) => None,
        Some((b'?', rest)) => Some(rest),
        _ => return None,
    };
    let (base, current_query) = split_path(current);
    if let Some(policy) = policy {
        let key = key_query(policy, original, &mut |_| None);
        if key.as_slice() != query_part(current_query.unwrap_or_default()) {
            return None;
        }
    }
    let mut out = Vec::with_capacity(base.len() + stash.len());
    out.extend_from_slice(base);
    if let Some(q) = original {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Directives

/// The directives of a `Cache-Control` value: lowercase names with their (unquoted) values.
fn directives(value: &[u8]) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    value.split(|b| *b == b',').filter_map(|d| {
        let d = String::from_utf8_lossy(d);
        let d = d.trim();
        if d.is_empty() {
            return None;
        }
        let (name, arg) = match d.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"').to_string())),
            None => (d, None),
        };
        Some((name.to_ascii_lowercase(), arg))
    })
}

/// Whether a client's request asks for a fresh response: `Cache-Control: max-age=0` (what
/// API Gateway documents; browsers send it on reload) or `no-cache`, or, without
/// `Cache-Control`, `Pragma: no-cache`.
pub fn asks_for_fresh(cache_control: Option<&[u8]>, pragma: Option<&[u8]>) -> bool {
    match cache_control {
        Some(cc) => directives(cc).any(|(name, arg)| match name.as_str() {
            "no-cache" => true,
            "max-age" => arg.is_some_and(|a| !a.is_empty() && a.bytes().all(|b| b == b'0')),
            _ => false,
        }),
        None => pragma.is_some_and(|p| directives(p).any(|(name, _)| name == "no-cache")),
    }
}

/// The answer to a client that asks for a fresh response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// The client did not ask.
    NotAsked,
    /// Allowed: the entry is fetched again from the upstream and replaced.
    Refresh,
    /// Not allowed, `FAIL_WITH_403`.
    Deny,
    /// Not allowed, served from the cache as usual; `warn`: with a `Warning` header.
    Ignore { warn: bool },
}

/// The invalidation decision. `may_invalidate`: the request carries a valid API key with
/// `invalidate_cache`.
pub fn invalidation(policy: &CachePolicy, asks: bool, may_invalidate: bool) -> Invalidation {
    if !asks {
        return Invalidation::NotAsked;
    }
    if !policy.require_authorization || may_invalidate {
        return Invalidation::Refresh;
    }
    match policy.unauthorized_strategy {
        UnauthorizedStrategy::FailWith403 => Invalidation::Deny,
        UnauthorizedStrategy::SucceedWithResponseHeader => Invalidation::Ignore { warn: true },
        UnauthorizedStrategy::SucceedWithoutResponseHeader => Invalidation::Ignore { warn: false },
    }
}

/// What the main role does with a forwarded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CachePlan {
    /// No route of the configuration caches: the request is left as it is.
    Off,
    /// Caching is in use, but not for this request. `shield`: add [`BYPASS_VALIDATOR`] so that
    /// Envoy's cache filter neither answers nor stores it (a GET or HEAD on a route without
    /// caching); otherwise the cache filter already leaves it alone.
    Bypass { shield: bool },
    /// Through the cache: rewrite `:path` to the key (when it differs), drop the client's
    /// `Cache-Control` and `Pragma`, and send `Cache-Control: no-cache` when `refresh`.
    Lookup {
        rewrite: Option<KeyRewrite>,
        refresh: bool,
        /// Add [`UNAUTHORIZED_WARNING`] to the response.
        warn: bool,
    },
}

// ---------------------------------------------------------------------------------------------
// Responses

/// Statuses whose responses are stored (with the TTL); 304 refreshes a stored entry after a
/// validation. Errors and 206 (partial content) are never stored.
pub fn is_storable_status(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 304 | 308)
}

/// What the upstream role tells Envoy's cache filter about a response to a cached request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The upstream said `no-store` or `private`: its `Cache-Control` stays as it is (the cache
    /// filter does not store such responses).
    UpstreamRefused,
    /// `Cache-Control: max-age=<ttl>` for the cache filter.
    Store(u32),
    /// `Cache-Control: no-store` for the cache filter: the status is not one to store, or the
    /// response sets a cookie (one client's cookie must never be served to another).
    DoNotStore,
}

impl Storage {
    /// The `Cache-Control` the cache filter sees, None to leave the upstream's.
    pub fn cache_control(self) -> Option<String> {
        match self {
            Storage::UpstreamRefused => None,
            Storage::Store(ttl) => Some(format!("max-age={ttl}")),
            Storage::DoNotStore => Some("no-store".to_string()),
        }
    }
}

/// The storage decision for a response: `cache_control` is the upstream's (every value, joined
/// with `,`).
pub fn storage(
    ttl_s: u32,
    status: u16,
    cache_control: Option<&[u8]>,
    sets_cookie: bool,
) -> Storage {
    let refused = cache_control
        .is_some_and(|cc| directives(cc).any(|(n, _)| n == "no-store" || n == "private"));
    if refused {
        Storage::UpstreamRefused
    } else if !is_storable_status(status) || sets_cookie {
        Storage::DoNotStore
    } else {
        Storage::Store(ttl_s.clamp(1, MAX_TTL_S))
    }
}

/// The entity tag the upstream role gives a 304 that must not be stored (it sets a cookie, or
/// is not to be stored by its `Cache-Control`). Envoy's cache filter merges a 304 into the
/// stale entry it revalidated and stores the result unless the 304 carries an entity tag
/// other than the entry's, which this one never is (`token` is the request's own); the main
/// role gives the client the real one back ([`ETAG_STASH`]).
pub fn unmatched_etag(token: &[u8]) -> Vec<u8> {
    let mut tag = b"\"tollgate-".to_vec();
    tag.extend_from_slice(token);
    tag.push(b'"');
    tag
}

/// An HTTP `Date` value (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`) for Unix seconds.
///
/// The upstream role dates every response it lets the cache store with the gateway's clock:
/// Envoy's cache filter computes an entry's age from `Date`, so an upstream whose clock is behind
/// would make entries stale early, and a response without `Date` is never served from the cache
/// at all (measured with Envoy 1.40).
pub fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    let (days, in_day) = crate::calendar::split_unix_seconds(secs);
    let (year, month, day) = crate::calendar::civil_from_days(days);
    let weekday = usize::try_from(crate::calendar::weekday_from_days(days)).unwrap_or(0);
    let month_name = usize::try_from(month.saturating_sub(1))
        .ok()
        .and_then(|m| MONTHS.get(m))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} GMT",
        DAYS.get(weekday).copied().unwrap_or("Mon"),
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// The [`CONTROL_STASH`] (or [`ETAG_STASH`]) value for a header's value, None when absent.
pub fn stash(original: Option<&[u8]>) -> Vec<u8> {
    match original {
        None => b"-".to_vec(),
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 1);
            out.push(b'=');
            out.extend_from_slice(v);
            out
        }
    }
}

/// The header's value from a [`CONTROL_STASH`] (or [`ETAG_STASH`]) value: Some(None) when it
/// was absent, None when the stash is malformed.
pub fn unstash(stash: &[u8]) -> Option<Option<&[u8]>> {
    match stash.split_first() {
        Some((b'-', [])) => Some(None),
        Some((b'=', rest)) => Some(Some(rest)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Hit or miss

/// `$context.cacheStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served by Envoy's cache without calling the upstream.
    Hit,
    /// Looked up and fetched from the upstream (including refreshes and revalidations).
    Miss,
    /// Forwarded without the cache.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// Names a list of query key parameters (sorted, canonical): the first 64 bits of the SHA-256
/// of the names, each followed by a NUL (canonical names never hold one).
pub fn query_keys_id(query_keys: &[Vec<u8>]) -> u64 {
    let mut joined = Vec::new();
    for name in query_keys {
        joined.extend_from_slice(name);
        joined.push(0);
    }
    let digest = crate::keys::sha256(&joined);
    let mut first = [0u8; 8];
    for (to, from) in first.iter_mut().zip(digest.iter()) {
        *to = *from;
    }
    u64::from_be_bytes(first)
}

/// A request's [`MARKER`], as the main role writes it: `<token> <ttl> <query id>`. The
/// route's TTL and the [`CachePolicy::query_id`] of its key parameters travel with the request
/// rather than the route's index: the upstream role's configuration may list the routes
/// differently (a push reaches the listener and the cluster at different moments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker<'a> {
    pub token: &'a [u8],
    pub ttl_s: u32,
    pub query_id: u64,
}

/// The request's [`MARKER`] value.
pub fn marker(token: &str, policy: &CachePolicy) -> String {
    let mut out = String::with_capacity(token.len() + 22);
    out.push_str(token);
    out.push(' ');
    let mut digits = [0; 20];
    out.push_str(
        std::str::from_utf8(crate::access_log::decimal(
            u64::from(policy.ttl_s),
            &mut digits,
        ))
        .unwrap_or("0"),
    );
    out.push(' ');
    for shift in (0..16).rev() {
        let nibble = (policy.query_id >> (shift * 4)) & 0xf;
        out.push(char::from(
            LOWER_HEX.get(nibble as usize).copied().unwrap_or(b'0'),
        ));
    }
    out
}

const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// Reads a request's [`MARKER`]; None when malformed (the TTL must be 1 to [`MAX_TTL_S`], the
/// query id 16 hex digits).
pub fn parse_marker(value: &[u8]) -> Option<Marker<'_>> {
    let mut parts = value.split(|b| *b == b' ');
    let (token, ttl, id) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if token.is_empty() || parts.next().is_some() || !digits(ttl) || ttl.len() > 4 {
        return None;
    }
    if id.len() != 16 || !id.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let ttl_s = ttl.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let mut query_id = 0u64;
    for b in id {
        query_id = query_id << 4 | u64::from(hex_value(*b)?);
    }
    (1..=MAX_TTL_S).contains(&ttl_s).then_some(Marker {
        token,
        ttl_s,
        query_id,
    })
}

/// Hit or miss for a looked-up request, from the token the response carries: the request's own
/// token means the upstream answered this request; another one means the response was stored
/// for an earlier request. No token: the upstream role did not see the response (Envoy answered
/// itself, or the upstream role is not installed), so it is not a hit.
pub fn classify(own_token: &[u8], response_token: Option<&[u8]>) -> CacheStatus {
    match response_token {
        Some(t) if t != own_token => CacheStatus::Hit,
        _ => CacheStatus::Miss,
    }
}

#[cfg(test)]
mod tests;

/// Sorts and de-duplicates a short configuration list (an insertion sort: the lists are a few
/// names long, and this keeps the general-purpose sort out of the module).
fn sort_dedup<T: Ord>(items: &mut Vec<T>) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && items.get(j - 1) > items.get(j) {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
    items.dedup();
}
