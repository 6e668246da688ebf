//! Caching glue for both roles (docs/CACHING.md): the main role applies the pipeline's
//! [`CachePlan`] to the request and tells hit from miss on the response; the upstream role, an
//! upstream HTTP filter of the cluster, gives the upstream the request the client sent and tells
//! Envoy's cache filter how long to keep the response. The policy is in [`crate::cache`].

use std::cell::Cell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::observe::Observation;
use super::Runtime;
use crate::cache::{self, CachePlan, CacheStatus};
use crate::config::Config;
use crate::gateway::Decision;
use crate::header_pairs::HeaderPairs;
use crate::host;

thread_local! {
    /// Random per VM instance (from the host's random source), so that tokens of different
    /// workers never collide.
    static TOKEN_SEED: u64 = host::random_u64();
    static TOKEN_COUNTER: Cell<u64> = const { Cell::new(0) };
    /// The once-per-VM warning about responses without the upstream role's token.
    static WARNED_NO_UPSTREAM_ROLE: Cell<bool> = const { Cell::new(false) };
    /// The once-per-VM warning about a cache key this configuration does not have.
    static WARNED_UNKNOWN_KEY: Cell<bool> = const { Cell::new(false) };
}

/// A token no other request of this Envoy carries: a per-VM random seed plus a counter through
/// an odd multiplier (a bijection, so the counter never repeats a token).
fn new_token() -> String {
    let n = TOKEN_COUNTER.with(|c| {
        let n = c.get().wrapping_add(1);
        c.set(n);
        n
    });
    let seed = TOKEN_SEED.with(|s| *s);
    format!(
        "{:016x}",
        seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    )
}

/// What the main role did with a request, for its response.
#[derive(Debug, Default)]
pub enum CacheState {
    /// Caching is not in use, or the filter answered itself.
    #[default]
    Off,
    /// Forwarded around the cache.
    Bypass,
    /// Sent through the cache with this token.
    Lookup {
        token: String,
        /// Add the unauthorized-invalidation `Warning`.
        warn: bool,
    },
}

/// Whether a request may carry any of tollgate's internal request headers (which only
/// tollgate may set): told from the request's header map in one pass, no host call. A map that
/// could not be read may carry anything.
pub fn carries_internal_headers(headers: &HeaderPairs) -> bool {
    headers.empty_or_any_of(&cache::INTERNAL_REQUEST_HEADERS)
}

/// The main role, request headers of a forwarded request: applies the pipeline's cache plan.
/// `end_of_stream`: the request has no body (Envoy's cache filter ignores requests with one).
/// `forged`: the client sent tollgate's internal headers ([`carries_internal_headers`]).
pub fn on_request(
    cfg: &Config,
    decision: &Decision,
    end_of_stream: bool,
    forged: bool,
    obs: &mut Observation,
) -> CacheState {
    // Anti cache poisoning: only tollgate sets its internal headers, whether or not this
    // configuration caches: the cluster's upstream role may (a push reaches the listener and
    // the cluster apart, or an operator turned caching off here only), and it acts on a marker.
    if forged {
        for name in cache::INTERNAL_REQUEST_HEADERS {
            host::remove_request_header(name);
        }
    }
    if !cfg.caching {
        return CacheState::Off;
    }
    let (rewrite, refresh, warn) = match &decision.cache {
        CachePlan::Lookup {
            rewrite,
            refresh,
            warn,
        } if end_of_stream => (rewrite, *refresh, *warn),
        CachePlan::Bypass { shield: true } if end_of_stream => {
            host::set_request_header("if-none-match", cache::BYPASS_VALIDATOR.as_bytes());
            obs.set_cache_status(CacheStatus::Bypass.as_str());
            return CacheState::Bypass;
        }
        CachePlan::Off => return CacheState::Off,
        _ => {
            obs.set_cache_status(CacheStatus::Bypass.as_str());
            return CacheState::Bypass;
        }
    };
    // The client's directives are the gateway's to interpret (contract, "Cache"): Envoy's cache
    // filter sees `no-cache` for an allowed refresh and nothing otherwise.
    host::remove_request_header("cache-control");
    host::remove_request_header("pragma");
    if refresh {
        host::set_request_header("cache-control", b"no-cache");
    }
    // The plan is Lookup only for a route with a policy.
    let Some(policy) = cfg.route(decision.route).cache.as_ref() else {
        return CacheState::Off;
    };
    if let Some(rw) = rewrite {
        host::set_request_header(":path", &rw.path);
        host::set_request_header(cache::QUERY_STASH, &rw.stash);
    }
    let token = new_token();
    host::set_request_header(cache::MARKER, cache::marker(&token, policy).as_bytes());
    CacheState::Lookup { token, warn }
}

/// Response headers [`on_response`] may write on a looked-up request (besides removing
/// tollgate's internal ones): a later writer must not take them for absent.
pub const WRITTEN_RESPONSE_HEADERS: [&str; 3] = ["cache-control", "warning", "etag"];

/// The main role, response headers (not of its own replies): hit or miss, the upstream's
/// `Cache-Control` back, internal headers out. `headers`: the response headers, when the
/// filter has read them already (read here otherwise).
pub fn on_response(
    cfg: &Config,
    state: &CacheState,
    obs: &mut Observation,
    headers: Option<&HeaderPairs>,
) {
    match state {
        // Nothing to undo: no marker went upstream (a client's was removed), so no upstream
        // role stamped the response. (An entry stored while this configuration cached may still
        // carry the upstream's stashed `Cache-Control`; a scan of every response for that case
        // would cost each request about 1,000 instructions.)
        CacheState::Off => {}
        CacheState::Bypass => remove_internal_response_headers(headers),
        CacheState::Lookup { token, warn } => {
            let read;
            let headers = match headers {
                Some(h) => h,
                None => {
                    read = host::response_headers();
                    &read
                }
            };
            let find = |name: &str| headers.get(name);
            let echoed = find(cache::MARKER);
            let status = cache::classify(token.as_bytes(), echoed);
            obs.set_cache_status(status.as_str());
            if echoed.is_none() {
                warn_without_upstream_role(cfg, find(":status"));
            } else {
                host::remove_response_header(cache::MARKER);
            }
            // The upstream's own Cache-Control, and the entity tag of a 304 kept out of the
            // entry, go back.
            for (stash, name) in [
                (cache::CONTROL_STASH, "cache-control"),
                (cache::ETAG_STASH, "etag"),
            ] {
                if let Some(value) = find(stash) {
                    match cache::unstash(value) {
                        Some(Some(v)) => host::set_response_header_bytes(name, v),
                        Some(None) => host::remove_response_header(name),
                        None => {}
                    }
                    host::remove_response_header(stash);
                }
            }
            if *warn {
                host::add_response_header("warning", cache::UNAUTHORIZED_WARNING);
            }
        }
    }
}

/// Removes tollgate's internal response headers: all of them (a host call each) unless the map
/// was read and holds none of them (one pass over it).
fn remove_internal_response_headers(headers: Option<&HeaderPairs>) {
    if headers.is_none_or(|h| h.empty_or_any_of(&cache::INTERNAL_RESPONSE_HEADERS)) {
        for name in cache::INTERNAL_RESPONSE_HEADERS {
            host::remove_response_header(name);
        }
    }
}

/// A successful response to a looked-up request came back without the upstream role's token:
/// most likely the cluster lacks the upstream role, so nothing is cached. Said once per VM.
fn warn_without_upstream_role(cfg: &Config, status: Option<&[u8]>) {
    if !status.is_some_and(|s| s.starts_with(b"2")) || WARNED_NO_UPSTREAM_ROLE.replace(true) {
        return;
    }
    host::log(
        LogLevel::Warn,
        &format!(
            "tollgate: stage {}: a cached route's response did not pass tollgate's upstream role; install it (root_id \"{}\") as an upstream HTTP filter of the cluster, or nothing is cached (docs/CACHING.md)",
            cfg.stage,
            super::UPSTREAM_ROOT_ID
        ),
    );
}

/// A request came marked with key parameters no route of this configuration caches by: the
/// two roles' `cache` sections differ (for a moment during a push, or for good). Said once per
/// VM.
fn warn_unknown_key(cfg: &Config) {
    if WARNED_UNKNOWN_KEY.replace(true) {
        return;
    }
    host::log(
        LogLevel::Warn,
        &format!(
            "tollgate: stage {}: upstream role: a cached request's marker is unreadable or its key parameters are in no cache section of this configuration; such responses reach the client with the query it sent but are not stored (give both roles the same module and `cache` sections, docs/CACHING.md)",
            cfg.stage
        ),
    );
}

/// The upstream role: an upstream HTTP filter of a cached cluster, with the same configuration as
/// the main role.
pub struct Upstream {
    rt: Rc<Runtime>,
    /// The main role's token and the route's TTL (None: the response must not be stored), for
    /// a request that went through the cache.
    lookup: Option<(Vec<u8>, Option<u32>)>,
    /// The entity tag of the entry Envoy's cache filter revalidates (its `If-None-Match`).
    validator: Option<Vec<u8>>,
}

impl Upstream {
    pub fn new(rt: Rc<Runtime>) -> Self {
        Upstream {
            rt,
            lookup: None,
            validator: None,
        }
    }
}

impl Context for Upstream {
    super::sdk::context_helpers!();
}

impl HttpContext for Upstream {
    super::sdk::http_helpers!();

    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let cfg = &self.rt.config;
        // A marked request is handled even when this configuration caches nothing: the main
        // role's may (a push reaches the listener and the cluster apart).
        let Some(marker) = host::request_header(cache::MARKER) else {
            if host::request_header("if-none-match").as_deref()
                == Some(cache::BYPASS_VALIDATOR.as_bytes())
            {
                host::remove_request_header("if-none-match");
            }
            return Action::Continue;
        };
        host::remove_request_header(cache::MARKER);
        let stash = host::request_header(cache::QUERY_STASH);
        if stash.is_some() {
            host::remove_request_header(cache::QUERY_STASH);
        }
        // A marker this module cannot read (another version's, during an upgrade) is handled
        // as an unknown key: the client's query goes back, nothing is stored.
        let parsed = cache::parse_marker(&marker);
        let token = match parsed {
            Some(m) => m.token,
            None => marker.split(|b| *b == b' ').next().unwrap_or_default(),
        };
        // The route's key parameters, found by what they are rather than where the route is:
        // the main role's configuration may differ from this one for a while during a push.
        let policy = parsed.and_then(|m| cfg.cache_policies().find(|p| p.query_id == m.query_id));
        if policy.is_none() {
            warn_unknown_key(cfg);
        }
        if let Some(stash) = stash {
            let current = host::request_header(":path").unwrap_or_default();
            match cache::restore_query(policy, &current, &stash) {
                Some(path) => host::set_request_header(":path", &path),
                None => host::log(
                    LogLevel::Warn,
                    "tollgate: upstream role: the stashed query does not match the cache key; the request goes on with the key's query",
                ),
            }
        }
        // The TTL the request carries, at most the longest this configuration gives that key
        // (a marker from around the main role cannot keep a response longer). An unknown key's
        // response goes back to the client but is not stored (None): nothing here vouches that
        // the key matches the query the upstream answered.
        let ttl_s = parsed.and_then(|m| {
            let longest = cfg
                .cache_policies()
                .filter(|p| p.query_id == m.query_id)
                .map(|p| p.ttl_s)
                .max()?;
            Some(m.ttl_s.min(longest))
        });
        self.lookup = Some((token.to_vec(), ttl_s));
        // A client's own validators send its request around the cache (the main role): one here
        // is the cache filter's, revalidating a stale entry.
        self.validator = host::request_header("if-none-match");
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some((token, ttl_s)) = &self.lookup else {
            return Action::Continue;
        };
        let headers = host::response_headers();
        let mut status = 0u16;
        let mut control: Option<Vec<u8>> = None;
        let mut sets_cookie = false;
        let mut has_age = false;
        let mut etag = None;
        for (name, value) in headers.iter() {
            if name.eq_ignore_ascii_case(b":status") {
                status = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if name.eq_ignore_ascii_case(b"cache-control") {
                match &mut control {
                    Some(c) => {
                        c.extend_from_slice(b", ");
                        c.extend_from_slice(value);
                    }
                    None => control = Some(value.to_vec()),
                }
            } else if name.eq_ignore_ascii_case(b"set-cookie") {
                sets_cookie = true;
            } else if name.eq_ignore_ascii_case(b"age") {
                has_age = true;
            } else if name.eq_ignore_ascii_case(b"etag") {
                etag = Some(value);
            } else if let Some(n) = cache::INTERNAL_RESPONSE_HEADERS
                .iter()
                .find(|n| name.eq_ignore_ascii_case(n.as_bytes()))
            {
                // An upstream may not speak for tollgate.
                host::remove_response_header(n);
            }
        }
        let storage = match ttl_s {
            Some(ttl_s) => cache::storage(*ttl_s, status, control.as_deref(), sets_cookie),
            None => cache::Storage::DoNotStore,
        };
        if let cache::Storage::Store(_) = storage {
            host::set_response_header("date", &cache::http_date(host::now_ns() / 1_000_000_000));
            // The route's TTL counts from now: an upstream that is itself a cache sends how old
            // its copy is, and Envoy's cache would count that age against the TTL.
            if has_age {
                host::remove_response_header("age");
            }
        }
        let cc = storage.cache_control();
        // A 304 without a Cache-Control of its own leaves the entry's in place (RFC 9111
        // 4.3.4): the entry's stash, merged in by the cache filter, stays the client's. One with
        // its own (`private` included, which the cache filter sees as it is) is the client's,
        // not the entry's that the merge would fill in.
        let keep = if status == 304 {
            control.is_some()
        } else {
            cc.is_some()
        };
        if keep {
            host::set_response_header_bytes(
                cache::CONTROL_STASH,
                &cache::stash(control.as_deref()),
            );
        }
        if let Some(cc) = cc {
            host::set_response_header("cache-control", &cc);
        }
        // A 304 revalidates the stale entry, and Envoy's cache filter stores the two merged
        // whatever the 304's Cache-Control says: one that must not be stored (a cookie set for
        // this client) gets an entity tag other than the entry's, which keeps the entry as it
        // was. The client gets the tag it would have had: the 304's, else the entry's.
        if status == 304 && !matches!(storage, cache::Storage::Store(_)) {
            let tag = etag.or(self.validator.as_deref());
            host::set_response_header_bytes(cache::ETAG_STASH, &cache::stash(tag));
            host::set_response_header_bytes("etag", &cache::unmatched_etag(token));
        }
        host::set_response_header_bytes(cache::MARKER, token);
        Action::Continue
    }
}
