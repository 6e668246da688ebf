//! CORS: compile the `cors` configuration section once, then decide preflights and decorate
//! actual responses. A pure decision module: no I/O, no proxy-wasm, no panics on any input bytes.
//!
//! Decisions this module takes (the contract leaves them open):
//!
//! * **Origins.** An `allow_origins` entry is `*`, `null`, an exact origin
//!   `scheme://host[:port]` or a subdomain wildcard `scheme://*.host[:port]`. Schemes are `http`
//!   or `https`; scheme and host are case-insensitive (stored lower-cased); default ports are
//!   normalised away (`https://a.com:443` is `https://a.com`). A wildcard matches subdomains of any
//!   depth but never the apex, and needs a base of at least two labels (`*.com` is refused) unless
//!   the base is `localhost`. IPv6 literals are written as browsers serialise them (`[::1]`).
//! * **`null`** matches only when `null` is listed literally; `*` does not cover it. With `*` and
//!   `null` both listed, a `null` origin gets `Access-Control-Allow-Origin: null` (and `Vary`).
//! * **`*`** answers `Access-Control-Allow-Origin: *` to every well-formed non-`null` origin, of any
//!   scheme (`chrome-extension://…` included). An absent Origin still gets no CORS headers.
//! * **Malformed request origins** (not `scheme://host[:port]`, a path, userinfo, whitespace, a
//!   comma from a repeated header, non-ASCII bytes, a trailing dot, a port outside 1..=65535 or
//!   with leading zeros, more than [`MAX_ORIGIN_LEN`] bytes) are never allowed.
//! * **Methods** are case-sensitive tokens. Following the Fetch standard's CORS-preflight check,
//!   the CORS-safelisted methods `GET`, `HEAD` and `POST` always pass a preflight (the browser
//!   accepts them whatever the answer lists, and actual requests are not filtered by method);
//!   any other requested method must be listed, or `*` configured. Because Fetch upper-cases
//!   `delete`, `get`, `head`, `options`, `post` and `put`, writing them in lower case is a config
//!   error (no browser can send them that way).
//! * **Headers** are case-insensitive tokens, stored lower-cased. No request header is allowed
//!   implicitly: browsers list only CORS-unsafe headers in `Access-Control-Request-Headers`, so
//!   e.g. `content-type` must be listed for JSON bodies. With `*` configured, the preflight answer
//!   echoes the requested header names (so `authorization`, which a literal `*` does not cover in
//!   browsers, works too), or `*` when none were requested.
//! * **`*` with `allow_credentials: true`** is an error wherever it appears (`allow_origins`,
//!   `allow_methods`, `allow_headers`, `expose_headers`): browsers do not treat it as a wildcard
//!   for credentialed requests.
//! * **`max_age`** is 0..=86400 seconds (browsers cap it lower still); absent means no
//!   `Access-Control-Max-Age` header (browser default, 5 s).
//! * **Private Network Access**: a preflight carrying `Access-Control-Request-Private-Network:
//!   true` is denied unless `allow_private_network` is on; when on, it gets
//!   `Access-Control-Allow-Private-Network: true`, and the preflight `Vary` also names
//!   `Access-Control-Request-Private-Network`.
//! * Duplicate entries in any list are dropped silently.

use std::borrow::Cow;

use crate::config::reader::item;
use crate::error::{comma_list, FieldError};
use crate::token::{is_token, split_once_str};

/// Longest Origin value considered; longer ones are malformed (and refused in configuration).
pub const MAX_ORIGIN_LEN: usize = 1024;

/// Largest accepted `max_age`, in seconds (24 hours).
pub const MAX_MAX_AGE: u32 = 86_400;

/// The most header names a preflight may ask for: browsers ask for the request's headers that
/// are not CORS-safelisted, a handful; a client that sends thousands (60 KiB of
/// `Access-Control-Request-Headers`) is denied after this many, not checked name by name.
pub const MAX_REQUESTED_HEADERS: usize = 128;

pub const ALLOW_ORIGIN: &str = "access-control-allow-origin";
pub const ALLOW_CREDENTIALS: &str = "access-control-allow-credentials";
pub const EXPOSE_HEADERS: &str = "access-control-expose-headers";
pub const ALLOW_METHODS: &str = "access-control-allow-methods";
pub const ALLOW_HEADERS: &str = "access-control-allow-headers";
pub const MAX_AGE: &str = "access-control-max-age";
pub const ALLOW_PRIVATE_NETWORK: &str = "access-control-allow-private-network";
pub const VARY: &str = "vary";

/// Names of all CORS response headers the filter owns; upstream copies are to be stripped so that
/// the filter's values replace them rather than duplicate them.
pub const CORS_RESPONSE_HEADERS: &[&str] = &[
    ALLOW_ORIGIN,
    ALLOW_CREDENTIALS,
    EXPOSE_HEADERS,
    ALLOW_METHODS,
    ALLOW_HEADERS,
    MAX_AGE,
    ALLOW_PRIVATE_NETWORK,
];

/// `Vary` of a preflight answer.
pub const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// `Vary` of a preflight answer when `allow_private_network` is on.
pub const PREFLIGHT_VARY_PRIVATE_NETWORK: &str = "Origin, Access-Control-Request-Method, \
     Access-Control-Request-Headers, Access-Control-Request-Private-Network";

/// Methods a browser accepts after any successful preflight (Fetch: CORS-safelisted methods).
pub const SAFELISTED_METHODS: &[&[u8]] = &[b"GET", b"HEAD", b"POST"];

/// Methods Fetch normalises to upper case; their lower-case spellings can never be requested.
const NORMALISED_METHODS: &[&str] = &["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"];

const STAR_WITH_CREDENTIALS: &str =
    "`*` cannot be combined with allow_credentials: true (browsers reject it)";

/// The `cors` section as parsed from the configuration, before validation.
#[derive(Debug, Clone, Copy)]
pub struct CorsSpec<'a> {
    /// Origins allowed to read responses; must not be empty. See the module docs for the forms.
    pub allow_origins: &'a [String],
    /// Methods a preflight may ask for; empty means the CORS-safelisted ones (`GET, HEAD, POST`).
    /// `*` (any method) only without credentials.
    pub allow_methods: &'a [String],
    /// Request header names a preflight may ask for; empty means none. `*` (any header) only
    /// without credentials.
    pub allow_headers: &'a [String],
    /// Response header names exposed to scripts; empty means no `Access-Control-Expose-Headers`.
    pub expose_headers: &'a [String],
    /// `Access-Control-Max-Age` in seconds, 0..=86400; `None` sends no header.
    pub max_age: Option<u32>,
    /// Send `Access-Control-Allow-Credentials: true`; forbids every `*`.
    pub allow_credentials: bool,
    /// Allow Private Network Access preflights (`Access-Control-Allow-Private-Network: true`).
    pub allow_private_network: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    #[cfg(test)]
    fn as_bytes(self) -> &'static [u8] {
        match self {
            Scheme::Http => b"http",
            Scheme::Https => b"https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl OriginRule {
    /// What the rules are sorted by: kind, scheme and port packed in a number, then the host
    /// or base.
    fn key(&self) -> (u32, &[u8]) {
        let (kind, scheme, port, name) = match self {
            OriginRule::Exact { scheme, host, port } => (0, scheme, port, host),
            OriginRule::Subdomain { scheme, base, port } => (1, scheme, port, base),
        };
        (Self::packed(kind, *scheme, *port), name.as_bytes())
    }

    fn packed(kind: u32, scheme: Scheme, port: Option<u16>) -> u32 {
        kind << 18 | (scheme as u32) << 17 | port.map_or(0, |p| u32::from(p) + 1)
    }
}

/// One compiled origin rule; hosts are lower-case, ports are `None` for the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    Exact {
        scheme: Scheme,
        host: String,
        port: Option<u16>,
    },
    /// Any host ending in `.` + `base` (at least one more label).
    Subdomain {
        scheme: Scheme,
        base: String,
        port: Option<u16>,
    },
}

/// A compiled, validated CORS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    any_origin: bool,
    allow_null: bool,
    /// Sorted by [`OriginRule::key`], exact rules first.
    rules: Vec<OriginRule>,
    /// Where the subdomain rules start in `rules`.
    subdomain_rules_from: usize,
    any_method: bool,
    methods: Vec<String>,
    any_header: bool,
    headers: Vec<String>,
    allow_credentials: bool,
    allow_private_network: bool,
    expose_headers_value: Option<String>,
    max_age_value: Option<String>,
}

/// The CORS request headers of a preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`), as raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preflight<'a> {
    /// `Origin`.
    pub origin: &'a [u8],
    /// `Access-Control-Request-Method`.
    pub request_method: &'a [u8],
    /// `Access-Control-Request-Headers`, if sent (several header lines joined with `,`).
    pub request_headers: Option<&'a [u8]>,
    /// `Access-Control-Request-Private-Network: true` was sent.
    pub request_private_network: bool,
}

/// The answer to a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreflightDecision {
    /// Answer 204 with exactly these headers (lower-case names; `vary` included).
    Allowed(Vec<(&'static str, String)>),
    /// Answer 403 with no `Access-Control-Allow-*` headers.
    Denied,
}

/// What an actual (non-preflight) response from an allowed origin gets: the part that depends
/// on the request. [`CorsPolicy::actual_headers`] gives the headers, with the policy's own
/// values borrowed (no copies per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualCors {
    /// The value of `Access-Control-Allow-Origin`: `*`, or the request's origin echoed.
    pub allow_origin: Cow<'static, str>,
    /// True when `Access-Control-Allow-Origin` echoes the origin (it is not `*`): the caller must
    /// then add `Origin` to the response's `Vary` with [`merge_vary`].
    pub vary_origin: bool,
}

/// A syntactically valid request origin; `port` is `None` for absent or the default port of
/// `http`/`https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OriginRef<'a> {
    scheme: &'a [u8],
    host: &'a [u8],
    port: Option<u16>,
}

/// How the request's origin relates to the policy.
enum OriginMatch {
    /// Answer `Access-Control-Allow-Origin: *`.
    Star,
    /// Echo the origin as sent.
    Echo,
}

impl CorsPolicy {
    /// Validates and compiles. Errors carry a path relative to the `cors` section, e.g.
    /// `allow_origins[2]`, with a message saying what is wrong.
    pub fn compile(spec: &CorsSpec) -> Result<CorsPolicy, FieldError> {
        let credentials = spec.allow_credentials;

        if spec.allow_origins.is_empty() {
            return Err(FieldError::new(
                "allow_origins",
                "must list at least one origin",
            ));
        }
        let mut any_origin = false;
        let mut allow_null = false;
        let mut rules: Vec<OriginRule> = Vec::new();
        for (i, entry) in spec.allow_origins.iter().enumerate() {
            let path = item("", "allow_origins", i);
            match compile_origin(entry, credentials) {
                Ok(OriginEntry::Any) => {
                    if credentials {
                        return Err(FieldError::new(path, STAR_WITH_CREDENTIALS));
                    }
                    any_origin = true;
                }
                Ok(OriginEntry::Null) => {
                    if credentials {
                        return Err(FieldError::new(path, NULL_WITH_CREDENTIALS));
                    }
                    allow_null = true;
                }
                Ok(OriginEntry::Rule(rule)) => rules.push(rule),
                Err(message) => return Err(FieldError::new(path, message)),
            }
        }

        let mut any_method = false;
        let mut methods: Vec<String> = Vec::new();
        for (i, m) in spec.allow_methods.iter().enumerate() {
            let path = item("", "allow_methods", i);
            if m == "*" {
                if credentials {
                    return Err(FieldError::new(path, STAR_WITH_CREDENTIALS));
                }
                any_method = true;
            } else {
                check_method(m).map_err(|msg| FieldError::new(path, msg))?;
            }
            if !methods.contains(m) {
                methods.push(m.clone());
            }
        }
        methods.retain(|m| m != "*");

        let (any_header, headers) =
            compile_header_names(spec.allow_headers, "allow_headers", credentials)?;
        let (_, expose) = compile_header_names(spec.expose_headers, "expose_headers", credentials)?;
        let expose_headers_value = if expose.is_empty() {
            None
        } else {
            Some(comma_list(expose.iter().map(String::as_str)))
        };

        let max_age_value = match spec.max_age {
            Some(s) if s > MAX_MAX_AGE => {
                return Err(FieldError::new(
                    "max_age",
                    format!(
                    "must be at most {MAX_MAX_AGE} seconds (24 hours); browsers cap it lower still"
                ),
                ))
            }
            // As a u64: its to_string is linked anyway, u32's would be another ~300 bytes.
            Some(s) => Some(u64::from(s).to_string()),
            None => None,
        };

        // Sorted: a preflight's requested names are looked up by binary search.
        let mut headers = headers;
        headers.retain(|h| h != "*");
        crate::sort::heapsort(&mut headers, |a, b| a < b);

        // Sorted: a request's origin is looked up by binary search (an entry listed twice
        // stays twice; removing repeats would cost the module 400 bytes for nothing a lookup
        // notices).
        crate::sort::heapsort(&mut rules, |a, b| a.key() < b.key());
        let subdomain_rules_from = rules.partition_point(|r| matches!(r, OriginRule::Exact { .. }));

        Ok(CorsPolicy {
            any_origin,
            allow_null,
            rules,
            subdomain_rules_from,
            any_method,
            methods,
            any_header,
            headers,
            allow_credentials: credentials,
            allow_private_network: spec.allow_private_network,
            expose_headers_value,
            max_age_value,
        })
    }

    /// True when `origin` (an `Origin` header value) is allowed. Never allocates.
    pub fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.match_origin(origin).is_some()
    }

    fn match_origin(&self, origin: &[u8]) -> Option<OriginMatch> {
        if origin == b"null" {
            return self.allow_null.then_some(OriginMatch::Echo);
        }
        let parsed = parse_origin(origin)?;
        if self.any_origin {
            return Some(OriginMatch::Star);
        }
        let scheme = if parsed.scheme.eq_ignore_ascii_case(b"https") {
            Scheme::Https
        } else if parsed.scheme.eq_ignore_ascii_case(b"http") {
            Scheme::Http
        } else {
            return None;
        };
        let port = parsed.port;
        // The host in lower case, as the rules hold theirs: browsers send it so; another
        // client's is copied to the stack (an origin is at most MAX_ORIGIN_LEN bytes).
        let allowed = if parsed.host.iter().any(u8::is_ascii_uppercase) {
            let mut lower = [0u8; MAX_ORIGIN_LEN];
            let host = lower.get_mut(..parsed.host.len())?;
            host.copy_from_slice(parsed.host);
            host.make_ascii_lowercase();
            self.listed(scheme, port, host)
        } else {
            self.listed(scheme, port, parsed.host)
        };
        allowed.then_some(OriginMatch::Echo)
    }

    /// Whether an origin of `scheme`, `port` and `host` (in lower case) is listed. The rules
    /// are sorted by kind, scheme, port and name: an exact rule for the host, or a subdomain
    /// rule for what follows one of its dots (with a label before it: a host is
    /// `<one or more labels>.<base>` of a rule `*.<base>`), is a binary search each. So an
    /// origin costs the same against 3 entries or 10,000 (multi-tenant lists), and the origin
    /// of no entry, which any client can send, too.
    fn listed(&self, scheme: Scheme, port: Option<u16>, host: &[u8]) -> bool {
        let (exact, subdomain) = self
            .rules
            .split_at_checked(self.subdomain_rules_from)
            .unwrap_or_default();
        let found = |rules: &[OriginRule], kind: u32, name: &[u8]| {
            let key = (OriginRule::packed(kind, scheme, port), name);
            rules.binary_search_by(|rule| rule.key().cmp(&key)).is_ok()
        };
        found(exact, 0, host)
            || (!subdomain.is_empty()
                && (host.iter().enumerate())
                    .filter(|&(at, &b)| b == b'.' && at > 0)
                    .any(|(at, _)| found(subdomain, 1, host.get(at + 1..).unwrap_or_default())))
    }

    /// The value of `Access-Control-Allow-Origin` for `origin` and whether it echoes the origin,
    /// or `None` when not allowed.
    fn allow_origin_value(&self, origin: &[u8]) -> Option<(Cow<'static, str>, bool)> {
        match self.match_origin(origin)? {
            OriginMatch::Star => Some((Cow::Borrowed("*"), false)),
            // A matched origin is ASCII, so this conversion always succeeds.
            OriginMatch::Echo => std::str::from_utf8(origin)
                .ok()
                .map(|s| (Cow::Owned(s.to_string()), true)),
        }
    }

    /// Preflight decision: `Allowed` when the origin, the requested method, every requested
    /// header and (if asked) private network access are allowed; `Denied` otherwise.
    /// Deciding allocates nothing; only an allowed preflight builds its answer's headers.
    pub fn preflight(&self, req: &Preflight<'_>) -> PreflightDecision {
        let acao = match self.admitted(req) {
            Some(OriginMatch::Star) => "*".to_string(),
            // A matched origin is ASCII, so this conversion always succeeds.
            Some(OriginMatch::Echo) => match std::str::from_utf8(req.origin) {
                Ok(s) => s.to_string(),
                Err(_) => return PreflightDecision::Denied,
            },
            None => return PreflightDecision::Denied,
        };

        let mut out: Vec<(&'static str, String)> = Vec::with_capacity(7);
        out.push((ALLOW_ORIGIN, acao));
        if self.allow_credentials {
            out.push((ALLOW_CREDENTIALS, "true".to_string()));
        }
        // The method and the headers asked about, not the policy's lists: browsers cache a
        // preflight's answer per origin and URL, and use each method and header it names for
        // any request to that URL, which may be another route's with another policy (or with
        // CORS off). A method or header this preflight was not asked about is not its to
        // allow.
        out.push((
            ALLOW_METHODS,
            String::from_utf8_lossy(req.request_method).into_owned(),
        ));
        let echoed = req
            .request_headers
            .map(echo_header_names)
            .unwrap_or_default();
        if !echoed.is_empty() {
            out.push((ALLOW_HEADERS, echoed));
        }
        if req.request_private_network {
            out.push((ALLOW_PRIVATE_NETWORK, "true".to_string()));
        }
        if let Some(v) = &self.max_age_value {
            out.push((MAX_AGE, v.clone()));
        }
        out.push((VARY, self.preflight_vary().to_string()));
        PreflightDecision::Allowed(out)
    }

    /// Whether [`CorsPolicy::preflight`] would allow `req`; builds nothing.
    pub fn admits(&self, req: &Preflight<'_>) -> bool {
        self.admitted(req).is_some()
    }

    /// How the origin of a preflight matched, when origin, method, every requested header and
    /// private network access are allowed.
    fn admitted(&self, req: &Preflight<'_>) -> Option<OriginMatch> {
        if !self.method_allowed(req.request_method)
            || req
                .request_headers
                .is_some_and(|raw| !self.request_headers_allowed(raw))
            || (req.request_private_network && !self.allow_private_network)
        {
            return None;
        }
        self.match_origin(req.origin)
    }

    /// The `Vary` value of this policy's preflight answers.
    pub fn preflight_vary(&self) -> &'static str {
        if self.allow_private_network {
            PREFLIGHT_VARY_PRIVATE_NETWORK
        } else {
            PREFLIGHT_VARY
        }
    }

    /// Headers for an actual (non-preflight) response, or `None` when the origin is absent or not
    /// allowed (the response then gets no CORS headers). Since the answer depends on `Origin`, a
    /// caller wanting shared caches to stay correct adds `Vary: Origin` to every response that
    /// does not carry `Access-Control-Allow-Origin: *`, including those where this is `None`.
    pub fn actual(&self, origin: Option<&[u8]>) -> Option<ActualCors> {
        let (allow_origin, vary_origin) = self.allow_origin_value(origin?)?;
        Some(ActualCors {
            allow_origin,
            vary_origin,
        })
    }

    /// The headers of an actual response that [`CorsPolicy::actual`] allowed: to set, replacing
    /// any upstream value (strip the other [`CORS_RESPONSE_HEADERS`]).
    /// `Access-Control-Allow-Origin`, then `-Allow-Credentials` and `-Expose-Headers` when the
    /// policy has them. `Vary` is not among them: see [`ActualCors::vary_origin`].
    pub fn actual_headers<'a>(
        &'a self,
        actual: &'a ActualCors,
    ) -> impl Iterator<Item = (&'static str, &'a str)> + Clone + 'a {
        [
            Some((ALLOW_ORIGIN, &*actual.allow_origin)),
            self.allow_credentials
                .then_some((ALLOW_CREDENTIALS, "true")),
            self.expose_headers_value
                .as_deref()
                .map(|v| (EXPOSE_HEADERS, v)),
        ]
        .into_iter()
        .flatten()
    }

    fn method_allowed(&self, method: &[u8]) -> bool {
        if !is_token(method) {
            return false;
        }
        self.any_method
            || SAFELISTED_METHODS.contains(&method)
            || self.methods.iter().any(|m| m.as_bytes() == method)
    }

    fn request_headers_allowed(&self, raw: &[u8]) -> bool {
        let mut names = 0;
        list_elements(raw).all(|name| {
            names += 1;
            names <= MAX_REQUESTED_HEADERS && is_token(name) && self.header_allowed(name)
        })
    }

    /// `name` (any case) is in `allow_headers`: a binary search of the sorted lower-case
    /// names, so a preflight asking for many names against a long list stays cheap.
    fn header_allowed(&self, name: &[u8]) -> bool {
        self.any_header
            || self
                .headers
                .binary_search_by(|h| cmp_lowered(h.as_bytes(), name))
                .is_ok()
    }
}

impl CorsPolicy {
    /// Whether a preflight may ask for request header `name` (`allow_headers`).
    pub fn allows_header(&self, name: &str) -> bool {
        self.header_allowed(name.as_bytes())
    }

    /// Whether credentialed requests may read responses (`allow_credentials`).
    pub fn allows_credentials(&self) -> bool {
        self.allow_credentials
    }
}

/// Makes an allowed preflight's answer one browsers do not cache (`Access-Control-Max-Age: 0`;
/// without the header they would keep it for 5 s).
pub fn expire_at_once(answer: &mut Vec<(&'static str, String)>) {
    match answer.iter_mut().find(|(n, _)| *n == MAX_AGE) {
        Some(entry) => entry.1 = "0".to_string(),
        None => answer.push((MAX_AGE, "0".to_string())),
    }
}

/// True for `OPTIONS` (case-sensitive, as HTTP methods are) with both `Origin` and
/// `Access-Control-Request-Method` present.
pub fn is_preflight(method: &[u8], has_origin: bool, has_request_method: bool) -> bool {
    method == b"OPTIONS" && has_origin && has_request_method
}

/// Merge tokens into an existing `Vary` (its values, one per header line, in order) without
/// duplicates (case-insensitive; the first spelling is kept), giving `a, b, c`. `*` (existing
/// or added) wins: the result is then `*`. `add` entries may themselves be comma-separated
/// lists. Existing elements that are not header-name tokens are dropped. The result is empty
/// only when there is nothing to vary on.
pub fn merge_vary<'a, V: AsRef<[u8]> + ?Sized + 'a>(
    existing: impl IntoIterator<Item = &'a V>,
    add: &[&'a str],
) -> String {
    let mut out = String::new();
    let existing_elems = existing
        .into_iter()
        .flat_map(|line| list_elements(line.as_ref()));
    let added_elems = add.iter().flat_map(|a| list_elements(a.as_bytes()));
    for elem in existing_elems.chain(added_elems) {
        if elem == b"*" {
            return "*".to_string();
        }
        if !is_token(elem) {
            continue;
        }
        let Ok(name) = std::str::from_utf8(elem) else {
            continue;
        };
        // `out` holds tokens joined by ", ": the names are what lies between the commas.
        let dup = !out.is_empty()
            && out
                .split(',')
                .any(|have| have.trim_start_matches(' ').eq_ignore_ascii_case(name));
        if !dup {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(name);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Configuration parsing

enum OriginEntry {
    Any,
    Null,
    Rule(OriginRule),
}

const NULL_WITH_CREDENTIALS: &str = "`null` cannot be combined with allow_credentials: true: any site can send `Origin: null` (from a sandboxed iframe), so every site could read credentialed responses";

/// Public suffixes under which anyone can publish a site (shared hosting, and second-level
/// country domains): a subdomain wildcard on one of them, with credentials, would let any
/// such site read credentialed responses. A curated subset of the Public Suffix List
/// (publicsuffix.org), not all of it: docs/CORS.md says so.
const SHARED_SUFFIXES: &str = "\
    amazonaws.com s3.amazonaws.com elasticbeanstalk.com cloudfront.net azurewebsites.net \
    azurestaticapps.net azureedge.net cloudapp.net appspot.com web.app firebaseapp.com \
    run.app cloudfunctions.net github.io githubusercontent.com gitlab.io bitbucket.io \
    pages.dev workers.dev trycloudflare.com vercel.app now.sh netlify.app herokuapp.com \
    onrender.com fly.dev railway.app up.railway.app deno.dev glitch.me repl.co replit.app \
    surge.sh readthedocs.io ngrok.io ngrok-free.app ngrok.app blogspot.com myshopify.com \
    wixsite.com web.core.windows.net blob.core.windows.net storage.googleapis.com co.uk \
    org.uk me.uk ltd.uk plc.uk net.uk ac.uk gov.uk com.au net.au org.au co.nz net.nz org.nz \
    co.jp ne.jp or.jp co.kr or.kr com.br net.br org.br com.cn net.cn org.cn com.hk com.tw \
    com.sg com.my co.in net.in org.in co.za org.za com.mx com.ar com.tr co.il com.ua com.pl \
    co.id com.ph com.vn com.co com.pe com.eg com.sa co.th com.ng com.pk";

/// An IPv6 address as the WHATWG URL standard serialises it: lower-case hex groups without
/// leading zeros, the first longest run of two or more zero groups as `::`.
fn ipv6_serialized(groups: &[u16; 8]) -> String {
    // The first longest run of zero groups, if two or more long (else none: length 1).
    let mut best = (8, 1);
    let mut at = 0;
    while at < 8 {
        let len = groups.iter().skip(at).take_while(|g| **g == 0).count();
        if len > best.1 {
            best = (at, len);
        }
        at += len.max(1);
    }
    let mut out = String::with_capacity(39);
    let mut at = 0;
    while at < 8 {
        if at == best.0 {
            out.push_str("::");
            at += best.1;
            continue;
        }
        if !out.is_empty() && !out.ends_with(':') {
            out.push(':');
        }
        // Lower-case hex without leading zeros.
        let g = groups.get(at).copied().unwrap_or(0);
        let digits = (16 - g.leading_zeros()).div_ceil(4).max(1);
        for d in (0..digits).rev() {
            out.push(char::from_digit(u32::from(g >> (d * 4)) & 0xf, 16).unwrap_or('0'));
        }
        at += 1;
    }
    out
}

const ORIGIN_FORM: &str =
    "must be `*`, `null` or an origin of the form scheme://host[:port], such as `https://app.example.com`";
const WILDCARD_FORM: &str =
    "a wildcard is only allowed as the whole first label, as in `https://*.example.com`";

fn compile_origin(entry: &str, credentials: bool) -> Result<OriginEntry, String> {
    if entry.is_empty() {
        return Err("must not be empty".to_string());
    }
    if entry == "*" {
        return Ok(OriginEntry::Any);
    }
    if entry == "null" {
        return Ok(OriginEntry::Null);
    }
    if entry.len() > MAX_ORIGIN_LEN {
        return Err(format!("is too long (at most {MAX_ORIGIN_LEN} bytes)"));
    }
    if !entry.is_ascii() {
        return Err(
            "must be ASCII: write an internationalised host name in its punycode form (`xn--…`)"
                .to_string(),
        );
    }
    if entry
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err("must not contain whitespace or control characters".to_string());
    }
    if entry.eq_ignore_ascii_case("null") {
        return Err("write `null` in lower case, as browsers send it".to_string());
    }
    let Some((scheme, rest)) = split_once_str(entry, "://") else {
        return Err(ORIGIN_FORM.to_string());
    };
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else {
        return Err(format!(
            "scheme `{scheme}` is not supported: use `http` or `https`"
        ));
    };
    if rest.contains('@') {
        return Err("must not contain user info (`user@`)".to_string());
    }
    if rest.contains('?') || rest.contains('#') {
        return Err("must not have a query or fragment".to_string());
    }
    if rest.contains('/') {
        return Err(
            "must not have a path, not even a trailing `/` (an origin is scheme://host[:port])"
                .to_string(),
        );
    }
    if rest.is_empty() {
        return Err("is missing a host".to_string());
    }
    let (wildcard, authority) = match rest.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    if authority.contains('*') {
        return Err(WILDCARD_FORM.to_string());
    }
    let Some((host, port)) = split_host_port(authority.as_bytes()) else {
        return Err(ORIGIN_FORM.to_string());
    };
    let port = match port {
        None => None,
        Some(p) => match parse_port(p) {
            Some(p) => Some(p),
            None => {
                return Err(
                    "port must be a number from 1 to 65535, without leading zeros".to_string(),
                )
            }
        },
    };
    let port = port.filter(|&p| p != scheme.default_port());
    let host_str = String::from_utf8_lossy(host).to_ascii_lowercase();
    if host.first() == Some(&b'[') {
        if wildcard {
            return Err("a wildcard cannot be combined with an IP address".to_string());
        }
        let groups = host_str
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .filter(|_| is_ipv6_literal(host))
            .and_then(crate::gateway::ipv6_groups);
        let Some(groups) = groups else {
            return Err(format!(
                "host `{host_str}` is not a valid IPv6 address literal"
            ));
        };
        // Browsers send the address in one spelling (WHATWG URL: the longest run of zero
        // groups as `::`, lower-case hex without leading zeros, no dotted IPv4 part); any
        // other would never match.
        let canonical = ipv6_serialized(&groups);
        if host_str.get(1..host_str.len().saturating_sub(1)) != Some(canonical.as_str()) {
            return Err(format!(
                "host `{host_str}` is not written as browsers send it: write `[{canonical}]`"
            ));
        }
    } else if host.is_empty() {
        return Err("is missing a host".to_string());
    } else if !is_reg_name(host) {
        return Err(format!(
            "host `{host_str}` is not a valid host name (dot-separated labels of letters, digits, `-` and `_`, no trailing dot)"
        ));
    }
    // A host whose last label is a number is an IPv4 address to browsers (WHATWG URL), which
    // send it as four decimal numbers: no wildcard can mean anything under it, and any other
    // spelling (`127.1`, `0x7f.0.0.1`) would never match.
    let hb = host_str.as_bytes();
    let last = hb
        .iter()
        .rposition(|b| *b == b'.')
        .and_then(|i| hb.get(i + 1..))
        .unwrap_or(hb);
    let ends_in_number = match last {
        [b'0', b'x', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        digits => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
    };
    if ends_in_number {
        if wildcard {
            return Err("a wildcard cannot be combined with an IP address".to_string());
        }
        if !is_dotted_quad(&host_str) {
            return Err(format!(
                "host `{host_str}` is an IPv4 address as browsers read it: write it as they send it, four decimal numbers a.b.c.d"
            ));
        }
    }
    if wildcard {
        if !host_str.contains('.') && host_str != "localhost" {
            return Err(format!(
                "`*.{host_str}` would match every site under a top-level domain: name at least two labels, as in `https://*.example.com`"
            ));
        }
        if credentials && SHARED_SUFFIXES.split(' ').any(|x| x == host_str) {
            return Err(format!(
                "`*.{host_str}` with allow_credentials: true would let anyone who can publish a site under {host_str} read credentialed responses: list your own sites there one by one"
            ));
        }
        return Ok(OriginEntry::Rule(OriginRule::Subdomain {
            scheme,
            base: host_str,
            port,
        }));
    }
    Ok(OriginEntry::Rule(OriginRule::Exact {
        scheme,
        host: host_str,
        port,
    }))
}

/// Four decimal numbers from 0 to 255 without leading zeros, dot-separated: how browsers
/// serialize an IPv4 host.
fn is_dotted_quad(host: &str) -> bool {
    let mut parts = 0;
    let all = host.split('.').all(|p| {
        parts += 1;
        !p.is_empty()
            && p.len() <= 3
            && p.bytes().all(|b| b.is_ascii_digit())
            && (p == "0" || !p.starts_with('0'))
            && p.parse::<u16>().is_ok_and(|n| n <= 255)
    });
    all && parts == 4
}

fn check_method(m: &str) -> Result<(), String> {
    if m.is_empty() {
        return Err("must not be empty".to_string());
    }
    if !is_token(m.as_bytes()) {
        return Err(format!(
            "`{m}` is not a valid HTTP method (a token such as `GET` or `PATCH`)"
        ));
    }
    if let Some(upper) = NORMALISED_METHODS
        .iter()
        .find(|n| n.eq_ignore_ascii_case(m) && **n != m)
    {
        return Err(format!(
            "write `{upper}`: methods are case-sensitive and browsers always send `{upper}` in upper case"
        ));
    }
    Ok(())
}

/// Validates a list of header names. Returns whether `*` is listed, and the names lower-cased and
/// de-duplicated in their configured order (`*` included).
fn compile_header_names(
    names: &[String],
    field: &str,
    credentials: bool,
) -> Result<(bool, Vec<String>), FieldError> {
    let mut any = false;
    let mut out: Vec<String> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let path = item("", field, i);
        if name.is_empty() {
            return Err(FieldError::new(path, "must not be empty"));
        }
        if name == "*" {
            if credentials {
                return Err(FieldError::new(path, STAR_WITH_CREDENTIALS));
            }
            any = true;
        } else if !is_token(name.as_bytes()) {
            return Err(FieldError::new(
                path,
                format!("`{name}` is not a valid header name (a token such as `x-request-id`)"),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok((any, out))
}

// ---------------------------------------------------------------------------------------------
// Request-side parsing: never allocates, never panics.

/// Parses a serialised origin `scheme://host[:port]`.
fn parse_origin(bytes: &[u8]) -> Option<OriginRef<'_>> {
    if bytes.is_empty() || bytes.len() > MAX_ORIGIN_LEN {
        return None;
    }
    let sep = bytes.windows(3).position(|w| w == b"://")?;
    let (scheme, rest) = bytes.split_at_checked(sep)?;
    let authority = rest.get(3..)?;
    if !is_scheme(scheme) {
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    let valid_host = if host.first() == Some(&b'[') {
        is_ipv6_literal(host)
    } else {
        is_reg_name(host)
    };
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    let default = if scheme.eq_ignore_ascii_case(b"https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case(b"http") {
        Some(80)
    } else {
        None
    };
    let port = port.filter(|p| Some(*p) != default);
    Some(OriginRef { scheme, host, port })
}

/// Splits `host[:port]` (host possibly a bracketed IPv6 literal). Does not validate either part.
fn split_host_port(authority: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    if authority.first() == Some(&b'[') {
        let close = authority.iter().position(|&b| b == b']')?;
        let (host, after) = authority.split_at_checked(close.checked_add(1)?)?;
        match after {
            [] => Some((host, None)),
            [b':', port @ ..] => Some((host, Some(port))),
            _ => None,
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            None => Some((authority, None)),
            Some(i) => {
                let (host, after) = authority.split_at_checked(i)?;
                Some((host, Some(after.get(1..)?)))
            }
        }
    }
}

/// A rule against an origin, one by one: the reference the sorted lookup is tested against.
#[cfg(test)]
fn rule_matches(rule: &OriginRule, o: &OriginRef<'_>) -> bool {
    match rule {
        OriginRule::Exact { scheme, host, port } => {
            *port == o.port
                && o.scheme.eq_ignore_ascii_case(scheme.as_bytes())
                && o.host.eq_ignore_ascii_case(host.as_bytes())
        }
        OriginRule::Subdomain { scheme, base, port } => {
            *port == o.port
                && o.scheme.eq_ignore_ascii_case(scheme.as_bytes())
                && is_subdomain_of(o.host, base.as_bytes())
        }
    }
}

/// `host` is `<one or more labels>.<base>`. `host` is a validated reg-name, so the part before
/// the dot is a non-empty label sequence.
#[cfg(test)]
fn is_subdomain_of(host: &[u8], base: &[u8]) -> bool {
    let Some(prefix_len) = host.len().checked_sub(base.len()) else {
        return false;
    };
    if prefix_len < 2 {
        return false;
    }
    let Some((prefix, suffix)) = host.split_at_checked(prefix_len) else {
        return false;
    };
    prefix.last() == Some(&b'.') && suffix.eq_ignore_ascii_case(base)
}

/// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn is_scheme(s: &[u8]) -> bool {
    match s.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphabetic()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        }
        None => false,
    }
}

/// Dot-separated, non-empty labels of ASCII letters, digits, `-` and `_`.
fn is_reg_name(host: &[u8]) -> bool {
    !host.is_empty()
        && host.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `[` hex digits, `:` and `.` (at least one `:`) `]`.
fn is_ipv6_literal(host: &[u8]) -> bool {
    match host {
        [b'[', inner @ .., b']'] => {
            inner.contains(&b':')
                && inner
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        _ => false,
    }
}

/// 1..=65535, decimal, no sign, no leading zeros.
fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || p.first() == Some(&b'0') {
        return None;
    }
    let mut n: u32 = 0;
    for &b in p {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u32::from(b - b'0');
    }
    u16::try_from(n).ok().filter(|&n| n != 0)
}

/// Elements of a comma-separated header list, trimmed of optional whitespace (SP, HTAB), empty
/// elements skipped.
fn list_elements(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Compares `lower` with `name` lower-cased, byte by byte.
fn cmp_lowered(lower: &[u8], name: &[u8]) -> std::cmp::Ordering {
    for (i, &a) in lower.iter().enumerate() {
        match name.get(i) {
            None => return std::cmp::Ordering::Greater,
            Some(b) if a != b.to_ascii_lowercase() => return a.cmp(&b.to_ascii_lowercase()),
            Some(_) => {}
        }
    }
    lower.len().cmp(&name.len())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The requested header names, lower-cased and joined with `, ` (already validated as tokens).
fn echo_header_names(raw: &[u8]) -> String {
    let mut out = String::new();
    for name in list_elements(raw) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.extend(name.iter().map(|b| char::from(b.to_ascii_lowercase())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    struct Cfg {
        origins: Vec<String>,
        methods: Vec<String>,
        headers: Vec<String>,
        expose: Vec<String>,
        max_age: Option<u32>,
        credentials: bool,
        private_network: bool,
    }

    impl Cfg {
        fn new(origins: &[&str]) -> Self {
            Cfg {
                origins: strings(origins),
                methods: Vec::new(),
                headers: Vec::new(),
                expose: Vec::new(),
                max_age: None,
                credentials: false,
                private_network: false,
            }
        }
        fn methods(mut self, m: &[&str]) -> Self {
            self.methods = strings(m);
            self
        }
        fn headers(mut self, h: &[&str]) -> Self {
            self.headers = strings(h);
            self
        }
        fn expose(mut self, h: &[&str]) -> Self {
            self.expose = strings(h);
            self
        }
        fn max_age(mut self, s: u32) -> Self {
            self.max_age = Some(s);
            self
        }
        fn credentials(mut self) -> Self {
            self.credentials = true;
            self
        }
        fn private_network(mut self) -> Self {
            self.private_network = true;
            self
        }
        fn compile(&self) -> Result<CorsPolicy, FieldError> {
            CorsPolicy::compile(&CorsSpec {
                allow_origins: &self.origins,
                allow_methods: &self.methods,
                allow_headers: &self.headers,
                expose_headers: &self.expose,
                max_age: self.max_age,
                allow_credentials: self.credentials,
                allow_private_network: self.private_network,
            })
        }
        fn policy(&self) -> CorsPolicy {
            self.compile().unwrap()
        }
        fn err(&self) -> FieldError {
            self.compile().unwrap_err()
        }
    }

    /// A small deterministic generator (xorshift), so the random lists repeat.
    struct Rng(u64);
    impl Rng {
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            from[(self.0 % from.len() as u64) as usize]
        }
    }

    #[test]
    fn the_sorted_lookup_allows_what_the_rules_one_by_one_allow() {
        // Random lists of exact and subdomain entries over a few schemes, hosts and ports, and
        // random origins (upper case, default ports spelt out, look-alikes, IP literals, a
        // leading dot) against the lookup and against every rule in turn.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let schemes = ["http://", "https://"];
        let hosts = [
            "a.com",
            "b.a.com",
            "x.b.a.com",
            "a.co",
            "com",
            "b.c",
            "c.b.c",
        ];
        let ports = ["", ":80", ":443", ":8080"];
        let mut allowed = 0;
        for _ in 0..2000 {
            let mut entries = Vec::new();
            for _ in 0..rng
                .pick(&["0", "1", "3", "8", "20"])
                .parse::<usize>()
                .unwrap()
            {
                let host = match rng.pick(&["", "", "*."]) {
                    "" => rng.pick(&hosts).to_string(),
                    // A wildcard names at least two labels.
                    _ => format!(
                        "*.{}",
                        rng.pick(&["a.com", "b.a.com", "x.b.a.com", "c.b.c"])
                    ),
                };
                let e = format!("{}{host}{}", rng.pick(&schemes), rng.pick(&ports));
                entries.push(e);
            }
            entries.push("https://only.example".to_string());
            let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
            let p = match Cfg::new(&refs).compile() {
                Ok(p) => p,
                Err(e) => panic!("{entries:?}: {e}"),
            };
            for _ in 0..40 {
                let origin = format!(
                    "{}{}{}{}",
                    rng.pick(&["http://", "https://", "HTTPS://", "ftp://"]),
                    rng.pick(&["", "", "q.", "X.", "q.r.", "."]),
                    rng.pick(&[
                        "a.com",
                        "B.A.com",
                        "x.b.a.com",
                        "a.co",
                        "com",
                        "b.c",
                        "1.2.3.4",
                        "[::1]",
                        "a.com."
                    ]),
                    rng.pick(&ports)
                );
                let by_rules = parse_origin(origin.as_bytes())
                    .is_some_and(|o| p.rules.iter().any(|r| rule_matches(r, &o)));
                assert_eq!(
                    p.origin_allowed(origin.as_bytes()),
                    by_rules,
                    "{origin} against {entries:?}"
                );
                allowed += usize::from(by_rules);
            }
        }
        assert!(allowed > 2_000, "{allowed}");
    }

    #[test]
    fn the_header_lookup_allows_what_the_list_name_by_name_allows() {
        // Random allow_headers lists (mixed case, repeats, prefixes of each other) and random
        // requested names against the sorted lookup and against the list read name by name.
        let names = [
            "x-a",
            "X-A",
            "x-ab",
            "x-a-b",
            "content-type",
            "Content-Type",
            "x",
            "y-",
            "x-api-key",
        ];
        let asked = [
            "x-a",
            "X-AB",
            "x-a-",
            "x",
            "X",
            "content-TYPE",
            "y-",
            "y",
            "x-api-keys",
            "x-api-key",
            "-",
            "x-aa",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut allowed = 0;
        for round in 0..2_000 {
            let list: Vec<&str> = (0..round % 12).map(|_| rng.pick(&names)).collect();
            let p = Cfg::new(&["https://a.com"]).headers(&list).policy();
            assert!(
                p.headers.windows(2).all(|w| w[0] <= w[1]),
                "{:?}",
                p.headers
            );
            for _ in 0..20 {
                let name = rng.pick(&asked);
                let by_list = list.iter().any(|h| h.eq_ignore_ascii_case(name));
                assert_eq!(p.allows_header(name), by_list, "{name} against {list:?}");
                allowed += usize::from(by_list);
            }
        }
        assert!(allowed > 5_000, "{allowed}");
    }

    fn policy(origins: &[&str]) -> CorsPolicy {
        Cfg::new(origins).policy()
    }

    fn acao(p: &CorsPolicy, origin: &[u8]) -> Option<String> {
        p.actual(Some(origin)).map(|a| {
            p.actual_headers(&a)
                .find(|(n, _)| *n == ALLOW_ORIGIN)
                .map(|(_, v)| v.to_string())
                .unwrap()
        })
    }

    /// The actual-response headers for `origin`, owned.
    fn actual(p: &CorsPolicy, origin: &[u8]) -> Vec<(&'static str, String)> {
        let a = p.actual(Some(origin)).unwrap();
        p.actual_headers(&a)
            .map(|(n, v)| (n, v.to_string()))
            .collect()
    }

    #[test]
    fn a_preflight_may_ask_for_at_most_128_header_names() {
        let o = b"https://a.com".as_slice();
        for p in [
            Cfg::new(&["https://a.com"])
                .headers(&["x-a", "x-b"])
                .policy(),
            Cfg::new(&["https://a.com"]).headers(&["*"]).policy(),
        ] {
            // Pairs of names: 64 pairs are 128 names, the most a preflight may ask for.
            for pairs in [1, 63, 64, 65, 4000] {
                let asked = vec!["x-a, X-B"; pairs].join(", ");
                let req = pf(o, b"POST", Some(asked.as_bytes()));
                let allowed = p.preflight(&req) != PreflightDecision::Denied;
                assert_eq!(allowed, 2 * pairs <= MAX_REQUESTED_HEADERS, "{pairs} pairs");
            }
            let ok = vec!["x-a"; 128].join(",");
            assert_ne!(
                p.preflight(&pf(o, b"POST", Some(ok.as_bytes()))),
                PreflightDecision::Denied
            );
            let over = vec!["x-a"; 129].join(",");
            assert_eq!(
                p.preflight(&pf(o, b"POST", Some(over.as_bytes()))),
                PreflightDecision::Denied
            );
            // Empty elements are not names.
            let sparse = format!("{ok},,, ,");
            assert_ne!(
                p.preflight(&pf(o, b"POST", Some(sparse.as_bytes()))),
                PreflightDecision::Denied
            );
        }
    }

    fn pf<'a>(origin: &'a [u8], method: &'a [u8], headers: Option<&'a [u8]>) -> Preflight<'a> {
        Preflight {
            origin,
            request_method: method,
            request_headers: headers,
            request_private_network: false,
        }
    }

    fn allowed(d: PreflightDecision) -> Vec<(&'static str, String)> {
        match d {
            PreflightDecision::Allowed(h) => h,
            PreflightDecision::Denied => panic!("expected Allowed"),
        }
    }

    fn header<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    // ---- configuration ------------------------------------------------------------------

    #[test]
    fn empty_origins_is_an_error() {
        let e = Cfg::new(&[]).err();
        assert_eq!(e.path, "allow_origins");
        assert_eq!(e.message, "must list at least one origin");
        assert_eq!(
            e.within("cors").to_string(),
            "cors.allow_origins: must list at least one origin"
        );
    }

    #[test]
    fn null_with_credentials_is_an_error() {
        let e = Cfg::new(&["https://a.com", "null"]).credentials().err();
        assert_eq!(e.path, "allow_origins[1]");
        assert!(e.message.contains("sandboxed iframe"), "{e}");
        // Without credentials `null` may be listed (CORS.md: only if you mean it).
        assert!(policy(&["https://a.com", "null"]).origin_allowed(b"null"));
    }

    #[test]
    fn a_wildcard_on_a_shared_suffix_with_credentials_is_an_error() {
        for base in ["github.io", "vercel.app", "co.uk", "CO.UK", "herokuapp.com"] {
            let entry = format!("https://*.{base}");
            let e = Cfg::new(&["https://a.com", &entry]).credentials().err();
            assert_eq!(e.path, "allow_origins[1]", "{base}");
            assert!(e.message.contains("list your own sites"), "{e}");
            // Without credentials no worse than `*`, which is allowed.
            assert!(
                policy(&[&entry]).origin_allowed(b"https://x.github.io") || base != "github.io"
            );
        }
        // A user's own subdomain there is theirs to list.
        let p = Cfg::new(&["https://*.alice.github.io", "https://*.example.co.uk"])
            .credentials()
            .policy();
        assert!(p.origin_allowed(b"https://docs.alice.github.io"));
        assert!(!p.origin_allowed(b"https://mallory.github.io"));
    }

    #[test]
    fn ipv6_origins_are_written_as_browsers_send_them() {
        for (entry, canonical) in [
            ("http://[0:0:0:0:0:0:0:1]:8080", "[::1]"),
            ("http://[::ffff:127.0.0.1]", "[::ffff:7f00:1]"),
            ("http://[2001:db8:0:0:1:0:0:1]", "[2001:db8::1:0:0:1]"),
            ("http://[2001:0db8::1]", "[2001:db8::1]"),
            ("http://[1::2:3:4:5:6:7]", "[1:0:2:3:4:5:6:7]"),
        ] {
            let e = Cfg::new(&[entry]).err();
            assert!(
                e.message.contains(&format!("write `{canonical}`")),
                "{entry}: {e}"
            );
        }
        for entry in [
            "http://[::1::2]",
            "http://[:]",
            "http://[1:2:3:4:5:6:7:8:9]",
        ] {
            let e = Cfg::new(&[entry]).err();
            assert!(e.message.contains("not a valid IPv6"), "{entry}: {e}");
        }
        for entry in [
            "http://[::1]:8080",
            "http://[::]",
            "http://[2001:db8::1:0:0:1]",
            "http://[1::]",
            "http://[1:0:0:2::3]",
            "http://[1:2:3:4:5:6:7:8]",
            "http://[::ffff:7f00:1]",
            "http://[2001:DB8::1]", // (case does not matter: matching ignores it)
        ] {
            let p = policy(&[entry]);
            assert!(p.origin_allowed(entry.as_bytes()), "{entry}");
        }
    }

    #[test]
    fn star_with_credentials_is_an_error() {
        let e = Cfg::new(&["https://a.com", "*"]).credentials().err();
        assert_eq!(e.path, "allow_origins[1]");
        assert!(e.message.contains("allow_credentials: true"), "{e}");
        assert!(e.message.contains("`*`"), "{e}");

        let e = Cfg::new(&["https://a.com"])
            .methods(&["GET", "*"])
            .credentials()
            .err();
        assert_eq!(e.path, "allow_methods[1]");
        let e = Cfg::new(&["https://a.com"])
            .headers(&["*"])
            .credentials()
            .err();
        assert_eq!(e.path, "allow_headers[0]");
        let e = Cfg::new(&["https://a.com"])
            .expose(&["x-a", "*"])
            .credentials()
            .err();
        assert_eq!(e.path, "expose_headers[1]");

        // Without credentials all of them are fine.
        Cfg::new(&["*"])
            .methods(&["*"])
            .headers(&["*"])
            .expose(&["*"])
            .policy();
    }

    #[test]
    fn origin_entries_are_validated() {
        let bad: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("app.example.com", "scheme://host[:port]"),
            ("ftp://a.com", "scheme `ftp`"),
            ("ws://a.com", "use `http` or `https`"),
            ("https://a.com/", "trailing `/`"),
            ("https://a.com/path", "must not have a path"),
            ("https://a.com?x=1", "query"),
            ("https://a.com#f", "fragment"),
            ("https://user@a.com", "user info"),
            ("https://user:pw@a.com", "user info"),
            ("https://", "missing a host"),
            ("https://:443", "missing a host"),
            ("https://a.com:0", "port"),
            ("https://a.com:65536", "port"),
            ("https://a.com:99999999", "port"),
            ("https://a.com:", "port"),
            ("https://a.com:08080", "leading zeros"),
            ("https://a.com:-1", "port"),
            ("https://a.com:80:90", "port"),
            ("https://*", "wildcard"),
            ("https://*example.com", "wildcard"),
            ("https://a.*.example.com", "wildcard"),
            ("https://*.*.example.com", "wildcard"),
            ("https://app.*", "wildcard"),
            ("*.example.com", "scheme://host[:port]"),
            ("https://*.com", "top-level domain"),
            ("https://*.[::1]", "IP address"),
            ("http://*.0.0.1", "IP address"),
            ("http://*.example.0x7f", "IP address"),
            ("http://127.1", "four decimal numbers"),
            ("http://127.0.0.01", "four decimal numbers"),
            ("http://0x7f.0.0.1", "four decimal numbers"),
            ("http://1.2.3.256", "four decimal numbers"),
            ("http://1.2.3.4.5", "four decimal numbers"),
            ("http://example.123", "four decimal numbers"),
            ("https://a..com", "not a valid host name"),
            ("https://a.com.", "not a valid host name"),
            ("https://.a.com", "not a valid host name"),
            ("https://a,b.com", "not a valid host name"),
            ("https://[zz::1]", "IPv6"),
            ("https://[::1", "scheme://host[:port]"),
            ("https://bücher.de", "punycode"),
            ("https://a .com", "whitespace"),
            (" https://a.com", "whitespace"),
            ("https://a.com\n", "whitespace"),
            ("NULL", "lower case"),
        ];
        for (i, (entry, needle)) in bad.iter().enumerate() {
            let e = Cfg::new(&["https://ok.com", entry]).err();
            assert_eq!(e.path, "allow_origins[1]", "entry {i}: {entry:?}");
            assert!(
                e.message.contains(needle),
                "entry {entry:?}: message {:?} lacks {needle:?}",
                e.message
            );
        }
        let long = format!("https://{}.com", "a".repeat(MAX_ORIGIN_LEN));
        assert!(Cfg::new(&[&long]).err().message.contains("too long"));
    }

    #[test]
    fn good_origin_entries_compile() {
        let p = policy(&[
            "https://app.example.com",
            "http://localhost:3000",
            "https://*.example.com",
            "HTTPS://UPPER.Example.COM:443",
            "http://127.0.0.1:8080",
            "http://0.0.0.0",
            "http://10.255.0.9",
            "http://1.example.com",
            "http://example.0a",
            "http://[::1]:8080",
            "https://*.localhost",
            "null",
            "https://app.example.com", // listed twice: no harm
        ]);
        assert!(p.origin_allowed(b"https://upper.example.com"));
        assert!(p.origin_allowed(b"http://[::1]:8080"));
        assert!(p.origin_allowed(b"http://10.255.0.9"));
        assert!(p.origin_allowed(b"http://127.0.0.1:8080"));
        assert!(p.origin_allowed(b"https://dev.localhost"));
        assert!(p.origin_allowed(b"null"));
        assert_eq!(p.rules.len(), 12);
        assert!(p.origin_allowed(b"https://app.example.com"));
    }

    #[test]
    fn methods_are_validated() {
        let e = Cfg::new(&["*"]).methods(&["GET", "GE T"]).err();
        assert_eq!(e.path, "allow_methods[1]");
        assert!(e.message.contains("not a valid HTTP method"));
        let e = Cfg::new(&["*"]).methods(&[""]).err();
        assert_eq!(e.path, "allow_methods[0]");
        let e = Cfg::new(&["*"]).methods(&["put"]).err();
        assert!(e.message.contains("write `PUT`"), "{e}");
        let e = Cfg::new(&["*"]).methods(&["Delete"]).err();
        assert!(e.message.contains("write `DELETE`"), "{e}");
        // PATCH is not normalised by browsers, so `patch` is a distinct, legal method.
        Cfg::new(&["*"])
            .methods(&["patch", "PATCH", "PROPFIND"])
            .policy();
    }

    #[test]
    fn headers_are_validated_and_lowercased() {
        let e = Cfg::new(&["*"]).headers(&["content-type", "x y"]).err();
        assert_eq!(e.path, "allow_headers[1]");
        assert!(e.message.contains("not a valid header name"));
        let e = Cfg::new(&["*"]).headers(&["x:y"]).err();
        assert_eq!(e.path, "allow_headers[0]");
        let e = Cfg::new(&["*"]).expose(&[""]).err();
        assert_eq!(e.path, "expose_headers[0]");
        let e = Cfg::new(&["*"]).expose(&["x-é"]).err();
        assert_eq!(e.path, "expose_headers[0]");

        let p = Cfg::new(&["https://a.com"])
            .headers(&["Content-Type", "content-type", "X-Api-Key"])
            .expose(&["X-Request-Id", "x-request-id", "ETag"])
            .policy();
        assert_eq!(p.headers, strings(&["content-type", "x-api-key"]));
        assert_eq!(
            p.expose_headers_value.as_deref(),
            Some("x-request-id, etag")
        );
    }

    #[test]
    fn max_age_is_bounded() {
        let e = Cfg::new(&["*"]).max_age(MAX_MAX_AGE + 1).err();
        assert_eq!(e.path, "max_age");
        assert!(e.message.contains("at most 86400"));
        assert_eq!(
            Cfg::new(&["*"])
                .max_age(0)
                .policy()
                .max_age_value
                .as_deref(),
            Some("0")
        );
        assert_eq!(
            Cfg::new(&["*"])
                .max_age(MAX_MAX_AGE)
                .policy()
                .max_age_value
                .as_deref(),
            Some("86400")
        );
    }

    // ---- origin matching -----------------------------------------------------------------

    #[test]
    fn exact_origins() {
        let p = policy(&["https://app.example.com", "http://localhost:3000"]);
        assert_eq!(
            acao(&p, b"https://app.example.com").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            acao(&p, b"http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        // scheme significant
        assert_eq!(acao(&p, b"http://app.example.com"), None);
        assert_eq!(acao(&p, b"https://localhost:3000"), None);
        // port significant
        assert_eq!(acao(&p, b"https://app.example.com:8443"), None);
        assert_eq!(acao(&p, b"http://localhost"), None);
        assert_eq!(acao(&p, b"http://localhost:3001"), None);
        // other hosts, suffix/prefix tricks
        assert_eq!(acao(&p, b"https://evil.com"), None);
        assert_eq!(acao(&p, b"https://app.example.com.evil.com"), None);
        assert_eq!(acao(&p, b"https://xapp.example.com"), None);
        assert_eq!(acao(&p, b"https://sub.app.example.com"), None);
        assert_eq!(acao(&p, b"https://example.com"), None);
    }

    #[test]
    fn default_ports_are_normalised() {
        let p = policy(&["https://a.com", "http://b.com:80", "https://c.com:443"]);
        assert!(p.origin_allowed(b"https://a.com"));
        assert!(p.origin_allowed(b"https://a.com:443"));
        assert!(!p.origin_allowed(b"https://a.com:80"));
        assert!(p.origin_allowed(b"http://b.com"));
        assert!(p.origin_allowed(b"http://b.com:80"));
        assert!(!p.origin_allowed(b"http://b.com:443"));
        assert!(p.origin_allowed(b"https://c.com"));
        // echoed as sent
        assert_eq!(
            acao(&p, b"https://a.com:443").as_deref(),
            Some("https://a.com:443")
        );
        let p = policy(&["https://*.a.com"]);
        assert!(p.origin_allowed(b"https://x.a.com:443"));
        assert!(!p.origin_allowed(b"https://x.a.com:8443"));
        let p = policy(&["https://*.a.com:8443"]);
        assert!(p.origin_allowed(b"https://x.a.com:8443"));
        assert!(!p.origin_allowed(b"https://x.a.com"));
    }

    #[test]
    fn case_insensitive_scheme_and_host() {
        let p = policy(&["https://App.Example.com", "https://*.Wild.Example.COM"]);
        assert!(p.origin_allowed(b"https://app.example.com"));
        assert!(p.origin_allowed(b"HTTPS://APP.EXAMPLE.COM"));
        assert!(p.origin_allowed(b"https://X.WILD.example.com"));
        assert_eq!(
            acao(&p, b"HTTPS://APP.example.com").as_deref(),
            Some("HTTPS://APP.example.com")
        );
    }

    #[test]
    fn wildcard_subdomains() {
        let p = policy(&["https://*.example.com"]);
        assert!(p.origin_allowed(b"https://a.example.com"));
        assert!(p.origin_allowed(b"https://a.b.example.com"));
        assert!(p.origin_allowed(b"https://x-1.y_2.z.example.com"));
        assert!(!p.origin_allowed(b"https://example.com"), "apex");
        assert!(!p.origin_allowed(b"https://.example.com"));
        assert!(!p.origin_allowed(b"https://..example.com"));
        assert!(!p.origin_allowed(b"https://notexample.com"));
        assert!(!p.origin_allowed(b"https://a.notexample.com"));
        assert!(!p.origin_allowed(b"https://a.example.com.evil.com"));
        assert!(!p.origin_allowed(b"https://a.example.co"));
        assert!(!p.origin_allowed(b"http://a.example.com"), "scheme");
        assert!(!p.origin_allowed(b"https://a.example.com:8443"), "port");
        assert!(!p.origin_allowed(b"https://a.example.com."), "trailing dot");
        assert!(!p.origin_allowed(b"https://*.example.com"));
        assert_eq!(
            acao(&p, b"https://a.b.example.com").as_deref(),
            Some("https://a.b.example.com")
        );
    }

    #[test]
    fn null_origin() {
        let p = policy(&["*"]);
        assert_eq!(p.actual(Some(b"null")), None, "`*` does not cover null");
        let p = policy(&["https://a.com"]);
        assert_eq!(p.actual(Some(b"null")), None);
        let p = policy(&["https://a.com", "null"]);
        let a = p.actual(Some(b"null")).unwrap();
        assert_eq!(header(&actual(&p, b"null"), ALLOW_ORIGIN), Some("null"));
        assert!(a.vary_origin);
        let p = policy(&["*", "null"]);
        let a = p.actual(Some(b"null")).unwrap();
        assert_eq!(header(&actual(&p, b"null"), ALLOW_ORIGIN), Some("null"));
        assert!(a.vary_origin);
        assert!(!p.origin_allowed(b"NULL"));
        assert!(!p.origin_allowed(b"null "));
        assert!(!p.origin_allowed(b"null,null"));
    }

    #[test]
    fn star_origin() {
        let p = policy(&["*"]);
        let a = p.actual(Some(b"https://anything.example")).unwrap();
        assert_eq!(
            actual(&p, b"https://anything.example"),
            vec![(ALLOW_ORIGIN, "*".to_string())]
        );
        assert!(!a.vary_origin);
        assert!(
            matches!(a.allow_origin, Cow::Borrowed("*")),
            "no copy for `*`"
        );
        assert!(p.origin_allowed(b"chrome-extension://abcdef"));
        assert!(p.origin_allowed(b"http://10.0.0.1:8080"));
        assert_eq!(p.actual(None), None, "no Origin, no CORS headers");
        assert_eq!(p.actual(Some(b"https://a.com, https://b.com")), None);
        assert_eq!(p.actual(Some(b"garbage")), None);
        // `*` plus specific entries: `*` wins.
        let p = policy(&["https://a.com", "*"]);
        assert_eq!(acao(&p, b"https://a.com").as_deref(), Some("*"));
    }

    #[test]
    fn malformed_origins_are_not_allowed() {
        let p = policy(&["https://a.com", "https://*.b.com", "http://[::1]:8080"]);
        let bad: &[&[u8]] = &[
            b"",
            b"a.com",
            b"https://",
            b"https:/a.com",
            b"https//a.com",
            b"://a.com",
            b"1https://a.com",
            b"https://a.com/",
            b"https://a.com/x",
            b"https://a.com?",
            b"https://a.com#",
            b"https://u@a.com",
            b"https://a.com:",
            b"https://a.com:0",
            b"https://a.com:65536",
            b"https://a.com:443443",
            b"https://a.com:0443",
            b"https://a.com:+443",
            b"https://a.com:44 3",
            b"https://a.com:443:443",
            b" https://a.com",
            b"https://a.com ",
            b"https://a.com\t",
            b"https://a .com",
            b"https://a.com,https://a.com",
            b"https://a.com, https://a.com",
            b"https://x.b.com,https://y.b.com",
            b"https://a.com\r\nx: y",
            b"https://a.com\0",
            b"https://\xc3\xa4.com",
            b"https://a.com\xff",
            b"\xff\xfe",
            b"https://a.com.",
            b"https://[::1]:8080x",
            b"http://[::1:8080",
            b"http://::1]:8080",
            b"http://[]:8080",
            b"http://[::g]:8080",
            b"http://[::1]]:8080",
            b"https://%61.com",
        ];
        for o in bad {
            assert!(!p.origin_allowed(o), "{:?}", String::from_utf8_lossy(o));
            assert_eq!(p.actual(Some(o)), None);
            assert_eq!(p.preflight(&pf(o, b"GET", None)), PreflightDecision::Denied);
        }
        // An oversized origin that would otherwise match a wildcard.
        let mut long = b"https://".to_vec();
        while long.len() < MAX_ORIGIN_LEN {
            long.extend_from_slice(b"abc.");
        }
        long.extend_from_slice(b"b.com");
        assert!(long.len() > MAX_ORIGIN_LEN);
        assert!(!p.origin_allowed(&long));
        // Just under the limit still works.
        let mut ok = b"https://".to_vec();
        while ok.len() + 4 + 5 <= MAX_ORIGIN_LEN {
            ok.extend_from_slice(b"abc.");
        }
        ok.extend_from_slice(b"b.com");
        assert!(ok.len() <= MAX_ORIGIN_LEN);
        assert!(p.origin_allowed(&ok));
    }

    // ---- actual responses ----------------------------------------------------------------

    #[test]
    fn actual_headers() {
        let p = Cfg::new(&["https://a.com"])
            .credentials()
            .expose(&["X-Request-Id", "etag"])
            .policy();
        let a = p.actual(Some(b"https://a.com")).unwrap();
        assert_eq!(
            actual(&p, b"https://a.com"),
            vec![
                (ALLOW_ORIGIN, "https://a.com".to_string()),
                (ALLOW_CREDENTIALS, "true".to_string()),
                (EXPOSE_HEADERS, "x-request-id, etag".to_string()),
            ]
        );
        assert!(a.vary_origin);
        assert_eq!(p.actual(None), None);
        assert_eq!(p.actual(Some(b"https://b.com")), None);

        let p = policy(&["https://a.com"]);
        assert_eq!(
            actual(&p, b"https://a.com"),
            vec![(ALLOW_ORIGIN, "https://a.com".to_string())]
        );
    }

    // ---- preflight -----------------------------------------------------------------------

    #[test]
    fn preflight_full_answer() {
        let p = Cfg::new(&["https://app.example.com", "https://*.example.com"])
            .methods(&["GET", "POST", "PUT", "DELETE"])
            .headers(&["content-type", "authorization", "x-api-key"])
            .max_age(600)
            .credentials()
            .policy();
        let h = allowed(p.preflight(&pf(
            b"https://x.example.com",
            b"PUT",
            Some(b"Content-Type, X-API-Key"),
        )));
        assert_eq!(
            h,
            vec![
                (ALLOW_ORIGIN, "https://x.example.com".to_string()),
                (ALLOW_CREDENTIALS, "true".to_string()),
                // What was asked, not the policy's lists (browsers would reuse any other
                // method or header named here for the URL's other routes).
                (ALLOW_METHODS, "PUT".to_string()),
                (ALLOW_HEADERS, "content-type, x-api-key".to_string()),
                (MAX_AGE, "600".to_string()),
                (VARY, PREFLIGHT_VARY.to_string()),
            ]
        );
        assert_eq!(
            PREFLIGHT_VARY,
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
        );
    }

    #[test]
    fn preflight_denied_for_bad_origin() {
        let p = policy(&["https://a.com"]);
        assert_eq!(
            p.preflight(&pf(b"https://b.com", b"GET", None)),
            PreflightDecision::Denied
        );
        assert_eq!(
            p.preflight(&pf(b"null", b"GET", None)),
            PreflightDecision::Denied
        );
    }

    #[test]
    fn preflight_methods() {
        let p = Cfg::new(&["https://a.com"])
            .methods(&["PUT", "PATCH"])
            .policy();
        let ok = |m: &[u8]| {
            matches!(
                p.preflight(&pf(b"https://a.com", m, None)),
                PreflightDecision::Allowed(_)
            )
        };
        assert!(ok(b"PUT"));
        assert!(ok(b"PATCH"));
        assert!(!ok(b"put"), "methods are case-sensitive");
        assert!(!ok(b"patch"));
        assert!(!ok(b"DELETE"));
        assert!(!ok(b""));
        assert!(!ok(b"PU T"));
        assert!(!ok(b"PUT,DELETE"));
        assert!(!ok(b"\xffPUT"));
        // Fetch: CORS-safelisted methods always pass the method check.
        assert!(ok(b"GET"));
        assert!(ok(b"HEAD"));
        assert!(ok(b"POST"));
        assert!(!ok(b"get"));
        let h = allowed(p.preflight(&pf(b"https://a.com", b"PUT", None)));
        assert_eq!(header(&h, ALLOW_METHODS), Some("PUT"));
        assert_eq!(header(&h, ALLOW_HEADERS), None);
        assert_eq!(header(&h, MAX_AGE), None);
        assert_eq!(header(&h, ALLOW_CREDENTIALS), None);

        // Default methods.
        let p = policy(&["https://a.com"]);
        let h = allowed(p.preflight(&pf(b"https://a.com", b"GET", None)));
        assert_eq!(header(&h, ALLOW_METHODS), Some("GET"));
        assert_eq!(
            p.preflight(&pf(b"https://a.com", b"PUT", None)),
            PreflightDecision::Denied
        );

        // `*`: any method.
        let p = Cfg::new(&["https://a.com"]).methods(&["*"]).policy();
        let h = allowed(p.preflight(&pf(b"https://a.com", b"PROPFIND", None)));
        assert_eq!(header(&h, ALLOW_METHODS), Some("PROPFIND"));
        assert_eq!(
            p.preflight(&pf(b"https://a.com", b"BAD METHOD", None)),
            PreflightDecision::Denied
        );
    }

    #[test]
    fn preflight_headers() {
        let p = Cfg::new(&["https://a.com"])
            .methods(&["PUT"])
            .headers(&["Content-Type", "x-api-key"])
            .policy();
        let ok = |h: Option<&[u8]>| {
            matches!(
                p.preflight(&pf(b"https://a.com", b"PUT", h)),
                PreflightDecision::Allowed(_)
            )
        };
        assert!(ok(None));
        assert!(ok(Some(b"")));
        assert!(ok(Some(b"content-type")));
        assert!(ok(Some(b"CONTENT-TYPE")));
        assert!(ok(Some(b"content-type,x-api-key")));
        assert!(ok(Some(b" content-type ,\tX-Api-Key\t")));
        assert!(
            ok(Some(b"content-type,,x-api-key,")),
            "empty elements ignored"
        );
        assert!(ok(Some(b" , ,")));
        assert!(!ok(Some(b"content-type, authorization")));
        assert!(!ok(Some(b"x-other")));
        assert!(!ok(Some(b"content type")), "invalid token");
        assert!(!ok(Some(b"content-type;x")), "invalid token");
        assert!(!ok(Some(b"x-api-key\r\n")), "invalid token");
        assert!(!ok(Some(b"x-\xc3\xa4")), "non-ASCII");
        assert!(!ok(Some(b"\xff")));

        // No allow_headers: any requested header denies.
        let p = policy(&["https://a.com"]);
        assert!(matches!(
            p.preflight(&pf(b"https://a.com", b"GET", Some(b""))),
            PreflightDecision::Allowed(_)
        ));
        assert_eq!(
            p.preflight(&pf(b"https://a.com", b"GET", Some(b"content-type"))),
            PreflightDecision::Denied
        );
    }

    #[test]
    fn an_answer_that_must_not_be_cached_says_max_age_0() {
        let p = Cfg::new(&["https://a.com"]).max_age(600).policy();
        let mut h = allowed(p.preflight(&pf(b"https://a.com", b"GET", None)));
        expire_at_once(&mut h);
        assert_eq!(header(&h, MAX_AGE), Some("0"));
        assert_eq!(h.iter().filter(|(n, _)| *n == MAX_AGE).count(), 1);
        // Without a configured max_age browsers would keep it 5 s: the header is added.
        let p = policy(&["https://a.com"]);
        let mut h = allowed(p.preflight(&pf(b"https://a.com", b"GET", None)));
        assert_eq!(header(&h, MAX_AGE), None);
        expire_at_once(&mut h);
        assert_eq!(header(&h, MAX_AGE), Some("0"));
    }

    #[test]
    fn preflight_star_headers_echo() {
        let p = Cfg::new(&["*"]).headers(&["*"]).policy();
        let h = allowed(p.preflight(&pf(
            b"https://a.com",
            b"GET",
            Some(b"X-Foo, Authorization,,content-type"),
        )));
        assert_eq!(header(&h, ALLOW_ORIGIN), Some("*"));
        assert_eq!(
            header(&h, ALLOW_HEADERS),
            Some("x-foo, authorization, content-type")
        );
        let h = allowed(p.preflight(&pf(b"https://a.com", b"GET", None)));
        assert_eq!(
            header(&h, ALLOW_HEADERS),
            None,
            "nothing asked, nothing allowed"
        );
        let h = allowed(p.preflight(&pf(b"https://a.com", b"GET", Some(b" "))));
        assert_eq!(header(&h, ALLOW_HEADERS), None);
        assert_eq!(
            p.preflight(&pf(b"https://a.com", b"GET", Some(b"x foo"))),
            PreflightDecision::Denied
        );
    }

    #[test]
    fn preflight_private_network() {
        let req = Preflight {
            origin: b"https://a.com",
            request_method: b"GET",
            request_headers: None,
            request_private_network: true,
        };
        let p = policy(&["https://a.com"]);
        assert_eq!(p.preflight(&req), PreflightDecision::Denied);

        let p = Cfg::new(&["https://a.com"]).private_network().policy();
        let h = allowed(p.preflight(&req));
        assert_eq!(header(&h, ALLOW_PRIVATE_NETWORK), Some("true"));
        assert_eq!(header(&h, VARY), Some(PREFLIGHT_VARY_PRIVATE_NETWORK));
        // Not requested: not sent.
        let h = allowed(p.preflight(&Preflight {
            request_private_network: false,
            ..req
        }));
        assert_eq!(header(&h, ALLOW_PRIVATE_NETWORK), None);
    }

    #[test]
    fn preflight_detection() {
        assert!(is_preflight(b"OPTIONS", true, true));
        assert!(!is_preflight(b"OPTIONS", true, false));
        assert!(!is_preflight(b"OPTIONS", false, true));
        assert!(!is_preflight(b"options", true, true));
        assert!(!is_preflight(b"GET", true, true));
        assert!(!is_preflight(b"", true, true));
    }

    #[test]
    fn cors_response_headers_list() {
        assert_eq!(CORS_RESPONSE_HEADERS.len(), 7);
        for h in CORS_RESPONSE_HEADERS {
            assert!(h.starts_with("access-control-"));
            assert_eq!(h.to_ascii_lowercase(), *h);
        }
        assert!(CORS_RESPONSE_HEADERS.contains(&"access-control-allow-private-network"));
    }

    // ---- Vary ----------------------------------------------------------------------------

    #[test]
    fn merge_vary_cases() {
        assert_eq!(merge_vary(None::<&str>, &["Origin"]), "Origin");
        assert_eq!(merge_vary(Some(b""), &["Origin"]), "Origin");
        assert_eq!(merge_vary(Some(b"  , "), &["Origin"]), "Origin");
        assert_eq!(
            merge_vary(Some(b"Accept-Encoding"), &["Origin"]),
            "Accept-Encoding, Origin"
        );
        assert_eq!(
            merge_vary(Some(b"accept-encoding,origin"), &["Origin"]),
            "accept-encoding, origin"
        );
        assert_eq!(merge_vary(Some(b"ORIGIN"), &["Origin"]), "ORIGIN");
        assert_eq!(
            merge_vary(Some(b"Origin, origin, Accept"), &["Origin", "origin"]),
            "Origin, Accept"
        );
        assert_eq!(merge_vary(Some(b"*"), &["Origin"]), "*");
        assert_eq!(merge_vary(Some(b"Accept, *"), &["Origin"]), "*");
        assert_eq!(merge_vary(Some(b"Accept"), &["*"]), "*");
        assert_eq!(
            merge_vary(None::<&str>, &[PREFLIGHT_VARY, "origin"]),
            PREFLIGHT_VARY
        );
        assert_eq!(merge_vary(None::<&str>, &[]), "");
        assert_eq!(merge_vary(Some(b"Accept"), &[]), "Accept");
        assert_eq!(
            merge_vary(Some(b"Acc ept, \xff, Accept-Language"), &["Origin"]),
            "Accept-Language, Origin",
            "non-token elements dropped"
        );
        // A name that contains "origin" is not a duplicate of it.
        assert_eq!(
            merge_vary(Some(b"X-Origin"), &["Origin"]),
            "X-Origin, Origin"
        );
        // Several header lines are one list (a host may keep them apart; Envoy joins them).
        let lines = ["Accept-Encoding", "accept-language, origin", "Cookie"];
        assert_eq!(
            merge_vary(lines, &["Origin"]),
            "Accept-Encoding, accept-language, origin, Cookie"
        );
        assert_eq!(merge_vary(["Accept", "*"], &["Origin"]), "*");
    }

    // ---- robustness ----------------------------------------------------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// Bytes biased towards origin-like and list-like material.
        fn bytes(&mut self) -> Vec<u8> {
            const PIECES: &[&[u8]] = &[
                b"https://",
                b"http://",
                b"://",
                b"*.",
                b".",
                b":",
                b"443",
                b"80",
                b"65536",
                b"0",
                b"a",
                b"example",
                b"com",
                b"null",
                b"[",
                b"]",
                b"::1",
                b",",
                b" ",
                b"\t",
                b"/",
                b"@",
                b"?",
                b"#",
                b"\xff",
                b"\xc3\xa4",
                b"\0",
                b"-",
                b"_",
                b"GET",
                b"x-api-key",
                b"*",
            ];
            let len = self.below(24);
            let mut out = Vec::new();
            for _ in 0..len {
                if self.below(3) == 0 {
                    out.push(self.next() as u8);
                } else {
                    out.extend_from_slice(PIECES[self.below(PIECES.len())]);
                }
            }
            if self.below(50) == 0 {
                out.resize(MAX_ORIGIN_LEN + self.below(8), b'a');
            }
            out
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let policies = vec![
            policy(&["*"]),
            policy(&["*", "null"]),
            Cfg::new(&[
                "https://a.com",
                "https://*.example.com",
                "http://[::1]:8080",
                "null",
            ])
            .methods(&["PUT", "*"])
            .headers(&["*"])
            .expose(&["x-a"])
            .max_age(10)
            .private_network()
            .policy(),
            Cfg::new(&["https://*.example.com:8443", "http://localhost:3000"])
                .methods(&["DELETE"])
                .headers(&["content-type"])
                .credentials()
                .policy(),
        ];
        let mut allowed_count = 0usize;
        for _ in 0..40_000 {
            let origin = rng.bytes();
            let method = rng.bytes();
            let headers = rng.bytes();
            let vary = rng.bytes();
            for p in &policies {
                let a = p.actual(Some(&origin));
                if let Some(a) = &a {
                    allowed_count += 1;
                    // Whatever is returned is a valid header value (ASCII, no CR/LF/NUL).
                    for (_, v) in p.actual_headers(a) {
                        assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{v:?}");
                    }
                }
                let d = p.preflight(&Preflight {
                    origin: &origin,
                    request_method: &method,
                    request_headers: Some(&headers),
                    request_private_network: rng.below(2) == 0,
                });
                if let PreflightDecision::Allowed(h) = d {
                    for (_, v) in &h {
                        assert!(v.bytes().all(|b| (0x20..0x7f).contains(&b)), "{v:?}");
                    }
                }
            }
            let merged = merge_vary(Some(&vary), &["Origin"]);
            assert!(merged.bytes().all(|b| (0x20..0x7f).contains(&b)));
            // Random configuration entries: compile must return, not panic.
            let entry = String::from_utf8_lossy(&origin).into_owned();
            let m = String::from_utf8_lossy(&method).into_owned();
            let h = String::from_utf8_lossy(&headers).into_owned();
            let origins = vec![entry];
            let methods = vec![m];
            let hs = vec![h];
            let _ = CorsPolicy::compile(&CorsSpec {
                allow_origins: &origins,
                allow_methods: &methods,
                allow_headers: &hs,
                expose_headers: &hs,
                max_age: Some(rng.next() as u32),
                allow_credentials: rng.below(2) == 0,
                allow_private_network: rng.below(2) == 0,
            });
        }
        // The generator does produce allowed origins sometimes (sanity of the test itself).
        assert!(allowed_count > 0);
    }
}
