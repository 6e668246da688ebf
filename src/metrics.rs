//! Metric names and tags (contract, "Access log and metrics"): which series exist for a
//! configuration and what each is called in Envoy's stats. Pure: the filter defines the metrics
//! with the host once at configuration time and updates them by precomputed id per request.
//!
//! Envoy keeps custom metrics flat and prefixes them with `wasmcustom.`, so the tags ride in the
//! name, in Istio's `NAME=.=VALUE;.;` convention, and `stats_config.stats_tags` ([`STATS_TAGS`])
//! turn them back into labels:
//!
//! ```text
//! wasmcustom.tollgate.stage=.=<stage>;.;route=.=<route>;.;method=.=<method>;.;<metric>
//!   -> tollgate_<metric>{stage="<stage>",route="<route>",method="<method>"}   (/stats/prometheus)
//! ```
//!
//! The regexes are exactly the ones Istio generates for `extraStatTags`, so in Istio
//! `extraStatTags: [stage, route, method]` (and `wasmcustom.tollgate` in `proxyStatsMatcher`)
//! give the same labels.
//!
//! Tag values are written with [`encode_tag_value`] so that no value can contain the `.` that
//! separates stat name elements, the `;` that ends a tag, or characters that Envoy's sinks
//! (statsd `:` `|` `@`, Prometheus names) treat specially: `/` becomes `_`; ASCII letters, digits and `-` stay; every
//! other byte becomes `~` and two upper-case hex digits. `/pets/{id}` is `_pets_~7Bid~7D`.
//! The encoding is reversible ([`decode_tag_value`]), so distinct routes never share a series.
//!
//! The set of series is bounded by the configuration, never by traffic: one per route and method
//! that can reach it, defined with the host on its first request (so only the routes and methods
//! requests use take Envoy memory). A route with an explicit method gets that method and `OPTIONS` (CORS
//! preflights are routed by the method they ask about); an `ANY` route and requests that match no
//! route (route `-`) get one series per method in [`METHODS`], where `OTHER` takes any method not
//! listed.

use crate::config::Config;
use crate::gateway::ServiceResult;
use crate::ratelimit_service::CallFailure;

/// The prefix Envoy gives every custom (Wasm) metric.
pub const ENVOY_NAMESPACE: &str = "wasmcustom";
/// The first element of every tollgate metric name.
pub const PREFIX: &str = "tollgate";
/// The route tag of requests that matched no route.
pub const NO_ROUTE: &str = "-";
/// The methods that get their own series on `ANY` routes and unmatched requests; the last,
/// `OTHER`, collects every other method.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// `stats_config.stats_tags` entries (tag name, regex) that make Envoy show the tags embedded in
/// the names as labels. The first capture group is cut from the name, the second is the value.
/// They are the regexes Istio generates for `extraStatTags`; `envoy/envoy.yaml` and the
/// end-to-end harness carry exactly these.
pub const STATS_TAGS: [(&str, &str); 3] = [
    ("stage", r"(stage=\.=(.*?);\.;)"),
    ("route", r"(route=\.=(.*?);\.;)"),
    ("method", r"(method=\.=(.*?);\.;)"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    /// Values in milliseconds.
    Histogram,
}

/// One metric of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Every request that reached the filter.
    Requests,
    /// Responses with status 400..=499, whoever made them.
    Status4xx,
    /// Responses with status 500 and above.
    Status5xx,
    /// `THROTTLED` decisions (counted in report-only mode too).
    Throttled,
    /// `QUOTA_EXCEEDED` decisions.
    QuotaExceeded,
    /// Requests refused for a missing or unknown API key, and denied CORS preflights.
    Forbidden,
    CacheHit,
    CacheMiss,
    /// Request headers in to the end of the response, ms.
    Latency,
    /// Request forwarded to response headers back from upstream, ms.
    IntegrationLatency,
}

impl Metric {
    /// Every metric, in the order of [`Metric::index`].
    pub const ALL: [Metric; 10] = [
        Metric::Requests,
        Metric::Status4xx,
        Metric::Status5xx,
        Metric::Throttled,
        Metric::QuotaExceeded,
        Metric::Forbidden,
        Metric::CacheHit,
        Metric::CacheMiss,
        Metric::Latency,
        Metric::IntegrationLatency,
    ];

    /// The last element of the stat name (`tollgate_<name>` in Prometheus).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Status4xx => "4xx",
            Metric::Status5xx => "5xx",
            Metric::Throttled => "throttled",
            Metric::QuotaExceeded => "quota_exceeded",
            Metric::Forbidden => "forbidden",
            Metric::CacheHit => "cache_hit",
            Metric::CacheMiss => "cache_miss",
            Metric::Latency => "latency",
            Metric::IntegrationLatency => "integration_latency",
        }
    }

    pub fn kind(self) -> MetricKind {
        match self {
            Metric::Latency | Metric::IntegrationLatency => MetricKind::Histogram,
            _ => MetricKind::Counter,
        }
    }

    /// Position in [`Metric::ALL`] (and in a series' id array).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Appends `value` encoded for a stat name element (see the module documentation).
pub fn encode_tag_value(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(char::from(b)),
            b'/' => out.push('_'),
            _ => {
                out.push('~');
                for nibble in [b >> 4, b & 0x0f] {
                    let c = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
                    out.push(char::from(c));
                }
            }
        }
    }
}

/// The inverse of [`encode_tag_value`] (for tools and tests); None for text it cannot produce.
pub fn decode_tag_value(encoded: &str) -> Option<String> {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'~' => {
                let hi = bytes.get(i + 1).copied().and_then(hex)?;
                let lo = bytes.get(i + 2).copied().and_then(hex)?;
                out.push(hi * 16 + lo);
                i += 3;
                continue;
            }
            b'_' => out.push(b'/'),
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' => out.push(b),
            _ => return None,
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The series of one route (or of unmatched requests).
#[derive(Clone, Debug)]
enum RouteMethods {
    /// An explicit method: its series at `start`, then `OPTIONS` at `start + 1` (unless the
    /// method is `OPTIONS`).
    One { method: &'static str, start: usize },
    /// `ANY` (or no route): one series per [`METHODS`] entry from `start`.
    All { start: usize },
}

/// One series: the tags every metric in it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Series {
    /// Index of the route, None for unmatched requests.
    pub route: Option<usize>,
    pub method: &'static str,
}

/// Every series of a configuration, and the lookup from a request's route and method to its
/// series. Built once at configuration time.
#[derive(Clone, Debug)]
pub struct MetricTable {
    /// The encoded stage tag.
    stage: String,
    /// Encoded route tags, per route then one for unmatched requests.
    route_tags: Vec<String>,
    /// Per route then one for unmatched requests.
    routes: Vec<RouteMethods>,
    series: Vec<Series>,
}

fn known_method(method: &str) -> &'static str {
    METHODS
        .iter()
        .copied()
        .find(|m| *m == method)
        .unwrap_or("OTHER")
}

impl MetricTable {
    /// The series of a stage and its routes, given as (method or None for `ANY`, resource path).
    pub fn new<'a>(
        stage: &str,
        routes: impl IntoIterator<Item = (Option<&'a str>, &'a str)>,
    ) -> MetricTable {
        let mut table = MetricTable {
            stage: String::new(),
            route_tags: Vec::new(),
            routes: Vec::new(),
            series: Vec::new(),
        };
        encode_tag_value(stage, &mut table.stage);
        for (i, (method, path)) in routes.into_iter().enumerate() {
            let mut tag = String::with_capacity(path.len() + 8);
            encode_tag_value(path, &mut tag);
            table.route_tags.push(tag);
            table.push_route(Some(i), method);
        }
        table.route_tags.push(NO_ROUTE.to_string());
        table.push_route(None, None);
        table
    }

    /// The series of a compiled configuration.
    pub fn for_config(cfg: &Config) -> MetricTable {
        let routes = (0..cfg.table.len())
            .filter_map(|i| cfg.table.pattern(i))
            .map(|p| (p.method(), p.resource_path()));
        MetricTable::new(&cfg.stage, routes)
    }

    fn push_route(&mut self, route: Option<usize>, method: Option<&str>) {
        let start = self.series.len();
        match method {
            Some(m) => {
                let method = known_method(m);
                self.series.push(Series { route, method });
                if method != "OPTIONS" {
                    self.series.push(Series {
                        route,
                        method: "OPTIONS",
                    });
                }
                // HEAD is routed to a GET route (routes::RouteTable::find).
                if method == "GET" {
                    self.series.push(Series {
                        route,
                        method: "HEAD",
                    });
                }
                self.routes.push(RouteMethods::One { method, start });
            }
            None => {
                for method in METHODS {
                    self.series.push(Series { route, method });
                }
                self.routes.push(RouteMethods::All { start });
            }
        }
    }

    /// Every series, in id order.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The series of a request: its matched route (None: no route) and method, in any case (as
    /// routes match methods). None only for a route index the configuration does not have, or
    /// a method that cannot reach the route.
    pub fn find(&self, route: Option<usize>, method: &[u8]) -> Option<usize> {
        let slot = match route {
            Some(i) if i < self.routes.len().saturating_sub(1) => i,
            Some(_) => return None,
            None => self.routes.len().checked_sub(1)?,
        };
        match self.routes.get(slot)? {
            // Methods in any case, as routes match them (`get` is counted as `GET`).
            RouteMethods::One { method: m, start } => {
                if method.eq_ignore_ascii_case(m.as_bytes()) {
                    Some(*start)
                } else if method.eq_ignore_ascii_case(b"OPTIONS") {
                    Some(start + 1)
                } else if method.eq_ignore_ascii_case(b"HEAD") && *m == "GET" {
                    Some(start + 2)
                } else {
                    None
                }
            }
            RouteMethods::All { start } => {
                let i = METHODS
                    .iter()
                    .position(|m| m.as_bytes().eq_ignore_ascii_case(method))
                    .unwrap_or(METHODS.len() - 1);
                Some(start + i)
            }
        }
    }

    /// The full stat name of a metric of series `index`, without Envoy's `wasmcustom.` prefix
    /// (the name to give `proxy_define_metric`).
    pub fn stat_name(&self, index: usize, metric: Metric) -> Option<String> {
        let series = self.series.get(index)?;
        let route_slot = series
            .route
            .unwrap_or(self.route_tags.len().saturating_sub(1));
        let route = self.route_tags.get(route_slot)?;
        let mut name = String::with_capacity(64 + self.stage.len() + route.len());
        name.push_str(PREFIX);
        name.push('.');
        for (tag, value) in [
            ("stage", self.stage.as_str()),
            ("route", route.as_str()),
            ("method", series.method),
        ] {
            name.push_str(tag);
            name.push_str("=.=");
            name.push_str(value);
            name.push_str(";.;");
        }
        name.push_str(metric.name());
        Some(name)
    }
}

/// The rate limit service's counters (configurations with a `rate_limit_service` only), by
/// stage: calls by how they ended, failures by reason. In Prometheus
/// `tollgate_rate_limit_service_ok{stage="prod"}` and so on.
pub const SERVICE_COUNTERS: [&str; 6] = [
    "rate_limit_service_ok",
    "rate_limit_service_over_limit",
    "rate_limit_service_failure_timeout",
    "rate_limit_service_failure_grpc_error",
    "rate_limit_service_failure_malformed",
    "rate_limit_service_failure_unknown_code",
];

/// The index in [`SERVICE_COUNTERS`] of a call's result.
pub fn service_counter(result: ServiceResult) -> usize {
    match result {
        ServiceResult::Ok => 0,
        ServiceResult::OverLimit => 1,
        ServiceResult::Failure(CallFailure::Timeout) => 2,
        ServiceResult::Failure(CallFailure::Grpc(_)) => 3,
        ServiceResult::Failure(CallFailure::Malformed) => 4,
        ServiceResult::Failure(CallFailure::UnknownCode) => 5,
    }
}

/// Requests refused (429) because a local limit could not be checked: shared data refused a
/// call or stayed contended through every attempt, or the host's clock could not be read.
/// One counter per stage (the main role's), in Prometheus `tollgate_store_failures{stage="prod"}`:
/// such refusals are also `tollgate_throttled`, which cannot tell them from clients over
/// their limits.
pub const STORE_FAILURES: &str = "store_failures";

impl MetricTable {
    /// The full stat name of a counter kept per stage ([`SERVICE_COUNTERS`],
    /// [`STORE_FAILURES`]).
    pub fn stage_stat_name(&self, counter: &str) -> String {
        let mut name = String::with_capacity(40 + self.stage.len() + counter.len());
        name.push_str(PREFIX);
        name.push_str(".stage=.=");
        name.push_str(&self.stage);
        name.push_str(";.;");
        name.push_str(counter);
        name
    }
}

/// Which counters a finished request adds to (besides [`Metric::Requests`], always counted).
/// `status` is the response code (None when the client went away before one), `error` the
/// `$context.error.responseType` the filter decided, `cache` the `$context.cacheStatus`.
pub fn counters_for(
    status: Option<u16>,
    error: Option<&str>,
    cache: Option<&str>,
) -> impl Iterator<Item = Metric> {
    let status_class = match status {
        Some(400..=499) => Some(Metric::Status4xx),
        Some(500..) => Some(Metric::Status5xx),
        _ => None,
    };
    let decision = match error {
        Some("THROTTLED") => Some(Metric::Throttled),
        Some("QUOTA_EXCEEDED") => Some(Metric::QuotaExceeded),
        Some("INVALID_API_KEY" | "CORS_PREFLIGHT_DENIED" | "CACHE_INVALIDATION_DENIED") => {
            Some(Metric::Forbidden)
        }
        _ => None,
    };
    let cache = match cache {
        Some("hit") => Some(Metric::CacheHit),
        Some("miss") => Some(Metric::CacheMiss),
        _ => None,
    };
    std::iter::once(Metric::Requests)
        .chain(status_class)
        .chain(decision)
        .chain(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut out = String::new();
        encode_tag_value(s, &mut out);
        out
    }

    #[test]
    fn route_templates_encode_to_safe_reversible_tags() {
        assert_eq!(enc("/pets/{id}"), "_pets_~7Bid~7D");
        assert_eq!(enc("/admin/{proxy+}"), "_admin_~7Bproxy~2B~7D");
        assert_eq!(enc("/"), "_");
        assert_eq!(enc("/v1.0/a_b"), "_v1~2E0_a~5Fb");
        assert_eq!(enc("/a%20b/~x"), "_a~2520b_~7Ex");
        assert_eq!(enc("/é"), "_~C3~A9");
        assert_eq!(enc("prod"), "prod");
        assert_eq!(enc("prod.eu_1"), "prod~2Eeu~5F1");
        for s in [
            "/pets/{id}",
            "/admin/{proxy+}",
            "/v1.0/a_b",
            "/a%20b/~x",
            "/é/ü",
            "/",
            "x:y|z@w#q",
        ] {
            let e = enc(s);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'~')),
                "{s} -> {e}"
            );
            assert_eq!(decode_tag_value(&e).as_deref(), Some(s), "{e}");
        }
        // Templates that differ only in characters the encoding maps never collide.
        assert_ne!(enc("/a_b"), enc("/a/b"));
        assert_ne!(enc("/a.b"), enc("/a_b"));
        assert_eq!(decode_tag_value("~7"), None);
        assert_eq!(decode_tag_value("a.b"), None);
    }

    #[test]
    fn series_cover_every_route_and_method_that_can_reach_it() {
        let t = MetricTable::new(
            "prod",
            [
                (Some("GET"), "/pets/{id}"),
                (Some("POST"), "/pets"),
                (None, "/admin/{proxy+}"),
                (Some("OPTIONS"), "/opt"),
            ],
        );
        // GET + OPTIONS + HEAD, POST + OPTIONS, 10 methods, OPTIONS only, 10 for unmatched.
        assert_eq!(t.len(), 3 + 2 + 10 + 1 + 10);
        let s = |r, m: &str| t.find(r, m.as_bytes()).map(|i| t.series()[i].clone());
        assert_eq!(
            s(Some(0), "GET"),
            Some(Series {
                route: Some(0),
                method: "GET"
            })
        );
        assert_eq!(
            s(Some(0), "OPTIONS"),
            Some(Series {
                route: Some(0),
                method: "OPTIONS"
            })
        );
        // HEAD reaches a GET route.
        assert_eq!(
            s(Some(0), "HEAD"),
            Some(Series {
                route: Some(0),
                method: "HEAD"
            })
        );
        assert_eq!(s(Some(1), "HEAD"), None);
        assert_eq!(s(Some(0), "POST"), None);
        assert_eq!(s(Some(2), "DELETE").unwrap().method, "DELETE");
        assert_eq!(s(Some(2), "PROPFIND").unwrap().method, "OTHER");
        // Methods in any case, as routes match them.
        assert_eq!(s(Some(2), "get").unwrap().method, "GET");
        assert_eq!(s(Some(0), "get").unwrap().method, "GET");
        assert_eq!(s(Some(0), "head").unwrap().method, "HEAD");
        assert_eq!(s(Some(3), "OPTIONS").unwrap().route, Some(3));
        assert_eq!(s(None, "GET").unwrap().route, None);
        assert_eq!(s(None, "BREW").unwrap().method, "OTHER");
        assert_eq!(s(Some(4), "GET"), None);
        assert_eq!(s(Some(usize::MAX), "GET"), None);
        // Every series index is distinct and in range.
        let mut seen = std::collections::HashSet::new();
        for (i, series) in t.series().iter().enumerate() {
            assert_eq!(t.find(series.route, series.method.as_bytes()), Some(i));
            assert!(seen.insert((series.route, series.method)));
        }
    }

    /// Envoy's tag extraction for one `(NAME=\.=(.*?);\.;)` regex, by hand: cuts the first
    /// `NAME=.=VALUE;.;` out of the name and returns VALUE.
    fn extract(name: &mut String, tag: &str) -> Option<String> {
        let open = format!("{tag}=.=");
        let start = name.find(&open)?;
        let value_start = start + open.len();
        let len = name[value_start..].find(";.;")?;
        let value = name[value_start..value_start + len].to_string();
        name.replace_range(start..value_start + len + 3, "");
        Some(value)
    }

    #[test]
    fn stat_names_carry_encoded_tags_that_the_stats_tags_regexes_cut_out() {
        let t = MetricTable::new("prod.eu", [(Some("GET"), "/pets/{id}")]);
        let i = t.find(Some(0), b"GET").unwrap();
        assert_eq!(
            t.stat_name(i, Metric::Requests).unwrap(),
            "tollgate.stage=.=prod~2Eeu;.;route=.=_pets_~7Bid~7D;.;method=.=GET;.;requests"
        );
        let i = t.find(None, b"DELETE").unwrap();
        assert_eq!(
            t.stat_name(i, Metric::Latency).unwrap(),
            "tollgate.stage=.=prod~2Eeu;.;route=.=-;.;method=.=DELETE;.;latency"
        );
        assert_eq!(t.stat_name(t.len(), Metric::Requests), None);
        for i in 0..t.len() {
            for m in Metric::ALL {
                let mut name = format!("{ENVOY_NAMESPACE}.{}", t.stat_name(i, m).unwrap());
                let stage = extract(&mut name, "stage").unwrap();
                let route = extract(&mut name, "route").unwrap();
                let method = extract(&mut name, "method").unwrap();
                assert_eq!(name, format!("wasmcustom.tollgate.{}", m.name()));
                assert_eq!(decode_tag_value(&stage).as_deref(), Some("prod.eu"));
                let series = &t.series()[i];
                match series.route {
                    Some(_) => assert_eq!(decode_tag_value(&route).as_deref(), Some("/pets/{id}")),
                    None => assert_eq!(route, NO_ROUTE),
                }
                assert_eq!(method, series.method);
            }
        }
        for counter in SERVICE_COUNTERS.into_iter().chain([STORE_FAILURES]) {
            let mut name = format!("{ENVOY_NAMESPACE}.{}", t.stage_stat_name(counter));
            let stage = extract(&mut name, "stage").unwrap();
            assert_eq!(decode_tag_value(&stage).as_deref(), Some("prod.eu"));
            assert_eq!(name, format!("wasmcustom.tollgate.{counter}"));
        }
        // The regexes are the ones Istio generates for extraStatTags.
        for (tag, re) in STATS_TAGS {
            assert_eq!(re, format!(r"({tag}=\.=(.*?);\.;)"));
        }
    }

    #[test]
    fn a_configuration_gives_its_routes_series() {
        let cfg = Config::from_json(
            br#"{"stage": "prod", "routes": [
                {"match": "GET /pets/{id}"},
                {"match": "ANY /admin/{proxy+}"}
            ]}"#,
        )
        .unwrap();
        let t = MetricTable::for_config(&cfg);
        assert_eq!(t.len(), 3 + 10 + 10);
        let head = t.find(cfg.table.find(b"HEAD", b"/pets/1"), b"HEAD");
        assert_eq!(head.map(|i| t.series()[i].method), Some("HEAD"));
        let i = t.find(cfg.table.find(b"GET", b"/pets/1"), b"GET").unwrap();
        assert_eq!(
            t.stat_name(i, Metric::Status4xx).unwrap(),
            "tollgate.stage=.=prod;.;route=.=_pets_~7Bid~7D;.;method=.=GET;.;4xx"
        );
        let i = t
            .find(cfg.table.find(b"PUT", b"/admin/a/b"), b"PUT")
            .unwrap();
        assert!(t
            .stat_name(i, Metric::Requests)
            .unwrap()
            .contains("route=.=_admin_~7Bproxy~2B~7D;.;method=.=PUT;.;"));
        // The empty configuration still counts every request, as unmatched.
        let t = MetricTable::for_config(&Config::from_json(b"{}").unwrap());
        assert_eq!(t.len(), METHODS.len());
        assert!(t
            .stat_name(t.find(None, b"GET").unwrap(), Metric::Requests)
            .unwrap()
            .starts_with("tollgate.stage=.=default;.;route=.=-;.;"));
    }

    #[test]
    fn metric_names_are_distinct_and_indexed_in_order() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
            assert!(m
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
        let names: std::collections::HashSet<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names.len(), Metric::ALL.len());
        assert_eq!(Metric::Latency.kind(), MetricKind::Histogram);
        assert_eq!(Metric::IntegrationLatency.kind(), MetricKind::Histogram);
        assert_eq!(Metric::Forbidden.kind(), MetricKind::Counter);
    }

    #[test]
    fn counters_follow_status_decision_and_cache() {
        let c = |s, e, ca| counters_for(s, e, ca).collect::<Vec<_>>();
        assert_eq!(c(Some(200), None, None), [Metric::Requests]);
        assert_eq!(
            c(Some(429), Some("THROTTLED"), None),
            [Metric::Requests, Metric::Status4xx, Metric::Throttled]
        );
        assert_eq!(
            c(Some(429), Some("QUOTA_EXCEEDED"), None),
            [Metric::Requests, Metric::Status4xx, Metric::QuotaExceeded]
        );
        assert_eq!(
            c(Some(403), Some("INVALID_API_KEY"), None),
            [Metric::Requests, Metric::Status4xx, Metric::Forbidden]
        );
        assert_eq!(
            c(Some(403), Some("CORS_PREFLIGHT_DENIED"), None),
            [Metric::Requests, Metric::Status4xx, Metric::Forbidden]
        );
        // Report-only: the decision counts though the upstream answered 200.
        assert_eq!(
            c(Some(200), Some("THROTTLED"), None),
            [Metric::Requests, Metric::Throttled]
        );
        assert_eq!(
            c(Some(503), Some("INTEGRATION_FAILURE"), Some("miss")),
            [Metric::Requests, Metric::Status5xx, Metric::CacheMiss]
        );
        assert_eq!(
            c(Some(200), None, Some("hit")),
            [Metric::Requests, Metric::CacheHit]
        );
        assert_eq!(c(None, None, Some("-")), [Metric::Requests]);
        assert_eq!(c(Some(399), None, None), [Metric::Requests]);
        assert_eq!(
            c(Some(500), None, None),
            [Metric::Requests, Metric::Status5xx]
        );
    }
}
