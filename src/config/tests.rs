use super::*;

fn ok(json: &str) -> Config {
    match Config::from_json(json.as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("{json} should load, got {e}"),
    }
}

fn bad(json: &str) -> FieldError {
    match Config::from_json(json.as_bytes()) {
        Ok(_) => panic!("{json} should be refused"),
        Err(e) => e,
    }
}

const KEY_A: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

#[test]
fn empty_config_passes_everything() {
    // A UTF-8 byte order mark is ignored (RFC 8259 lets a parser do so).
    for json in ["{}", "", "  \n", "\u{feff}{}", "\u{feff}"] {
        let c = ok(json);
        assert_eq!(c.stage, "default");
        assert!(c.enforce);
        assert!(c.routes.is_empty());
        assert!(c.cors.is_none());
        assert!(c.access_log.is_none());
        assert_eq!(c.rate_limit_headers, HeaderMode::Draft10);
        assert_eq!(c.filter_state, Exports::ALL);
    }
}

#[test]
fn filter_state_is_all_none_or_the_listed_variables() {
    for json in [
        r#"{}"#,
        r#"{"filter_state": true}"#,
        r#"{"filter_state": null}"#,
    ] {
        let c = ok(json);
        assert_eq!(c.filter_state, Exports::ALL, "{json}");
        for f in Field::EXPORTED {
            assert!(c.filter_state.contains(f), "{json}: {f:?}");
        }
    }
    for json in [r#"{"filter_state": false}"#, r#"{"filter_state": []}"#] {
        let c = ok(json);
        assert!(c.filter_state.is_empty(), "{json}");
        assert!(Field::EXPORTED.iter().all(|f| !c.filter_state.contains(*f)));
    }
    let c = ok(r#"{"filter_state": ["resourcePath", "error.responseType", "resourcePath"]}"#);
    for f in Field::EXPORTED {
        let listed = matches!(f, Field::ResourcePath | Field::ErrorResponseType);
        assert_eq!(c.filter_state.contains(f), listed, "{f:?}");
    }
    // Variables Envoy has operators of its own for are never exported.
    assert!(!Exports::ALL.contains(Field::Path));
    assert!(!Exports::ALL.contains(Field::Status));
}

#[test]
fn contract_example_loads() {
    let json = format!(
        r#"{{
      "stage": "prod",
      "api_key": {{
        "header": "x-api-key",
        "keys": [
          {{"id": "partner-a", "sha256": "{KEY_A}", "usage_plan": "gold", "invalidate_cache": true}},
          {{"id": "local-dev", "value": "dev-key-123", "usage_plan": "free"}}
        ]
      }},
      "usage_plans": {{
        "gold": {{"throttle": {{"rate": 100, "burst": 200}}, "quota": {{"limit": 100000, "period": "DAY"}}}},
        "free": {{"throttle": {{"rate": 1, "burst": 5}}, "quota": {{"limit": 1000, "period": "MONTH"}}}}
      }},
      "throttle": {{"rate": 10000, "burst": 5000}},
      "client_throttle": {{"by": "ip", "rate": 50, "burst": 100}},
      "rate_limit_headers": "draft10",
      "cors": {{
        "allow_origins": ["https://app.example.com", "https://*.example.com"],
        "allow_methods": ["GET", "POST", "PUT", "DELETE"],
        "allow_headers": ["content-type", "authorization", "x-api-key"],
        "expose_headers": ["x-request-id"],
        "max_age": 600,
        "allow_credentials": true
      }},
      "cache": {{"enabled": true, "ttl": 300, "require_authorization": true,
                "unauthorized_strategy": "SUCCEED_WITH_RESPONSE_HEADER"}},
      "access_log": {{"format": "json"}},
      "routes": [
        {{"match": "GET /pets/{{id}}", "throttle": {{"rate": 20, "burst": 40}},
         "cache": {{"ttl": 60, "key_parameters": ["querystring.page", "header.accept-language"]}}}},
        {{"match": "POST /pets", "api_key_required": true}},
        {{"match": "ANY /admin/{{proxy+}}", "api_key_required": true, "cors": false}}
      ]
    }}"#
    );
    let c = ok(&json);
    assert_eq!(c.stage, "prod");
    assert_eq!(c.plans.len(), 2);
    let keys = c.api_keys.as_ref().unwrap();
    let a = keys.lookup(b"abc").unwrap();
    assert_eq!(a.id, "partner-a");
    assert_eq!(c.plans[a.plan.unwrap()].name, "gold");
    assert!(a.invalidate_cache);
    let dev = keys.lookup(b"dev-key-123").unwrap();
    assert_eq!(c.plans[dev.plan.unwrap()].name, "free");
    assert_eq!(
        c.plans[dev.plan.unwrap()].quota,
        Some(Quota {
            limit: 1000,
            period: Period::Month
        })
    );
    // The plain key is warned about, without its value.
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].contains("local-dev"));
    assert!(!c.warnings[0].contains("dev-key-123"));
    assert!(c.warnings[0].contains("(1 in all)"), "{}", c.warnings[0]);
    assert_eq!(c.routes.len(), 3);
    assert!(c.caching);
    assert_eq!(c.routes[0].cache.as_ref().unwrap().ttl_s, 60);
    assert_eq!(c.routes[1].cache.as_ref().unwrap().ttl_s, 300);
    assert!(c.routes[1].api_key_required);
    assert!(matches!(c.routes[2].cors, RouteCors::Off));
    assert!(c.cors_for(&c.routes[2]).is_none());
    assert!(c.cors_for(&c.routes[0]).is_some());
    let idx = c.table.find(b"GET", b"/pets/7");
    assert_eq!(c.route(idx).name.as_deref(), Some("GET /pets/{id}"));
    assert!(c.route(c.table.find(b"GET", b"/nothing")).name.is_none());
    assert_eq!(
        c.client_throttle.as_ref().unwrap().slots,
        DEFAULT_CLIENT_SLOTS
    );
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (r#"{"nope": 1}"#, "", "unknown field `nope`"),
        (r#"[]"#, "", "must be a JSON object"),
        (
            r#"{"throttle": [1, 2]}"#,
            "throttle",
            "invalid type: array, expected an object",
        ),
        (
            r#"{"routes": ["GET /a"]}"#,
            "routes[0]",
            "invalid type: string, expected an object",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "throttle": [1, 1]}]}"#,
            "routes[0].throttle",
            "invalid type: array, expected an object",
        ),
        (
            r#"{"usage_plans": {"a": {"quota": [1, "DAY"]}}}"#,
            "usage_plans.a.quota",
            "invalid type: array, expected an object",
        ),
        (r#"{"stage": "a""#, "", "not valid JSON: EOF"),
        (
            r#"{"routes": [{"throttle": {"rate": 1, "burst": 1}}]}"#,
            "routes[0].match",
            "is required",
        ),
        (
            r#"{"api_key": {"keys": [{"id": 7}]}}"#,
            "api_key.keys[0].id",
            "expected a string",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "value": "x"}, {"id": "b"}, 5]}}"#,
            "api_key.keys[2]",
            "expected an object",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "value": "x"}, {"id": "b", "valeu": "y"}]}}"#,
            "api_key.keys[1]",
            "unknown field `valeu`",
        ),
        (
            r#"{"usage_plans": []}"#,
            "usage_plans",
            "expected an object",
        ),
        (
            r#"{"cors": {"allow_origins": ["https://a.com", 5]}}"#,
            "cors.allow_origins[1]",
            "expected a string",
        ),
        (r#"{"stage": "has space"}"#, "stage", "letters, digits"),
        (r#"{"stage": 5}"#, "stage", "invalid type"),
        (
            r#"{"routes": [{"match": "GET /a"}, {"match": "GET /b", "throttle": {"rate": 0, "burst": 1}}]}"#,
            "routes[1].throttle.rate",
            "must be a positive number",
        ),
        (
            r#"{"routes": [{"match": "GET /b", "throttle": {"rate": 1, "burst": 1.5}}]}"#,
            "routes[0].throttle.burst",
            "positive integer",
        ),
        (
            r#"{"routes": [{"match": "GET /b", "throttle": {"rate": -2, "burst": 1}}]}"#,
            "routes[0].throttle.rate",
            "positive number",
        ),
        (
            r#"{"routes": [{"match": "GET /b", "throttle": {"rate": "fast", "burst": 1}}]}"#,
            "routes[0].throttle.rate",
            "invalid type",
        ),
        (
            r#"{"routes": [{"match": "GET /b", "throttle": {"rate": 1, "burst": 1, "x": 2}}]}"#,
            "routes[0].throttle",
            "unknown field `x`",
        ),
        (
            r#"{"routes": [{"match": "GET b"}]}"#,
            "routes[0].match",
            "must start with '/'",
        ),
        (
            r#"{"routes": [{"match": "GET /a/{id}"}, {"match": "GET /a/{x}"}]}"#,
            "routes[1].match",
            "duplicates routes[0]",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "api_key_required": true}]}"#,
            "routes[0].api_key_required",
            "no keys are configured",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "sha256": "ABC"}]}}"#,
            "api_key.keys[0].sha256",
            "64 lowercase hex",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "value": "x"}, {"id": "a", "value": "y"}]}}"#,
            "api_key.keys[1].id",
            "duplicates the id of api_key.keys[0]",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "value": "x"}, {"id": "b", "value": "x"}]}}"#,
            "api_key.keys[1]",
            "same key as api_key.keys[0]",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "value": "x", "sha256": "00"}]}}"#,
            "api_key.keys[0]",
            "exactly one of",
        ),
        (
            r#"{"api_key": {"keys": [{"id": "a", "value": "x", "usage_plan": "gold"}]}}"#,
            "api_key.keys[0].usage_plan",
            "names no plan",
        ),
        (
            r#"{"api_key": {"header": "bad header", "keys": []}}"#,
            "api_key.header",
            "header name",
        ),
        (
            r#"{"usage_plans": {"gold": {"quota": {"limit": 10, "period": "YEAR"}}}}"#,
            "usage_plans.gold.quota.period",
            "DAY, WEEK or MONTH",
        ),
        // Contradictions: settings that could never apply.
        (
            r#"{"routes": [{"match": "GET /a", "cache": true}]}"#,
            "routes[0].cache",
            "no top-level `cache` section",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cors": true}]}"#,
            "routes[0].cors",
            "no top-level `cors` section",
        ),
        (
            r#"{"cache": {"require_authorization": false, "unauthorized_strategy": "FAIL_WITH_403"}}"#,
            "cache.unauthorized_strategy",
            "never applies",
        ),
        (
            r#"{"cache": {"methods": ["GET", "HEAD", "GET"]}}"#,
            "cache.methods[2]",
            "given before",
        ),
        (
            r#"{"cache": {"key_parameters": ["header.Authorization"]}}"#,
            "cache.key_parameters[0]",
            "never caches a request with Authorization",
        ),
        (
            r#"{"usage_plans": {"gold": {"quota": {"limit": 0, "period": "DAY"}}}}"#,
            "usage_plans.gold.quota.limit",
            "positive integer",
        ),
        (
            r#"{"client_throttle": {"by": "cookie", "rate": 1, "burst": 1}}"#,
            "client_throttle.by",
            "header:NAME",
        ),
        (
            r#"{"client_throttle": {"by": "api_key", "rate": 1, "burst": 1}}"#,
            "client_throttle.by",
            "needs an api_key section",
        ),
        (
            r#"{"client_throttle": {"by": "ip", "rate": 1, "burst": 1, "slots": 0}}"#,
            "client_throttle.slots",
            "positive integer",
        ),
        (
            r#"{"rate_limit_headers": "draft7"}"#,
            "rate_limit_headers",
            "draft10",
        ),
        (
            r#"{"cors": {"allow_origins": ["*"], "allow_credentials": true}}"#,
            "cors",
            "",
        ),
        (
            r#"{"cors": {"allow_origins": ["https://a.com"], "max_age": -1}}"#,
            "cors.max_age",
            "0 to 86400",
        ),
        (
            r#"{"cors": []}"#,
            "cors",
            "invalid type: array, expected an object",
        ),
        (
            r#"{"cors": 5}"#,
            "cors",
            "invalid type: number, expected an object",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cors": {"allow_origins": ["https://a.com"], "bogus": 1}}]}"#,
            "routes[0].cors",
            "unknown field `bogus`",
        ),
        (
            r#"{"cache": {"ttl": 3601}}"#,
            "cache.ttl",
            "from 0 (no caching) to 3600",
        ),
        (
            r#"{"cache": {"ttl": -1}}"#,
            "cache.ttl",
            "from 0 (no caching) to 3600",
        ),
        (r#"{"cache": {"ttl": 1.5}}"#, "cache.ttl", "whole number"),
        (
            r#"{"cache": {"ttl": "60"}}"#,
            "cache.ttl",
            "invalid type: string, expected a number",
        ),
        (
            r#"{"cache": {"enabled": true, "bogus": 1}}"#,
            "cache",
            "unknown field `bogus`",
        ),
        (
            r#"{"cache": {"unauthorized_strategy": "IGNORE"}}"#,
            "cache.unauthorized_strategy",
            "FAIL_WITH_403",
        ),
        (
            r#"{"cache": {"require_authorization": "yes"}}"#,
            "cache.require_authorization",
            "expected a boolean",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cache": {"key_parameters": ["querystring.page", "page"]}}]}"#,
            "routes[0].cache.key_parameters[1]",
            "\"querystring.NAME\" or \"header.NAME\"",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cache": {"key_parameters": ["header.Accept", "header.accept"]}}]}"#,
            "routes[0].cache.key_parameters[1]",
            "duplicates routes[0].cache.key_parameters[0]",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cache": {"key_parameters": "querystring.page"}}]}"#,
            "routes[0].cache.key_parameters",
            "expected an array",
        ),
        (
            r#"{"routes": [{"match": "ANY /a", "cache": {"methods": ["GET", "POST"]}}]}"#,
            "routes[0].cache.methods[1]",
            "only GET responses",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cache": {"methods": []}}]}"#,
            "routes[0].cache.methods",
            "must name \"GET\"",
        ),
        (
            r#"{"cache": {"methods": ["HEAD"]}}"#,
            "cache.methods",
            "answers HEAD only from stored GET responses",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cache": 60}]}"#,
            "routes[0].cache",
            "invalid type: number, expected true, false or an object",
        ),
        (
            r#"{"routes": [{"match": "GET /a", "cors": "yes"}]}"#,
            "routes[0].cors",
            "invalid type: string, expected true, false or an object",
        ),
        (
            r#"{"access_log": {"format": "$context.nope"}}"#,
            "access_log.format",
            "nope",
        ),
        (r#"{"enforce": "no"}"#, "enforce", "invalid type"),
        (
            r#"{"filter_state": "stage"}"#,
            "filter_state",
            "invalid type: string, expected a boolean or an array of variable names",
        ),
        (
            r#"{"filter_state": ["stage", 1]}"#,
            "filter_state[1]",
            "invalid type: number, expected a string",
        ),
        (
            r#"{"filter_state": ["stage", "path"]}"#,
            "filter_state[1]",
            "`path` is not exported as filter state, expected one of `stage`, `resourcePath`",
        ),
        (
            r#"{"filter_state": ["$context.stage"]}"#,
            "filter_state[0]",
            "not exported",
        ),
    ];
    for (json, path, msg) in cases {
        let e = bad(json);
        assert!(
            e.path.starts_with(path),
            "{json}: path {:?} should start with {path:?} ({e})",
            e.path
        );
        assert!(
            e.to_string().contains(msg),
            "{json}: {e} should say {msg:?}"
        );
    }
}

#[test]
fn route_enforce_inherits_stage() {
    let c = ok(
        r#"{"enforce": false, "routes": [{"match": "GET /a"}, {"match": "GET /b", "enforce": true}]}"#,
    );
    assert!(!c.enforce);
    assert!(!c.routes[0].enforce);
    assert!(c.routes[1].enforce);
    assert!(!c.default_route.enforce);
}

#[test]
fn route_cors_true_means_stage_policy() {
    let c = ok(
        r#"{"cors": {"allow_origins": ["https://a.com"]}, "routes": [{"match": "GET /a", "cors": true}, {"match": "GET /b", "cors": {"allow_origins": ["https://b.com"]}}]}"#,
    );
    assert!(matches!(c.routes[0].cors, RouteCors::Stage));
    assert!(matches!(c.routes[1].cors, RouteCors::Own(_)));
}

#[test]
fn client_by_header_is_lowercased() {
    let c =
        ok(r#"{"client_throttle": {"by": "header:X-Tenant", "rate": 1, "burst": 2, "slots": 16}}"#);
    let ct = c.client_throttle.unwrap();
    assert_eq!(ct.by, ClientBy::Header("x-tenant".into()));
    assert_eq!(ct.slots, 16);
}

#[test]
fn cache_sections_compile_to_route_policies() {
    let c = ok(r#"{
          "cache": {"enabled": true, "ttl": 300, "require_authorization": true,
                    "unauthorized_strategy": "SUCCEED_WITH_RESPONSE_HEADER"},
          "routes": [
            {"match": "GET /pets/{id}", "cache": {"ttl": 60, "key_parameters": ["querystring.page", "header.accept-language"]}},
            {"match": "POST /pets"},
            {"match": "GET /live", "cache": false},
            {"match": "GET /zero", "cache": {"ttl": 0}},
            {"match": "GET /strict", "cache": {"unauthorized_strategy": "FAIL_WITH_403", "methods": ["GET"]}},
            {"match": "GET /same", "cache": true}
          ]
        }"#);
    assert!(c.caching);
    let stage = c.default_route.cache.as_ref().unwrap();
    assert_eq!(stage.ttl_s, 300);
    assert!(stage.query_keys.is_empty());
    let pets = c.routes[0].cache.as_ref().unwrap();
    assert_eq!(pets.ttl_s, 60);
    assert_eq!(pets.query_keys, vec![b"page".to_vec()]);
    assert_eq!(pets.header_keys, vec!["accept-language".to_string()]);
    assert_eq!(
        pets.unauthorized_strategy,
        crate::cache::UnauthorizedStrategy::SucceedWithResponseHeader
    );
    // A route without a cache section has the stage's policy (POST is then simply not cached).
    assert_eq!(c.routes[1].cache.as_ref(), Some(stage));
    assert!(c.routes[2].cache.is_none());
    assert!(c.routes[3].cache.is_none());
    let strict = c.routes[4].cache.as_ref().unwrap();
    assert_eq!(strict.ttl_s, 300);
    assert_eq!(
        strict.unauthorized_strategy,
        crate::cache::UnauthorizedStrategy::FailWith403
    );
    assert!(!strict.methods.head);
    assert_eq!(c.routes[5].cache.as_ref(), Some(stage));
}

#[test]
fn caching_is_in_use_only_where_a_section_enables_it() {
    assert!(!ok("{}").caching);
    assert!(!ok(r#"{"cache": {"enabled": false}}"#).caching);
    assert!(!ok(r#"{"cache": {"ttl": 0}}"#).caching);
    // A stage switched off stays off on routes that do not switch it on.
    let c = ok(
        r#"{"cache": {"enabled": false, "ttl": 30}, "routes": [{"match": "GET /a", "cache": {"ttl": 10}}, {"match": "GET /b", "cache": {"enabled": true}}]}"#,
    );
    assert!(c.caching);
    assert!(c.default_route.cache.is_none());
    assert!(c.routes[0].cache.is_none());
    assert_eq!(c.routes[1].cache.as_ref().unwrap().ttl_s, 30);
    // A route may cache on a stage without a cache section.
    let c = ok(r#"{"routes": [{"match": "GET /a", "cache": {"ttl": 10}}]}"#);
    assert!(c.caching);
    assert!(c.default_route.cache.is_none());
    assert_eq!(c.routes[0].cache.as_ref().unwrap().ttl_s, 10);
    assert_eq!(
        c.routes[0].cache.as_ref().unwrap().methods,
        crate::cache::CacheMethods::DEFAULT
    );
}

#[test]
fn a_key_given_twice_in_one_object_is_refused() {
    for (json, field) in [
        (
            r#"{"throttle": {"rate": 1, "burst": 1}, "throttle": null}"#,
            "throttle",
        ),
        (
            r#"{"throttle": {"rate": 1, "burst": 1, "burst": 2}}"#,
            "throttle.burst",
        ),
        (
            r#"{"routes": [{"match": "GET /a"}, {"match": "GET /b", "match": "GET /c"}]}"#,
            "routes[1].match",
        ),
        (r#"{"a": [[{}, {"x": 1, "x": 2}]]}"#, "a[0][1].x"),
    ] {
        let e = bad(json).to_string();
        assert!(
            e.contains(&format!("{field}: given twice (duplicate key at line 1")),
            "{json}: {e}"
        );
    }
    // The same key in different objects is fine.
    ok(
        r#"{"throttle": {"rate": 1, "burst": 1}, "client_throttle": {"by": "ip", "rate": 1, "burst": 1}}"#,
    );
    // The first repeated key of a long object, where a scan would stop (line and column
    // included), though the keys are sorted, not compared pairwise.
    let plans: Vec<String> = (0..20_000).map(|i| format!("\"p{i}\": {{}}")).collect();
    let many = format!(r#"{{"usage_plans": {{{}}}}}"#, plans.join(",\n"));
    assert_eq!(
        Config::from_json(many.as_bytes()).unwrap().plans.len(),
        20_000
    );
    let twice = format!(
        "{{\"usage_plans\": {{{},\n\"p19000\": {{}},\n\"p3\": {{}}}}}}",
        plans.join(",\n")
    );
    let e = bad(&twice).to_string();
    assert!(
        e.contains("usage_plans.p19000: given twice (duplicate key at line 20001 column 8)"),
        "{e}"
    );
    // A repeated key is reported after the errors in the values that follow it in its object.
    let e = bad(r#"{"throttle": {"rate": 1, "rate": 2, "burst": [}}"#).to_string();
    assert!(!e.contains("given twice"), "{e}");
}

#[test]
fn headers_filters_never_see_are_refused_as_key_or_identity() {
    for name in [
        "host",
        "Host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
    ] {
        let e = bad(&format!(
            r#"{{"api_key": {{"header": "{name}", "keys": [{{"id": "a", "value": "k"}}]}}}}"#
        ));
        assert_eq!(e.path, "api_key.header", "{e}");
        assert!(e.message.contains("every key would be missing"), "{e}");
        let e = bad(&format!(
            r#"{{"client_throttle": {{"by": "header:{name}", "rate": 1, "burst": 1}}}}"#
        ));
        assert_eq!(e.path, "client_throttle.by", "{e}");
        assert!(e.message.contains("count by its IP"), "{e}");
    }
    ok(r#"{"client_throttle": {"by": "header:x-forwarded-host", "rate": 1, "burst": 1}}"#);
}

#[test]
fn a_stage_section_makes_a_routes_true_meaningful() {
    ok(r#"{"cache": {"enabled": false}, "routes": [{"match": "GET /a", "cache": true}]}"#);
    ok(r#"{"cors": {"allow_origins": ["https://a.com"]},
           "routes": [{"match": "GET /a", "cors": true}]}"#);
    ok(
        r#"{"cache": {"require_authorization": true, "unauthorized_strategy": "FAIL_WITH_403"},
           "routes": [{"match": "GET /a", "cache": {"require_authorization": false}}]}"#,
    );
    ok(r#"{"routes": [{"match": "GET /a", "cache": false, "cors": false}]}"#);
}

#[test]
fn a_key_required_sections_index_held_by_an_open_route_is_warned_about() {
    let keys = r#""api_key": {"keys": [{"id": "a", "sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}]}"#;
    let warned = |routes: &str| {
        let c =
            Config::from_json(format!(r#"{{{keys}, "routes": [{routes}]}}"#).as_bytes()).unwrap();
        c.warnings
            .iter()
            .filter(|w| w.contains("base path"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let w = warned(
        r#"{"match": "ANY /{proxy+}"}, {"match": "ANY /admin/{proxy+}", "api_key_required": true}"#,
    );
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "routes[1] requires an API key, but its base path /admin (and /admin/) is routes[0]'s for GET"
        ),
        "{w:?}"
    );
    // Any method the greedy route answers: an open DELETE or POST route holds /admin for it.
    for (open, method) in [
        ("DELETE /{x}", "DELETE"),
        ("POST /admin", "POST"),
        ("HEAD /{x}", "HEAD"),
    ] {
        let w = warned(&format!(
            r#"{{"match": "ANY /admin/{{proxy+}}", "api_key_required": true}}, {{"match": "{open}"}}"#
        ));
        assert_eq!(w.len(), 1, "{open}: {w:?}");
        assert!(
            w[0].contains(&format!("is routes[1]'s for {method}")),
            "{w:?}"
        );
    }
    // HEAD reaches GET routes; a method the greedy route does not answer is not its concern.
    assert_eq!(
        warned(
            r#"{"match": "GET /admin/{proxy+}", "api_key_required": true}, {"match": "HEAD /{x}"}"#
        )
        .len(),
        1
    );
    assert!(warned(
        r#"{"match": "GET /admin/{proxy+}", "api_key_required": true}, {"match": "POST /admin"}"#
    )
    .is_empty());
    // The root: `/`, not `/ (and //)`.
    let w = warned(r#"{"match": "GET /"}, {"match": "ANY /{proxy+}", "api_key_required": true}"#);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "routes[1] requires an API key, but its base path / is routes[0]'s for GET,"
        ),
        "{w:?}"
    );
    // The index covered: by the section itself (no other route) or a keyed route of its own.
    assert!(warned(r#"{"match": "ANY /admin/{proxy+}", "api_key_required": true}"#).is_empty());
    assert!(warned(
        r#"{"match": "ANY /{proxy+}"}, {"match": "ANY /admin/{proxy+}", "api_key_required": true},
           {"match": "ANY /admin", "api_key_required": true}"#
    )
    .is_empty());
    // A parameter in the base: not told.
    assert!(warned(
        r#"{"match": "ANY /{proxy+}"}, {"match": "ANY /{t}/admin/{proxy+}", "api_key_required": true}"#
    )
    .is_empty());
}

#[test]
fn a_cors_policy_that_browsers_cannot_send_the_key_under_is_warned_about() {
    let keys = r#""api_key": {"keys": [{"id": "a", "sha256": "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"}]}"#;
    let warned = |rest: &str| {
        let c = Config::from_json(format!(r#"{{{keys}, {rest}}}"#).as_bytes()).unwrap();
        c.warnings
            .iter()
            .filter(|w| w.contains("allow_headers does not list"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let cors = |headers: &str| {
        format!(
            r#""cors": {{"allow_origins": ["https://app.example.com"], "allow_headers": [{headers}]}}"#
        )
    };
    let routes = r#""routes": [{"match": "GET /x", "api_key_required": true},
                                {"match": "GET /y", "api_key_required": true},
                                {"match": "GET /open"}]"#;
    // Once for the stage's policy, however many routes use it.
    let w = warned(&format!("{}, {routes}", cors(r#""content-type""#)));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].starts_with("routes[0] requires an API key in x-api-key, but cors.allow_headers does not list x-api-key"), "{w:?}");
    // Listed (any case), `*`, or no CORS on the keyed routes: nothing to say.
    assert!(warned(&format!("{}, {routes}", cors(r#""X-Api-Key""#))).is_empty());
    assert!(warned(&format!("{}, {routes}", cors(r#""*""#))).is_empty());
    assert!(warned(&format!(
        r#"{}, "routes": [{{"match": "GET /x", "api_key_required": true, "cors": false}}, {{"match": "GET /open"}}]"#,
        cors("")
    ))
    .is_empty());
    // A route's own policy is told apart; the key's header is the configured one.
    let w = warned(&format!(
        r#"{}, "routes": [{{"match": "GET /x", "api_key_required": true,
             "cors": {{"allow_origins": ["https://b.example.com"]}}}}]"#,
        cors(r#""x-api-key""#)
    ));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("its own cors.allow_headers"), "{w:?}");
}

#[test]
fn keys_find_their_plan_among_many() {
    // Plans are looked up by binary search over the name-ordered list.
    let plans: Vec<String> = (0..5_000)
        .map(|i| {
            format!(
                r#""p{i}": {{"quota": {{"limit": {}, "period": "DAY"}}}}"#,
                i + 1
            )
        })
        .collect();
    let keys: Vec<String> = [4_999, 0, 1_234, 10]
        .iter()
        .map(|i| format!(r#"{{"id": "k{i}", "value": "key-{i}", "usage_plan": "p{i}"}}"#))
        .collect();
    let json = format!(
        r#"{{"usage_plans": {{{}}}, "api_key": {{"keys": [{}]}}}}"#,
        plans.join(","),
        keys.join(",")
    );
    let c = Config::from_json(json.as_bytes()).unwrap();
    let keys = c.api_keys.as_ref().unwrap();
    for (k, want) in keys.keys().iter().zip([5_000u64, 1, 1_235, 11]) {
        let plan = c.plans.get(k.plan.unwrap()).unwrap();
        assert_eq!(plan.quota.as_ref().unwrap().limit, want, "{}", k.id);
    }
    let unknown = json.replace(r#""usage_plan": "p10""#, r#""usage_plan": "p5000""#);
    let e = bad(&unknown).to_string();
    assert!(
        e.contains("api_key.keys[3].usage_plan: names no plan"),
        "{e}"
    );
}

#[test]
fn null_is_absent_and_a_routes_null_inherits_the_stage() {
    let stage = r#""cors": {"allow_origins": ["https://a.example"]}, "cache": {"ttl": 30}"#;
    let absent = ok(&format!(
        r#"{{{stage}, "routes": [{{"match": "GET /a"}}]}}"#
    ));
    let null = ok(&format!(
        r#"{{{stage}, "routes": [{{"match": "GET /a", "cors": null, "cache": null}}]}}"#
    ));
    let off = ok(&format!(
        r#"{{{stage}, "routes": [{{"match": "GET /a", "cors": false, "cache": false}}]}}"#
    ));
    assert!(matches!(absent.routes[0].cors, RouteCors::Stage));
    assert!(matches!(null.routes[0].cors, RouteCors::Stage));
    assert!(matches!(off.routes[0].cors, RouteCors::Off));
    let ttl = |c: &Config| c.routes[0].cache.as_ref().map(|p| p.ttl_s);
    assert_eq!(ttl(&null), ttl(&absent));
    assert!(ttl(&absent).is_some_and(|t| t > 0));
    assert!(off.routes[0].cache.as_ref().is_none_or(|p| p.ttl_s == 0));
    // A top-level null is the default.
    let c = ok(r#"{"stage": null, "enforce": null, "routes": null}"#);
    assert_eq!(c.stage, "default");
    assert!(c.enforce);
    assert!(c.routes.is_empty());
}

#[test]
fn a_delegated_client_bucket_never_keys_on_a_credential() {
    let svc = r#""rate_limit_service": {"cluster": "rls", "domain": "d", "timeout_ms": 20,
                 "failure_mode": "allow", "checks": ["client"]}"#;
    let keys = r#""api_key": {"header": "X-Token", "keys": [{"id": "a", "value": "k-a"}]}"#;
    for header in [
        "x-token",
        "X-Token",
        "authorization",
        "cookie",
        "proxy-authorization",
    ] {
        let e = bad(&format!(
            r#"{{{svc}, {keys}, "client_throttle": {{"by": "header:{header}", "rate": 1, "burst": 1}}}}"#
        ));
        assert_eq!(e.path, "client_throttle.by", "{header}");
        assert!(e.message.contains("credentials"), "{header}: {e}");
    }
    // Kept locally (hashed into a slot, never sent), or another header: fine.
    ok(&format!(
        r#"{{{keys}, "client_throttle": {{"by": "header:x-token", "rate": 1, "burst": 1}}}}"#
    ));
    ok(&format!(
        r#"{{{svc}, {keys}, "client_throttle": {{"by": "header:x-tenant", "rate": 1, "burst": 1}}}}"#
    ));
}

#[test]
fn a_key_value_no_request_could_present_is_refused() {
    for v in [
        " secret",
        "secret ",
        "\tsecret",
        "sec\u{0}ret",
        "sec\nret",
        "sec\u{7f}ret",
    ] {
        let json = serde_json::json!({"api_key": {"keys": [{"id": "a", "value": v}]}}).to_string();
        let e = bad(&json);
        assert_eq!(e.path, "api_key.keys[0].value", "{v:?}");
        assert!(e.message.contains("could present"), "{v:?}: {e}");
    }
    ok(r#"{"api_key": {"keys": [{"id": "a", "value": "two words\tand a tab"}]}}"#);
}

#[test]
fn the_smallest_rate_is_said() {
    let e = bad(r#"{"throttle": {"rate": 1e-7, "burst": 1}}"#);
    assert_eq!(e.path, "throttle.rate");
    assert!(e.message.contains("at least 0.000001"), "{e}");
    ok(r#"{"throttle": {"rate": 0.000001, "burst": 1}}"#);
}

#[test]
fn an_integer_turned_string_by_envoys_yaml_loader_is_explained() {
    let e = bad(r#"{"throttle": {"rate": 1, "burst": "4294967295"}}"#);
    assert_eq!(e.path, "throttle.burst");
    assert!(e.message.contains("YAML loader"), "{e}");
    let e = bad(r#"{"throttle": {"rate": "0.5", "burst": 1}}"#);
    assert_eq!(e.path, "throttle.rate");
    assert!(e.message.contains("YAML loader"), "{e}");
    for small in ["five", "20", "2147483647"] {
        let e = bad(&format!(
            r#"{{"throttle": {{"rate": 1, "burst": "{small}"}}}}"#
        ));
        assert_eq!(e.message, "invalid type: string, expected a number");
    }
}

#[test]
fn whole_numbers_may_be_written_as_floats() {
    // `-0`, `600.0` and `6e2` are whole numbers, as a Struct's doubles are read.
    let c = ok(r#"{"cors": {"allow_origins": ["https://a.com"], "max_age": -0}}"#);
    assert!(c.cors.is_some());
    ok(r#"{"cors": {"allow_origins": ["https://a.com"], "max_age": 600.0}}"#);
    ok(r#"{"throttle": {"rate": 1, "burst": 1e2}}"#);
    ok(r#"{"cache": {"ttl": -0}}"#);
    ok(r#"{"cache": {"ttl": 3.6e3}}"#);
    // Up to 4294967295, where such text is read exactly; a larger quota is written as an
    // integer.
    let plan = |limit: &str| {
        format!(
            r#"{{"api_key": {{"keys": [{{"id": "a", "value": "k", "usage_plan": "p"}}]}},
                "usage_plans": {{"p": {{"quota": {{"limit": {limit}, "period": "DAY"}}}}}}}}"#
        )
    };
    ok(&plan("4.294967295e9"));
    ok(&plan("10000000000000000"));
    for limit in ["1e10", "1e16", "9007199254740991.0"] {
        let e = bad(&plan(limit));
        assert_eq!(e.path, "usage_plans.p.quota.limit", "{e}");
        assert!(e.message.contains("without a fraction or exponent"), "{e}");
    }
    // Past the largest integer: no hint about how to write it.
    for limit in ["18446744073709551616", "1e20"] {
        let e = bad(&plan(limit));
        assert_eq!(e.path, "usage_plans.p.quota.limit", "{e}");
        assert_eq!(
            e.message, "must be a positive integer, at most 18446744073709551615",
            "{e}"
        );
    }
    ok(&plan("18446744073709551615"));
    // Past a double: the parser's error names the field.
    let e = bad(r#"{"throttle": {"rate": 1e400, "burst": 1}}"#);
    assert_eq!(e.path, "throttle.rate", "{e}");
    assert_eq!(
        e.message,
        "not valid JSON: number out of range at line 1 column 27"
    );
    let e = bad(r#"{"cors": {"allow_origins": ["https://a.com"], "max_age": [1e999]}}"#);
    assert_eq!(e.path, "cors.max_age[0]", "{e}");
    for (json, path) in [
        (
            r#"{"cors": {"allow_origins": ["https://a.com"], "max_age": 0.5}}"#,
            "cors.max_age",
        ),
        (
            r#"{"cors": {"allow_origins": ["https://a.com"], "max_age": -1.0}}"#,
            "cors.max_age",
        ),
        (
            r#"{"throttle": {"rate": 1, "burst": 1e300}}"#,
            "throttle.burst",
        ),
        (
            r#"{"throttle": {"rate": 1, "burst": 0.0}}"#,
            "throttle.burst",
        ),
        (r#"{"cache": {"ttl": 3600.5}}"#, "cache.ttl"),
    ] {
        let e = bad(json);
        assert_eq!(e.path, path, "{json}: {e}");
    }
    // A BOM before a configuration that is wrong still gets the field's error.
    let e = bad("\u{feff}{\"throttle\": {\"rate\": 1}}");
    assert_eq!(e.path, "throttle.burst", "{e}");
}

#[test]
fn a_key_in_authorization_on_a_caching_configuration_is_warned_about() {
    let cfg = |header: &str, cache: &str| {
        format!(
            r#"{{"api_key": {{"header": "{header}", "keys": [{{"id": "a", "sha256": "{}"}}]}}{cache}}}"#,
            "ab".repeat(32)
        )
    };
    let c = ok(&cfg("Authorization", r#", "cache": {"ttl": 60}"#));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("never cached"));
    assert!(ok(&cfg("authorization", "")).warnings.is_empty());
    assert!(ok(&cfg("x-api-key", r#", "cache": {"ttl": 60}"#))
        .warnings
        .is_empty());
}

#[test]
fn the_key_header_is_never_one_the_access_record_prints() {
    for header in ["User-Agent", "x-request-id"] {
        let e = bad(&format!(
            r#"{{"api_key": {{"header": "{header}", "keys": [{{"id": "a", "sha256": "{}"}}]}}}}"#,
            "ab".repeat(32)
        ));
        assert_eq!(e.path, "api_key.header", "{e}");
        assert!(e.message.contains("no key may be logged"), "{e}");
    }
}

#[test]
fn a_configuration_that_checks_nothing_is_warned_about() {
    let nothing = "the configuration checks nothing";
    // Empty (no configuration given, or an empty Struct: the same bytes), `{}`, or observing
    // only.
    for json in [
        "",
        "{}",
        r#"{"stage": "prod", "access_log": {"format": "json"}}"#,
    ] {
        let c = ok(json);
        assert!(c.warnings.iter().any(|w| w.starts_with(nothing)), "{json}");
    }
    for json in [
        r#"{"throttle": {"rate": 1, "burst": 1}}"#,
        r#"{"client_throttle": {"by": "ip", "rate": 1, "burst": 1}}"#,
        r#"{"cors": {"allow_origins": ["https://a.example"]}}"#,
        r#"{"routes": [{"match": "GET /a"}]}"#,
        r#"{"api_key": {"keys": [{"id": "a", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}]}}"#,
        r#"{"cache": {"ttl": 60}}"#,
    ] {
        let c = ok(json);
        assert!(!c.warnings.iter().any(|w| w.starts_with(nothing)), "{json}");
    }
}

#[test]
fn the_root_id_picks_the_role_and_refuses_a_misspelt_upstream_one() {
    assert_eq!(role_of("tollgate_upstream"), Ok(true));
    // Main roles may name "upstream" in other words (Istio's root_id is the WasmPlugin's name).
    for main in [
        "",
        "tollgate",
        "gateway",
        "edge-1",
        "upstream",
        "upstream-edge",
        "api_upstream_v2",
        "tollgate_upstreams",
    ] {
        assert_eq!(role_of(main), Ok(false), "{main}");
    }
    for wrong in [
        "tollgate-upstream",
        "Tollgate_Upstream",
        "tollgate.upstream",
        "tollgate_upstream ",
    ] {
        let e = role_of(wrong).unwrap_err();
        assert!(e.contains("\"tollgate_upstream\" exactly"), "{e}");
        assert!(e.contains(&format!("\"{wrong}\"")), "{e}");
    }
}

#[test]
fn the_load_summary_tells_what_a_configuration_holds() {
    let c = ok(r#"{"stage": "prod", "throttle": {"rate": 1, "burst": 1},
                   "cors": {"allow_origins": ["https://a.example"]},
                   "routes": [{"match": "GET /a"}, {"match": "POST /a"}],
                   "access_log": {"format": "clf"}, "enforce": false}"#);
    assert_eq!(
        c.summary(&[0x6b, 0x0c, 0x2a, 0x91, 0xf3, 0xde, 0x77]),
        "stage \"prod\", 2 route(s), 0 API key(s), 0 usage plan(s), report-only; digest \
         6b0c2a91f3de"
    );
    assert_eq!(
        ok("").summary(&[1]),
        "stage \"default\", 0 route(s), 0 API key(s), 0 usage plan(s); digest 01"
    );
    // Without the stage's export, SECURITY.md's guard would refuse every request.
    for exports in [r#"false"#, r#"["resourcePath"]"#] {
        let c = ok(&format!(r#"{{"filter_state": {exports}}}"#));
        assert!(
            c.summary(&[1])
                .ends_with(", stage not exported as filter state (a guard after tollgate refuses all); digest 01"),
            "{exports}"
        );
    }
    assert!(!ok(r#"{"filter_state": ["stage"]}"#)
        .summary(&[1])
        .contains("not exported"));
}

#[test]
fn yaml_in_a_string_value_is_told_apart() {
    let e = Config::from_json(b"stage: prod\nthrottle:\n  rate: 1\n  burst: 1\n").unwrap_err();
    assert!(
        e.message
            .ends_with("a StringValue holds JSON text, not YAML"),
        "{e}"
    );
    assert!(e.message.starts_with("not valid JSON ("), "{e}");
}

#[test]
fn keys_given_as_plain_values_make_one_warning() {
    let keys: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"id": "k{i}", "value": "secret-{i}"}}"#))
        .collect();
    let c =
        Config::from_json(format!(r#"{{"api_key": {{"keys": [{}]}}}}"#, keys.join(",")).as_bytes())
            .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings.first());
    assert!(
        c.warnings[0].starts_with("api_key.keys[0] (k0): key given as plain `value` (5000 in all)"),
        "{}",
        c.warnings[0]
    );
    assert!(!c.warnings[0].contains("secret"));
}
