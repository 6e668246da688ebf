#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
// The tests write sections with serde_json's `json!`.
use serde_json::{json, Value};

fn cfg(v: Value) -> ServiceConfig {
    read_config(&v.into(), "rate_limit_service").unwrap()
}

fn err(v: Value) -> String {
    read_config(&v.into(), "rate_limit_service")
        .unwrap_err()
        .to_string()
}

fn base() -> ServiceConfig {
    cfg(json!({
        "cluster": "ratelimit",
        "domain": "tollgate",
        "failure_mode": "deny",
        "checks": ["quota", "plan", "route", "stage", "client"]
    }))
}

// --- configuration ---------------------------------------------------------------------------

#[test]
fn reads_a_full_section_with_defaults() {
    let c = base();
    assert_eq!(c.cluster, "ratelimit");
    assert_eq!(c.domain, "tollgate");
    assert_eq!(c.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert_eq!(c.timeout_ms, 20);
    assert_eq!(c.failure_mode, FailureMode::Deny);
    // Sorted into the filter's order whatever the order written.
    assert_eq!(c.checks, Check::ALL.to_vec());
    // read_config sorts by filtering `ALL`, so its order must be `Ord`'s.
    assert!(Check::ALL.is_sorted());
    assert!(c.local_first);
    assert!(c.delegates(Check::Quota));

    let c = cfg(json!({
        "cluster": "rls", "domain": "d", "timeout_ms": 150, "failure_mode": "allow",
        "checks": ["quota"], "local_first": false
    }));
    assert_eq!(c.timeout_ms, 150);
    assert_eq!(c.failure_mode, FailureMode::Allow);
    assert_eq!(c.failure_mode.as_str(), "allow");
    assert_eq!(c.checks, vec![Check::Quota]);
    assert!(!c.local_first);
    assert!(!c.delegates(Check::Plan));
}

#[test]
fn errors_name_the_field() {
    let ok = json!({"cluster": "c", "domain": "d", "failure_mode": "allow", "checks": ["plan"]});
    let with = |k: &str, v: Value| {
        let mut o = ok.clone();
        o[k] = v;
        err(o)
    };
    let without = |k: &str| {
        let mut o = ok.clone();
        o.as_object_mut().unwrap().remove(k);
        err(o)
    };
    assert_eq!(
        without("cluster"),
        "rate_limit_service.cluster: is required"
    );
    assert_eq!(without("domain"), "rate_limit_service.domain: is required");
    assert_eq!(
        without("failure_mode"),
        "rate_limit_service.failure_mode: is required"
    );
    assert!(without("checks").starts_with("rate_limit_service.checks: is required"));
    assert!(with("checks", json!([])).starts_with("rate_limit_service.checks: is required"));
    assert_eq!(
        with("checks", json!("plan")),
        "rate_limit_service.checks: invalid type: string, expected an array"
    );
    assert_eq!(
        with("checks", json!(["plan", 3])),
        "rate_limit_service.checks[1]: invalid type: number, expected a string"
    );
    assert!(with("checks", json!(["plan", "routes"]))
        .starts_with("rate_limit_service.checks[1]: unknown check `routes`"));
    assert_eq!(
        with("checks", json!(["plan", "quota", "plan"])),
        "rate_limit_service.checks[2]: `plan` is listed twice"
    );
    assert_eq!(
        with("failure_mode", json!("open")),
        "rate_limit_service.failure_mode: must be `allow` or `deny`"
    );
    assert_eq!(
        with("failure_mode", json!("ALLOW")),
        "rate_limit_service.failure_mode: must be `allow` or `deny`"
    );
    for bad in [json!(0), json!(10_001), json!(1.5), json!(-1), json!(1e12)] {
        assert_eq!(
            with("timeout_ms", bad),
            "rate_limit_service.timeout_ms: must be a whole number of milliseconds from 1 to 10000"
        );
    }
    assert_eq!(
        with("timeout_ms", json!("20")),
        "rate_limit_service.timeout_ms: invalid type: string, expected a number"
    );
    assert_eq!(
        with("cluster", json!("x".repeat(126))),
        "rate_limit_service.cluster: must be 1 to 125 bytes of UTF-8, none of them control characters"
    );
    let longest = "x".repeat(125);
    let svc = grpc_service(&longest);
    assert_eq!(svc.as_bytes()[..4], [0x0a, 127, 0x0a, 125]);
    assert_eq!(&svc[4..], longest);
    let back = GrpcService::decode(svc.as_bytes()).unwrap();
    assert_eq!(back.envoy_grpc.unwrap().cluster_name, longest);
    // The hand encoding is prost's, whatever the length.
    for n in [0, 1, 2, 100, 125, 126, 127, 128, 200, 300, 20_000] {
        let cluster = "é".repeat(n / 2) + &"x".repeat(n % 2);
        let by_prost = GrpcService {
            envoy_grpc: Some(EnvoyGrpc {
                cluster_name: cluster.clone(),
            }),
        }
        .encode_to_vec();
        let by_prost = String::from_utf8(by_prost).unwrap_or_default();
        assert_eq!(grpc_service(&cluster), by_prost, "{n}");
    }
    for bad in [json!(""), json!("a\nb"), json!("x".repeat(257))] {
        assert!(with("cluster", bad.clone())
            .starts_with("rate_limit_service.cluster: must be 1 to 125 bytes"));
        assert!(with("domain", bad).starts_with("rate_limit_service.domain: must be 1 to 256"));
    }
    assert_eq!(
        with("local_first", json!("yes")),
        "rate_limit_service.local_first: invalid type: string, expected a boolean"
    );
    assert!(with("grpc_service", json!({}))
        .starts_with("rate_limit_service: unknown field `grpc_service`"));
    assert_eq!(
        err(json!([])),
        "rate_limit_service: invalid type: array, expected an object"
    );
}

#[test]
fn null_timeout_takes_the_default() {
    let c = cfg(
        json!({"cluster": "c", "domain": "d", "failure_mode": "allow",
                       "checks": ["plan"], "timeout_ms": null}),
    );
    assert_eq!(c.timeout_ms, 20);
}

#[test]
fn delegated_checks_must_exist_locally() {
    let c = base();
    assert!(check_delegated(&c, &Check::ALL, "rate_limit_service").is_ok());
    let e = check_delegated(&c, &[Check::Plan, Check::Route], "rate_limit_service").unwrap_err();
    assert_eq!(e.path, "rate_limit_service.checks");
    assert_eq!(
        e.message,
        "`stage` is delegated to the service but the configuration has no such check"
    );
}

#[test]
fn the_configuration_accepts_the_section_and_cross_checks_it() {
    use crate::config::Config;
    // A delegated check must exist locally: no plan has a throttle here.
    let e = Config::from_json(
        br#"{"rate_limit_service": {"cluster": "c", "domain": "d", "failure_mode": "allow", "checks": ["plan"]}}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "rate_limit_service.checks: `plan` is delegated to the service but the configuration has no such check"
    );
    // Errors inside the section keep their path.
    let e = Config::from_json(
        br#"{"throttle": {"rate": 10, "burst": 10}, "rate_limit_service": {"cluster": "c", "domain": "d", "failure_mode": "maybe", "checks": ["stage"]}}"#,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("rate_limit_service.failure_mode:"),
        "{e}"
    );
    let c = Config::from_json(
        br#"{"throttle": {"rate": 10, "burst": 10},
             "api_key": {"keys": [{"id": "k1", "value": "secret-1", "usage_plan": "gold"}]},
             "usage_plans": {"gold": {"quota": {"limit": 10, "period": "DAY"}}},
             "rate_limit_service": {"cluster": "rls", "domain": "d", "failure_mode": "deny", "checks": ["quota", "stage"]}}"#,
    )
    .unwrap();
    let svc = c.rate_limit_service.unwrap();
    assert_eq!(svc.cluster, "rls");
    assert_eq!(svc.checks, vec![Check::Stage, Check::Quota]);
    assert_eq!(svc.timeout_ms, DEFAULT_TIMEOUT_MS);
    assert!(svc.local_first);
}

// --- descriptors -----------------------------------------------------------------------------

fn entries(d: &RateLimitDescriptor) -> Vec<(&str, &str)> {
    d.entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect()
}

fn full_facts() -> RequestFacts<'static> {
    RequestFacts {
        stage: "prod",
        route: Some("GET /pets/{id}"),
        stage_throttle: true,
        key: Some(KeyFacts {
            id: "partner-a",
            usage_plan: "gold",
            throttle: true,
            quota_period: Some("DAY"),
        }),
        client: Some("203.0.113.7"),
    }
}

#[test]
fn descriptors_for_every_check_in_order() {
    let d = build_descriptors(&base(), &full_facts());
    let checks: Vec<Check> = d.iter().map(|(c, _)| *c).collect();
    assert_eq!(checks, Check::ALL.to_vec());
    assert_eq!(
        entries(&d[0].1),
        [
            ("stage", "prod"),
            ("usage_plan", "gold"),
            ("api_key_id", "partner-a")
        ]
    );
    assert_eq!(
        entries(&d[1].1),
        [("stage", "prod"), ("route", "GET /pets/{id}")]
    );
    assert_eq!(entries(&d[2].1), [("stage", "prod")]);
    assert_eq!(
        entries(&d[3].1),
        [("stage", "prod"), ("client", "203.0.113.7")]
    );
    assert_eq!(
        entries(&d[4].1),
        [
            ("stage", "prod"),
            ("usage_plan", "gold"),
            ("api_key_id", "partner-a"),
            ("quota", "DAY")
        ]
    );
    assert!(d.iter().all(|(_, d)| d.limit.is_none()));

    let req = build_request(&base(), &d);
    assert_eq!(req.domain, "tollgate");
    assert_eq!(req.descriptors.len(), 5);
    assert_eq!(req.hits_addend, 0);
}

#[test]
fn only_delegated_checks_that_apply_are_sent() {
    let only_quota = cfg(
        json!({"cluster": "c", "domain": "d", "failure_mode": "allow",
                                "checks": ["quota", "client"]}),
    );
    let d = build_descriptors(&only_quota, &full_facts());
    assert_eq!(
        d.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [Check::Client, Check::Quota]
    );

    // No key: neither plan nor quota; no route matched; no stage throttle; no client buckets.
    let facts = RequestFacts {
        stage: "prod",
        ..RequestFacts::default()
    };
    assert!(build_descriptors(&base(), &facts).is_empty());

    // A key whose plan has a quota but no throttle.
    let facts = RequestFacts {
        stage: "prod",
        key: Some(KeyFacts {
            id: "k",
            usage_plan: "free",
            throttle: false,
            quota_period: Some("MONTH"),
        }),
        ..RequestFacts::default()
    };
    let d = build_descriptors(&base(), &facts);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, Check::Quota);

    // An empty value cannot be sent (the service requires non-empty values).
    let facts = RequestFacts {
        stage: "prod",
        client: Some(""),
        stage_throttle: true,
        ..RequestFacts::default()
    };
    let d = build_descriptors(&base(), &facts);
    assert_eq!(
        d.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        [Check::Stage]
    );
}

// --- wire format -----------------------------------------------------------------------------

#[test]
fn request_bytes_match_a_hand_encoding() {
    let req = RateLimitRequest {
        domain: "d".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "k".into(),
                value: "v".into(),
            }],
            limit: None,
        }],
        hits_addend: 0,
    };
    // domain (1, LEN) "d"; descriptors (2, LEN, 8 bytes): entries (1, LEN, 6 bytes):
    // key (1, LEN) "k", value (2, LEN) "v". hits_addend 0 is not written.
    let hand: &[u8] = &[
        0x0a, 0x01, b'd', 0x12, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v',
    ];
    assert_eq!(encode_request(&req), hand);
    assert_eq!(RateLimitRequest::decode(hand).unwrap(), req);

    let mut three = req.clone();
    three.hits_addend = 3;
    let mut bytes = hand.to_vec();
    bytes.extend_from_slice(&[0x18, 0x03]); // hits_addend (3, VARINT) 3
    assert_eq!(encode_request(&three), bytes);
}

/// OVER_LIMIT; one status: OVER_LIMIT, 10 per MINUTE, 0 remaining, 30 s to reset; one header
/// `x: 1`.
const OVER_LIMIT_BYTES: &[u8] = &[
    0x08, 0x02, // overall_code (1, VARINT) = OVER_LIMIT
    0x12, 0x0c, // statuses (2, LEN, 12 bytes)
    0x08, 0x02, //   code = OVER_LIMIT
    0x12, 0x04, 0x08, 0x0a, 0x10, 0x02, //   current_limit: requests_per_unit 10, unit MINUTE
    0x22, 0x02, 0x08, 0x1e, //   duration_until_reset: seconds 30
    0x1a, 0x06, 0x0a, 0x01, b'x', 0x12, 0x01, b'1', // response_headers_to_add: x: 1
];

#[test]
fn response_bytes_decode_and_round_trip() {
    let r = decode_response(OVER_LIMIT_BYTES).unwrap();
    let expected = RateLimitResponse {
        overall_code: Code::OverLimit as i32,
        statuses: vec![DescriptorStatus {
            code: Code::OverLimit as i32,
            current_limit: Some(RateLimit {
                name: String::new(),
                requests_per_unit: 10,
                unit: Unit::Minute as i32,
            }),
            limit_remaining: 0,
            duration_until_reset: Some(Duration {
                seconds: 30,
                nanos: 0,
            }),
        }],
        response_headers_to_add: vec![HeaderValue {
            key: "x".into(),
            value: "1".into(),
            raw_value: Vec::new(),
        }],
    };
    assert_eq!(r, expected);
    assert_eq!(r.overall_code(), Code::OverLimit);
    assert_eq!(expected.encode_to_vec(), OVER_LIMIT_BYTES);
}

#[test]
fn unknown_fields_are_skipped_and_garbage_is_refused() {
    // raw_body (5, LEN) "no" and request_headers_to_add (4, LEN) before overall_code OK.
    let bytes = [
        0x2a, 0x02, b'n', b'o', 0x22, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x08, 0x01,
    ];
    let r = decode_response(&bytes).unwrap();
    assert_eq!(r.overall_code(), Code::Ok);
    assert!(r.statuses.is_empty());
    // Truncated inside a length-delimited field; a wire type that does not exist.
    assert!(decode_response(&OVER_LIMIT_BYTES[..5]).is_none());
    assert!(decode_response(&[0x0f]).is_none());
    assert!(decode_response(&[0xff; 12]).is_none());
    // The empty message is valid protobuf: overall_code UNKNOWN.
    assert_eq!(decode_response(&[]).unwrap().overall_code(), Code::Unknown);
}

// --- decisions -------------------------------------------------------------------------------

/// A per-descriptor status (also used by the gateway's tests).
pub(crate) fn status(
    code: Code,
    per_unit: u32,
    unit: Unit,
    remaining: u32,
    reset: Option<(i64, i32)>,
) -> DescriptorStatus {
    DescriptorStatus {
        code: code as i32,
        current_limit: Some(RateLimit {
            name: String::new(),
            requests_per_unit: per_unit,
            unit: unit as i32,
        }),
        limit_remaining: remaining,
        duration_until_reset: reset.map(|(seconds, nanos)| Duration { seconds, nanos }),
    }
}

/// An encoded `RateLimitResponse` (also used by the gateway's tests).
pub(crate) fn response(
    overall: Code,
    statuses: Vec<DescriptorStatus>,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    RateLimitResponse {
        overall_code: overall as i32,
        statuses,
        response_headers_to_add: headers
            .iter()
            .map(|(k, v)| HeaderValue {
                key: (*k).into(),
                value: (*v).into(),
                raw_value: Vec::new(),
            })
            .collect(),
    }
    .encode_to_vec()
}

/// The decision with every header it sends, as the filter applies it with no local policies.
struct Rendered {
    refuse: Option<ErrorType>,
    failure: Option<CallFailure>,
    headers: Vec<(String, String)>,
}

fn interpret_in(
    mode: HeaderMode,
    cfg: &ServiceConfig,
    checks: &[Check],
    reply: Result<&[u8], CallFailure>,
) -> Rendered {
    let d = interpret(cfg, checks, reply);
    Rendered {
        refuse: d.refuse,
        failure: d.failure,
        headers: d.header_list(mode, &d.reports),
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn over_limit_from_hand_bytes_is_a_429_with_retry_after() {
    let d = interpret_in(
        HeaderMode::Draft10,
        &base(),
        &[Check::Route],
        Ok(OVER_LIMIT_BYTES),
    );
    assert_eq!(d.refuse, Some(ErrorType::Throttled));
    assert_eq!(d.failure, None);
    assert_eq!(
        d.headers,
        h(&[
            ("retry-after", "30"),
            ("ratelimit-policy", "\"route\";q=10;w=60"),
            ("ratelimit", "\"route\";r=0;t=30"),
            ("x", "1"),
        ])
    );
}

#[test]
fn ok_forwards_with_ratelimit_headers() {
    let bytes = response(
        Code::Ok,
        vec![
            status(Code::Ok, 100, Unit::Second, 99, Some((0, 400_000_000))),
            status(Code::Ok, 100_000, Unit::Day, 41_000, Some((3_600, 0))),
        ],
        &[],
    );
    let checks = [Check::Plan, Check::Quota];
    let d = interpret_in(HeaderMode::Draft10, &base(), &checks, Ok(&bytes));
    assert_eq!(d.refuse, None);
    assert_eq!(
        d.headers,
        h(&[
            (
                "ratelimit-policy",
                "\"plan\";q=100;w=1, \"quota\";q=100000;w=86400"
            ),
            ("ratelimit", "\"plan\";r=99;t=1, \"quota\";r=41000;t=3600"),
        ])
    );
    let d = interpret_in(HeaderMode::XRateLimit, &base(), &checks, Ok(&bytes));
    assert_eq!(
        d.headers,
        h(&[
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "99"),
            ("x-ratelimit-reset", "1"),
        ])
    );
    let d = interpret_in(HeaderMode::None, &base(), &checks, Ok(&bytes));
    assert!(d.headers.is_empty());
}

#[test]
fn the_first_over_limit_descriptor_names_the_error_and_the_longest_wait_wins() {
    let bytes = response(
        Code::OverLimit,
        vec![
            status(Code::Ok, 100, Unit::Second, 5, Some((1, 0))),
            status(Code::OverLimit, 1000, Unit::Day, 0, Some((7200, 1))),
            status(Code::OverLimit, 10, Unit::Minute, 0, Some((20, 0))),
        ],
        &[],
    );
    let d = interpret_in(
        HeaderMode::None,
        &base(),
        &[Check::Plan, Check::Quota, Check::Client],
        Ok(&bytes),
    );
    // The checks are given in the order of the descriptors sent; here quota comes first.
    assert_eq!(d.refuse, Some(ErrorType::QuotaExceeded));
    assert_eq!(d.headers, h(&[("retry-after", "7201")]));

    // A throttle over limit before the quota: THROTTLED.
    let bytes = response(
        Code::OverLimit,
        vec![
            status(Code::OverLimit, 100, Unit::Second, 0, None),
            status(Code::OverLimit, 1000, Unit::Day, 0, None),
        ],
        &[],
    );
    let d = interpret_in(
        HeaderMode::None,
        &base(),
        &[Check::Plan, Check::Quota],
        Ok(&bytes),
    );
    assert_eq!(d.refuse, Some(ErrorType::Throttled));
    // No duration_until_reset: the unit's length.
    assert_eq!(d.headers, h(&[("retry-after", "86400")]));

    // A week (unit 7, the newest) is a fixed length too: the wait and the policy's window.
    let bytes = response(
        Code::OverLimit,
        vec![status(Code::OverLimit, 50, Unit::Week, 0, None)],
        &[],
    );
    let d = interpret_in(HeaderMode::Draft10, &base(), &[Check::Quota], Ok(&bytes));
    assert_eq!(
        d.headers,
        h(&[
            ("retry-after", "604800"),
            ("ratelimit-policy", "\"quota\";q=50;w=604800"),
            ("ratelimit", "\"quota\";r=0;t=604800"),
        ])
    );
}

#[test]
fn over_limit_without_statuses_still_refuses() {
    // Limitador's RLS answers with overall_code and its own headers, no statuses.
    let bytes = response(
        Code::OverLimit,
        Vec::new(),
        &[
            ("X-RateLimit-Limit", "10"),
            ("Retry-After", "99"),
            ("x-limitador", "ok"),
        ],
    );
    let d = interpret_in(HeaderMode::Draft10, &base(), &[Check::Quota], Ok(&bytes));
    // No status names the check: the one asked tells the error, a quota's.
    assert_eq!(d.refuse, Some(ErrorType::QuotaExceeded));
    let two = [Check::Quota, Check::Client];
    let d2 = interpret_in(HeaderMode::Draft10, &base(), &two, Ok(&bytes));
    assert_eq!(
        d2.refuse,
        Some(ErrorType::Throttled),
        "checks that disagree"
    );
    let two = [Check::Stage, Check::Client];
    let d2 = interpret_in(HeaderMode::Draft10, &base(), &two, Ok(&bytes));
    assert_eq!(d2.refuse, Some(ErrorType::Throttled));
    // No status tells a reset time: the service's Retry-After is taken, sent once, by
    // tollgate; names lowercased.
    assert_eq!(
        d.headers,
        h(&[
            ("retry-after", "99"),
            ("x-ratelimit-limit", "10"),
            ("x-limitador", "ok"),
        ])
    );
    // Month and year units have no fixed window: `w` is left out; status without a limit is
    // not reported.
    let bytes = response(
        Code::Ok,
        vec![
            status(Code::Ok, 5, Unit::Month, 4, Some((-3, 0))),
            DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset: None,
            },
        ],
        &[],
    );
    let d = interpret_in(
        HeaderMode::Draft10,
        &base(),
        &[Check::Quota, Check::Stage],
        Ok(&bytes),
    );
    assert_eq!(
        d.headers,
        h(&[
            ("ratelimit-policy", "\"quota\";q=5"),
            ("ratelimit", "\"quota\";r=4;t=0"),
        ])
    );
    // Without a reset time a month's `t` is 1, as its Retry-After, not 0 (reset already).
    for unit in [Unit::Month, Unit::Year] {
        let bytes = response(
            Code::OverLimit,
            vec![status(Code::OverLimit, 5, unit, 0, None)],
            &[],
        );
        let d = interpret_in(HeaderMode::Draft10, &base(), &[Check::Quota], Ok(&bytes));
        assert_eq!(
            d.headers,
            h(&[
                ("retry-after", "1"),
                ("ratelimit-policy", "\"quota\";q=5"),
                ("ratelimit", "\"quota\";r=0;t=1"),
            ])
        );
    }
}

#[test]
fn unsafe_service_headers_are_dropped() {
    let bytes = response(
        Code::Ok,
        Vec::new(),
        &[
            (":status", "200"),
            ("content-length", "0"),
            ("Transfer-Encoding", "chunked"),
            ("bad name", "x"),
            ("", "x"),
            ("x-split", "a\r\nset-cookie: b"),
            ("x-nul", "a\0b"),
            ("x-ok", " fine "),
        ],
    );
    let d = interpret_in(HeaderMode::Draft10, &base(), &[], Ok(&bytes));
    assert_eq!(d.headers, h(&[("x-ok", "fine")]));

    // raw_value is used when value is empty, if it is clean text.
    let raw = RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: Vec::new(),
        response_headers_to_add: vec![
            HeaderValue {
                key: "x-raw".into(),
                value: String::new(),
                raw_value: b"r1".to_vec(),
            },
            HeaderValue {
                key: "x-raw-bad".into(),
                value: String::new(),
                raw_value: vec![0xff, 0x0a],
            },
        ],
    }
    .encode_to_vec();
    let d = interpret_in(HeaderMode::Draft10, &base(), &[], Ok(&raw));
    assert_eq!(d.headers, h(&[("x-raw", "r1")]));
}

#[test]
fn failures_follow_failure_mode() {
    let deny = base();
    let mut allow = base();
    allow.failure_mode = FailureMode::Allow;
    let unknown = response(Code::Unknown, Vec::new(), &[]);
    let out_of_range = RateLimitResponse {
        overall_code: 7,
        statuses: Vec::new(),
        response_headers_to_add: Vec::new(),
    }
    .encode_to_vec();
    let cases: [(Result<&[u8], CallFailure>, CallFailure); 6] = [
        (Err(CallFailure::Timeout), CallFailure::Timeout),
        (
            Err(CallFailure::Grpc(Some(14))),
            CallFailure::Grpc(Some(14)),
        ),
        (Err(CallFailure::Grpc(None)), CallFailure::Grpc(None)),
        (Ok(&[0x0a, 0x05, 0x01]), CallFailure::Malformed),
        (Ok(&unknown), CallFailure::UnknownCode),
        (Ok(&out_of_range), CallFailure::UnknownCode),
    ];
    for (reply, failure) in cases {
        let d = interpret_in(HeaderMode::Draft10, &deny, &[Check::Plan], reply);
        assert_eq!(d.refuse, Some(ErrorType::Throttled), "{failure:?}");
        assert_eq!(d.headers, h(&[("retry-after", "1")]));
        assert_eq!(d.failure, Some(failure));
        let d = interpret_in(HeaderMode::Draft10, &allow, &[Check::Plan], reply);
        assert_eq!(d.refuse, None);
        assert!(d.headers.is_empty());
        assert_eq!(d.failure, Some(failure));
    }
    assert_eq!(
        CallFailure::from_grpc_status(4, 3, 20),
        CallFailure::Timeout
    );
    // Envoy 1.40 reports a timed-out call as 14 UNAVAILABLE, like a service that is down.
    assert_eq!(
        CallFailure::from_grpc_status(14, 20, 20),
        CallFailure::Timeout
    );
    assert_eq!(
        CallFailure::from_grpc_status(14, 25, 20),
        CallFailure::Timeout
    );
    assert_eq!(
        CallFailure::from_grpc_status(14, 2, 20),
        CallFailure::Grpc(Some(14))
    );
    // A tonic service answers the expiry of the `grpc-timeout` Envoy sent with 1 CANCELLED,
    // sometimes before Envoy's own timer fires; a CANCELLED well before the deadline is the
    // service's own error.
    assert_eq!(
        CallFailure::from_grpc_status(1, 24, 20),
        CallFailure::Timeout
    );
    assert_eq!(
        CallFailure::from_grpc_status(1, 17, 20),
        CallFailure::Grpc(Some(1))
    );
    assert_eq!(
        CallFailure::from_grpc_status(13, 50, 20),
        CallFailure::Grpc(Some(13))
    );
    assert_eq!(CallFailure::Timeout.as_str(), "timeout");
    assert_eq!(CallFailure::Grpc(None).as_str(), "grpc_error");
    assert_eq!(CallFailure::Malformed.as_str(), "malformed");
    assert_eq!(CallFailure::UnknownCode.as_str(), "unknown_code");
}

#[test]
fn names_and_units() {
    for c in Check::ALL {
        assert_eq!(Check::parse(c.as_str()), Some(c));
    }
    assert_eq!(Check::parse("routes"), None);
    assert_eq!(Check::Quota.error(), ErrorType::QuotaExceeded);
    assert_eq!(Check::Client.error(), ErrorType::Throttled);
    assert_eq!(Unit::Hour.seconds(), 3_600);
    assert_eq!(Unit::Year.seconds(), 0);
    assert_eq!(Unit::Week.seconds(), 604_800);
    assert_eq!(Unit::try_from(7), Ok(Unit::Week));
    assert!(Unit::try_from(8).is_err());
    assert_eq!(GRPC_SERVICE, "envoy.service.ratelimit.v3.RateLimitService");
    assert_eq!(GRPC_METHOD, "ShouldRateLimit");
    assert_eq!(
        duration_secs_ceil(&Duration {
            seconds: 2,
            nanos: 1
        }),
        3
    );
    assert_eq!(
        duration_secs_ceil(&Duration {
            seconds: -2,
            nanos: 5
        }),
        0
    );
}

#[test]
fn the_service_never_sets_tollgates_headers_nor_a_second_value_of_them() {
    let service = h(&[
        ("retry-after", "3600"),
        ("x-ratelimit-limit", "999"),
        ("ratelimit", "\"svc\";r=1"),
        ("access-control-allow-origin", "*"),
        ("access-control-allow-credentials", "true"),
        ("vary", "X-Svc"),
        ("set-cookie", "rl=1"),
        ("x-svc", "yes"),
    ]);
    // tollgate sends draft-10 headers here: the service's X-RateLimit-* may go on beside them.
    let own = vec![
        ("retry-after", "60".to_string()),
        ("ratelimit-policy", "\"quota\";q=10".to_string()),
        ("ratelimit", "\"quota\";r=0;t=60".to_string()),
    ];
    assert_eq!(
        passed_on(service.clone(), &own),
        h(&[
            ("x-ratelimit-limit", "999"),
            ("set-cookie", "rl=1"),
            ("x-svc", "yes")
        ])
    );
    // In x-ratelimit mode tollgate's X-RateLimit-* win.
    let own = vec![("x-ratelimit-limit", "10".to_string())];
    assert_eq!(
        passed_on(service, &own),
        h(&[
            ("ratelimit", "\"svc\";r=1"),
            ("set-cookie", "rl=1"),
            ("x-svc", "yes")
        ])
    );
}

#[test]
fn retry_after_comes_from_the_reset_time_even_without_a_limit() {
    let bytes = response(
        Code::OverLimit,
        vec![DescriptorStatus {
            code: Code::OverLimit as i32,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: Some(Duration {
                seconds: 60,
                nanos: 0,
            }),
        }],
        &[],
    );
    let d = interpret(&base(), &[Check::Quota], Ok(&bytes));
    assert_eq!(d.retry_after_s, 60);
    // A reset time past any calendar window is capped.
    let bytes = response(
        Code::OverLimit,
        vec![status(
            Code::OverLimit,
            5,
            Unit::Day,
            0,
            Some((i64::MAX, 0)),
        )],
        &[("retry-after", "99999999999999")],
    );
    let d = interpret(&base(), &[Check::Quota], Ok(&bytes));
    assert_eq!(d.retry_after_s, MAX_RESET_S);
    assert!(d.reports.iter().all(|r| r.reset_s <= MAX_RESET_S));
}
