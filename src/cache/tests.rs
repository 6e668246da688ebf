use super::*;

fn policy(keys: &[&str]) -> CachePolicy {
    let params = keys
        .iter()
        .map(|k| parse_key_parameter(k).unwrap())
        .collect();
    CacheSettings {
        key_parameters: Some(params),
        ..CacheSettings::default()
    }
    .policy()
    .unwrap()
}

fn no_headers(_: &str) -> Option<Vec<u8>> {
    None
}

fn key(p: &CachePolicy, query: &str, headers: &[(&str, &str)]) -> String {
    let q = if query == "<none>" {
        None
    } else {
        Some(query.as_bytes())
    };
    let mut h = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_bytes().to_vec())
    };
    String::from_utf8(key_query(p, q, &mut h)).unwrap()
}

#[test]
fn key_parameters_parse_with_their_kind() {
    assert_eq!(
        parse_key_parameter("querystring.page"),
        Ok(KeyParameter::Query("page".into()))
    );
    assert_eq!(
        parse_key_parameter("method.request.querystring.filter[status]"),
        Ok(KeyParameter::Query("filter[status]".into()))
    );
    assert_eq!(
        parse_key_parameter("header.Accept-Language"),
        Ok(KeyParameter::Header("accept-language".into()))
    );
    assert_eq!(
        parse_key_parameter("method.request.header.x-tenant"),
        Ok(KeyParameter::Header("x-tenant".into()))
    );
    for (bad, says) in [
        ("page", "must be"),
        ("querystring.", "query parameter name"),
        ("querystring.a b", "query parameter name"),
        ("querystring.a&b", "query parameter name"),
        ("header.", "header name"),
        ("header.a:b", "header name"),
        ("header.X-Tollgate-Cache", "tollgate's own"),
        ("header.Cache-Control", "rewrites it"),
        ("header.pragma", "rewrites it"),
        ("path.id", "whole path"),
        ("method.request.path.id", "whole path"),
        ("querystring", "must be"),
    ] {
        let e = parse_key_parameter(bad).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn settings_overlay_field_by_field_and_fill_defaults() {
    let stage = CacheSettings {
        ttl_s: Some(60),
        unauthorized_strategy: Some(UnauthorizedStrategy::FailWith403),
        key_parameters: Some(vec![KeyParameter::Query("page".into())]),
        ..CacheSettings::default()
    };
    let route = CacheSettings {
        ttl_s: Some(10),
        key_parameters: Some(vec![]),
        ..CacheSettings::default()
    };
    let p = stage.overlay(&route).policy().unwrap();
    assert_eq!(p.ttl_s, 10);
    assert_eq!(p.unauthorized_strategy, UnauthorizedStrategy::FailWith403);
    assert!(
        p.query_keys.is_empty(),
        "an empty list overrides the stage's"
    );
    assert!(p.require_authorization);
    assert_eq!(p.methods, CacheMethods::DEFAULT);

    // Defaults: enabled, 300 s, authorization required, SUCCEED_WITH_RESPONSE_HEADER.
    let p = CacheSettings::default().policy().unwrap();
    assert_eq!(p.ttl_s, DEFAULT_TTL_S);
    assert_eq!(
        p.unauthorized_strategy,
        UnauthorizedStrategy::SucceedWithResponseHeader
    );
    assert!(p.require_authorization);

    // Off: ttl 0, or enabled false (inherited unless the route says otherwise).
    let off = CacheSettings {
        ttl_s: Some(0),
        ..CacheSettings::default()
    };
    assert!(off.policy().is_none());
    let disabled = CacheSettings {
        enabled: Some(false),
        ..CacheSettings::default()
    };
    assert!(disabled
        .overlay(&CacheSettings::default())
        .policy()
        .is_none());
    let reenabled = CacheSettings {
        enabled: Some(true),
        ..CacheSettings::default()
    };
    assert!(disabled.overlay(&reenabled).policy().is_some());
    assert!(stage.overlay(&off).policy().is_none());
}

#[test]
fn key_keeps_only_named_parameters_sorted() {
    let p = policy(&["querystring.page", "querystring.size"]);
    assert_eq!(key(&p, "size=10&utm=x&page=2", &[]), "page=2&size=10");
    assert_eq!(key(&p, "page=2&size=10", &[]), "page=2&size=10");
    assert_eq!(key(&p, "utm=x", &[]), "");
    assert_eq!(key(&p, "<none>", &[]), "");
    assert_eq!(key(&p, "", &[]), "");
    // Repeated parameters keep the client's order (a server may read the first or the last).
    assert_eq!(key(&p, "page=2&x=1&page=1", &[]), "page=2&page=1");
    assert_eq!(key(&p, "page=1&page=2", &[]), "page=1&page=2");
    // A name without `=` stays distinct from an empty value.
    assert_eq!(key(&p, "page", &[]), "page");
    assert_eq!(key(&p, "page=", &[]), "page=");
    assert_eq!(key(&p, "&&page=1&", &[]), "page=1");
    // Names are case-sensitive.
    assert_eq!(key(&p, "Page=1", &[]), "");
    // No key parameters: every query shares the path's entry.
    let none = policy(&[]);
    assert_eq!(key(&none, "a=1&b=2", &[("accept", "x")]), "");
}

#[test]
fn key_spellings_that_mean_the_same_share_and_others_do_not() {
    let p = policy(&["querystring.q", "querystring.filter[status]"]);
    // Escapes of unreserved characters are one spelling; hex case does not matter.
    assert_eq!(key(&p, "q=%41b", &[]), key(&p, "q=Ab", &[]));
    assert_eq!(key(&p, "q=%7e", &[]), key(&p, "q=~", &[]));
    assert_eq!(key(&p, "q=%7E", &[]), "q=%7E");
    assert_eq!(key(&p, "q=%2f", &[]), "q=%2F");
    // `+`, `%20` and `%2B` can mean different things to different servers: never shared.
    let plus = key(&p, "q=a+b", &[]);
    let space = key(&p, "q=a%20b", &[]);
    let encoded_plus = key(&p, "q=a%2Bb", &[]);
    assert_eq!(plus, "q=a+b");
    assert_ne!(plus, space);
    assert_ne!(plus, encoded_plus);
    assert_ne!(space, encoded_plus);
    // Malformed escapes are kept as data.
    assert_eq!(key(&p, "q=%zz%4", &[]), "q=%25zz%254");
    // Bracketed names match however the brackets are written.
    assert_eq!(
        key(&p, "filter[status]=open", &[]),
        key(&p, "filter%5Bstatus%5D=open", &[])
    );
    assert_eq!(
        key(&p, "filter%5bstatus%5d=open", &[]),
        "filter%5Bstatus%5D=open"
    );
    // Non-ASCII and control bytes are escaped.
    assert_eq!(key(&p, "q=\u{e9}\n", &[]), "q=%C3%A9%0A");
}

#[test]
fn key_headers_fold_in_after_the_query_and_never_collide_with_it() {
    let p = policy(&[
        "header.accept-language",
        "querystring.page",
        "header.x-tenant",
    ]);
    // Header values by digest: the first 128 bits of their SHA-256, in hex.
    assert_eq!(
        key(
            &p,
            "page=1",
            &[("accept-language", "fr, en;q=0.5"), ("x-tenant", "t1")]
        ),
        "page=1&~h.accept-language=160528D4DAAB014EC9D8DD13D69D085A\
         &~h.x-tenant=628B49D96DCDE97A430DD4F597705899"
    );
    // SHA-256 of the empty string begins e3b0c442 98fc1c14 9afbf4c8 996fb924.
    assert_eq!(
        key(&p, "page=1", &[("x-tenant", "")]),
        "page=1&~h.x-tenant=E3B0C44298FC1C149AFBF4C8996FB924"
    );
    let k = key(&p, "<none>", &[("x-tenant", "a&b=c")]);
    assert!(
        k.starts_with("~h.x-tenant=") && k.len() == "~h.x-tenant=".len() + 32,
        "{k}"
    );
    assert_ne!(k, key(&p, "<none>", &[("x-tenant", "a&b=d")]));
    // A credential used as a key parameter never appears in the key (the `:path` access logs
    // print).
    let keyed = policy(&["header.x-api-key"]);
    let k = key(&keyed, "<none>", &[("x-api-key", "partner-a-secret")]);
    assert!(!k.contains("secret") && !k.contains("partner"), "{k}");
    assert_eq!(key(&p, "page=1", &[]), "page=1");
    // A query parameter named like a header entry is escaped (`~` -> %7E), so it cannot pose
    // as one.
    let q = policy(&["querystring.~h.x-tenant", "header.x-tenant"]);
    assert_eq!(key(&q, "~h.x-tenant=t1", &[]), "%7Eh.x-tenant=t1");
    assert_ne!(
        key(&q, "~h.x-tenant=t1", &[]),
        key(&q, "<none>", &[("x-tenant", "t1")])
    );
}

#[test]
fn rewrite_only_when_the_query_is_not_its_own_key() {
    let p = policy(&["querystring.page"]);
    let none = &mut no_headers;
    assert_eq!(key_rewrite(&p, b"/pets", none), None);
    assert_eq!(key_rewrite(&p, b"/pets?page=1", none), None);
    let rw = key_rewrite(&p, b"/pets?x=1&page=1", none).unwrap();
    assert_eq!(rw.path, b"/pets?page=1");
    assert_eq!(rw.stash, b"?x=1&page=1");
    let rw = key_rewrite(&p, b"/pets?x=1", none).unwrap();
    assert_eq!(rw.path, b"/pets");
    assert_eq!(rw.stash, b"?x=1");
    let rw = key_rewrite(&p, b"/pets?", none).unwrap();
    assert_eq!(rw.path, b"/pets");
    assert_eq!(rw.stash, b"?");
    // A header parameter on a request without a query.
    let h = policy(&["header.accept"]);
    let rw = key_rewrite(&h, b"/pets", &mut |_| Some(b"text/html".to_vec())).unwrap();
    let digest = key(&h, "<none>", &[("accept", "text/html")]);
    assert_eq!(rw.path, [b"/pets?".as_slice(), digest.as_bytes()].concat());
    assert_eq!(rw.stash, b"-");
}

#[test]
fn the_upstream_role_restores_exactly_what_the_client_sent() {
    let p = policy(&["querystring.page", "header.accept"]);
    let mut headers = |n: &str| (n == "accept").then(|| b"a/b".to_vec());
    for original in [
        "/pets",
        "/pets?",
        "/pets?page=1",
        "/pets?x=%2F&page=1&page=2&y",
        "/pets?a+b=c%20d",
    ] {
        let rw = key_rewrite(&p, original.as_bytes(), &mut headers)
            .unwrap_or_else(|| panic!("{original} has a header part, so it is rewritten"));
        let back = restore_query(Some(&p), &rw.path, &rw.stash).unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), original);
    }
    // Envoy's route may rewrite the path part on the way (prefix_rewrite): it is kept.
    let rw = key_rewrite(&p, b"/api/pets?x=1", &mut headers).unwrap();
    let routed = [b"/v2/pets".as_slice(), &rw.path[b"/api/pets".len()..]].concat();
    assert_eq!(
        restore_query(Some(&p), &routed, &rw.stash).unwrap(),
        b"/v2/pets?x=1"
    );
    // A stash that does not normalise to the current query is refused: no query swapping.
    assert_eq!(
        restore_query(Some(&p), b"/pets?page=1&~h.accept=0123", b"?page=2"),
        None
    );
    assert_eq!(
        restore_query(Some(&p), b"/pets?~h.accept=0123", b"?admin=1").unwrap(),
        b"/pets?admin=1",
        "non-key parameters are the client's to choose"
    );
    // Envoy's route may remove or add a key header before the upstream role: the query is
    // restored all the same.
    let rw = key_rewrite(&p, b"/pets?x=1&page=3", &mut headers).unwrap();
    assert_eq!(
        restore_query(Some(&p), &rw.path, &rw.stash).unwrap(),
        b"/pets?x=1&page=3"
    );
    assert_eq!(query_part(b"page=3&~h.accept=AB"), b"page=3");
    assert_eq!(query_part(b"~h.accept=AB"), b"");
    assert_eq!(query_part(b"page=3&%7Eh.x=1"), b"page=3&%7Eh.x=1");
    assert_eq!(restore_query(Some(&p), b"/pets", b""), None);
    assert_eq!(restore_query(Some(&p), b"/pets", b"x"), None);
    assert_eq!(restore_query(Some(&p), b"/pets", b"--"), None);
    // Without the key (the upstream role's configuration lacks it), the stash is put back
    // as it is, still only when well-formed.
    assert_eq!(
        restore_query(None, b"/pets?page=1&~h.accept=0123", b"?page=2&x").unwrap(),
        b"/pets?page=2&x"
    );
    assert_eq!(
        restore_query(None, b"/pets?page=1", b"-").unwrap(),
        b"/pets"
    );
    assert_eq!(restore_query(None, b"/pets", b"x"), None);
}

#[test]
fn split_path_finds_the_query() {
    assert_eq!(split_path(b"/a?b=1"), (&b"/a"[..], Some(&b"b=1"[..])));
    assert_eq!(split_path(b"/a"), (&b"/a"[..], None));
    assert_eq!(split_path(b"/a?"), (&b"/a"[..], Some(&b""[..])));
    assert_eq!(split_path(b"/a?b?c"), (&b"/a"[..], Some(&b"b?c"[..])));
    assert_eq!(split_path(b""), (&b""[..], None));
}

#[test]
fn requests_for_a_fresh_response() {
    let cc = |v: &str| asks_for_fresh(Some(v.as_bytes()), None);
    assert!(cc("max-age=0"));
    assert!(cc("MAX-AGE=0"));
    assert!(cc("max-age = 0"));
    assert!(cc("max-age=00"));
    assert!(cc("max-age=\"0\""));
    assert!(cc("no-transform, max-age=0"));
    assert!(cc("no-cache"));
    assert!(cc("No-Cache"));
    assert!(!cc("max-age=10"));
    assert!(!cc("max-age="));
    assert!(!cc("max-age"));
    assert!(!cc("max-stale=0"));
    assert!(!cc("only-if-cached"));
    assert!(!cc(""));
    assert!(asks_for_fresh(None, Some(b"no-cache")));
    assert!(!asks_for_fresh(None, Some(b"x-custom")));
    assert!(!asks_for_fresh(None, None));
    // Pragma counts only without Cache-Control (RFC 9111 5.4).
    assert!(!asks_for_fresh(Some(b"max-age=60"), Some(b"no-cache")));
}

#[test]
fn invalidation_follows_authorization_and_strategy() {
    let mut p = policy(&[]);
    assert_eq!(invalidation(&p, false, false), Invalidation::NotAsked);
    assert_eq!(invalidation(&p, false, true), Invalidation::NotAsked);
    assert_eq!(invalidation(&p, true, true), Invalidation::Refresh);
    assert_eq!(
        invalidation(&p, true, false),
        Invalidation::Ignore { warn: true }
    );
    p.unauthorized_strategy = UnauthorizedStrategy::SucceedWithoutResponseHeader;
    assert_eq!(
        invalidation(&p, true, false),
        Invalidation::Ignore { warn: false }
    );
    p.unauthorized_strategy = UnauthorizedStrategy::FailWith403;
    assert_eq!(invalidation(&p, true, false), Invalidation::Deny);
    p.require_authorization = false;
    assert_eq!(invalidation(&p, true, false), Invalidation::Refresh);
}

#[test]
fn strategies_round_trip() {
    for s in [
        UnauthorizedStrategy::FailWith403,
        UnauthorizedStrategy::SucceedWithResponseHeader,
        UnauthorizedStrategy::SucceedWithoutResponseHeader,
    ] {
        assert_eq!(UnauthorizedStrategy::parse(s.as_str()), Some(s));
    }
    assert_eq!(UnauthorizedStrategy::parse("fail_with_403"), None);
}

#[test]
fn storage_stamps_the_ttl_unless_the_upstream_refuses() {
    assert_eq!(storage(60, 200, None, false), Storage::Store(60));
    assert_eq!(
        storage(60, 200, Some(b"max-age=5, must-revalidate"), false),
        Storage::Store(60)
    );
    assert_eq!(
        storage(60, 200, Some(b"no-cache"), false),
        Storage::Store(60)
    );
    for cc in [
        "no-store",
        "No-Store",
        "private",
        "private=\"set-cookie\"",
        "public, max-age=60, private",
        "max-age=60,no-store",
    ] {
        assert_eq!(
            storage(60, 200, Some(cc.as_bytes()), false),
            Storage::UpstreamRefused,
            "{cc}"
        );
    }
    for status in [200, 203, 204, 300, 301, 304, 308] {
        assert_eq!(
            storage(60, status, None, false),
            Storage::Store(60),
            "{status}"
        );
    }
    for status in [0, 201, 206, 302, 400, 403, 404, 429, 500, 503] {
        assert_eq!(
            storage(60, status, None, false),
            Storage::DoNotStore,
            "{status}"
        );
    }
    assert_eq!(storage(60, 200, None, true), Storage::DoNotStore);
    assert_eq!(
        storage(60, 200, Some(b"no-store"), true),
        Storage::UpstreamRefused
    );
    assert_eq!(storage(99_999, 200, None, false), Storage::Store(MAX_TTL_S));
    assert_eq!(
        Storage::Store(60).cache_control().as_deref(),
        Some("max-age=60")
    );
    assert_eq!(
        Storage::DoNotStore.cache_control().as_deref(),
        Some("no-store")
    );
    assert_eq!(Storage::UpstreamRefused.cache_control(), None);
}

#[test]
fn control_stash_round_trips() {
    assert_eq!(stash(None), b"-");
    assert_eq!(unstash(&stash(None)), Some(None));
    let v = b"max-age=5, must-revalidate";
    assert_eq!(unstash(&stash(Some(v))), Some(Some(&v[..])));
    assert_eq!(unstash(&stash(Some(b""))), Some(Some(&b""[..])));
    assert_eq!(unstash(b""), None);
    assert_eq!(unstash(b"-x"), None);
    assert_eq!(unstash(b"max-age=1"), None);
}

#[test]
fn http_dates_are_imf_fixdate() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(http_date(1_795_599_149), "Wed, 25 Nov 2026 09:32:29 GMT");
    assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[test]
fn markers_carry_token_ttl_and_query_id() {
    let mut p = policy(&["querystring.page", "header.accept"]);
    p.ttl_s = 60;
    let m = marker("abc", &p);
    assert_eq!(m, format!("abc 60 {:016x}", p.query_id));
    assert_eq!(
        parse_marker(m.as_bytes()),
        Some(Marker {
            token: b"abc",
            ttl_s: 60,
            query_id: p.query_id
        })
    );
    for bad in [
        &b""[..],
        b"abc",
        b"abc 60",
        b" 60 00000000000000ff",
        b"abc 0 00000000000000ff",
        b"abc 3601 00000000000000ff",
        b"abc +60 00000000000000ff",
        b"abc 60 +0000000000000ff",
        b"abc 60 ff",
        b"abc 60 00000000000000fg",
        b"abc 60 00000000000000ff x",
        b"abc 99999999999 00000000000000ff",
    ] {
        assert_eq!(parse_marker(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn query_ids_name_the_query_key_list() {
    let id = |keys: &[&str]| policy(keys).query_id;
    // Same query names, whatever the order, spelling or headers: same id.
    assert_eq!(
        id(&["querystring.b", "querystring.a"]),
        id(&[
            "querystring.a",
            "header.x",
            "querystring.b",
            "querystring.a"
        ])
    );
    let distinct = [
        id(&[]),
        id(&["querystring.a"]),
        id(&["querystring.b"]),
        id(&["querystring.a", "querystring.b"]),
        id(&["querystring.ab"]),
    ];
    for (i, a) in distinct.iter().enumerate() {
        for b in distinct.iter().skip(i + 1) {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn hit_only_when_another_request_stored_the_response() {
    assert_eq!(classify(b"t1", Some(b"t1")), CacheStatus::Miss);
    assert_eq!(classify(b"t1", Some(b"t0")), CacheStatus::Hit);
    assert_eq!(classify(b"t1", None), CacheStatus::Miss);
    assert_eq!(CacheStatus::Hit.as_str(), "hit");
    assert_eq!(CacheStatus::Miss.as_str(), "miss");
    assert_eq!(CacheStatus::Bypass.as_str(), "bypass");
}

#[test]
fn methods_are_get_and_head() {
    assert!(CacheMethods::DEFAULT.allows(b"GET"));
    assert!(CacheMethods::DEFAULT.allows(b"HEAD"));
    assert!(!CacheMethods::DEFAULT.allows(b"POST"));
    assert!(!CacheMethods::DEFAULT.allows(b"get"));
    let get_only = CacheMethods {
        get: true,
        head: false,
    };
    assert!(!get_only.allows(b"HEAD"));
}

#[test]
fn a_304_kept_out_of_the_entry_gets_an_entity_tag_of_its_own() {
    // Envoy's cache filter refreshes an entry with a 304 only when the 304 has no entity tag or
    // the entry's: this one is a quoted strong tag that no upstream's tag equals.
    let tag = unmatched_etag(b"00ff00ff00ff00ff");
    assert_eq!(tag, b"\"tollgate-00ff00ff00ff00ff\"");
    assert_ne!(unmatched_etag(b"1"), unmatched_etag(b"2"));
    assert!(INTERNAL_RESPONSE_HEADERS.contains(&ETAG_STASH));
}

#[test]
fn a_semicolon_in_the_query_makes_a_key_with_query_parameters_ambiguous() {
    let page = policy(&["querystring.page"]);
    assert!(ambiguous_query(&page, b"/p?x=1;page=2"));
    assert!(ambiguous_query(&page, b"/p?page=2;"));
    assert!(!ambiguous_query(&page, b"/p?x=1&page=2"));
    assert!(
        !ambiguous_query(&page, b"/p?x=1%3Bpage=2"),
        "%3B is data to every reader"
    );
    assert!(
        !ambiguous_query(&page, b"/a;b/p"),
        "the path's own rule handles `;` there"
    );
    // No query parameter in the key: the query is dropped whatever it says.
    assert!(!ambiguous_query(
        &policy(&["header.x-tenant"]),
        b"/p?x=1;page=2"
    ));
    assert!(!ambiguous_query(&policy(&[]), b"/p?x=1;page=2"));
}

#[test]
fn a_key_parameter_named_but_for_case_or_badly_escaped_makes_the_query_ambiguous() {
    let page = policy(&["querystring.page"]);
    // ASP.NET reads `Page` as `page`: the upstream answers for both values.
    assert!(ambiguous_query(&page, b"/p?page=1&Page=99"));
    assert!(ambiguous_query(&page, b"/p?PAGE=2"));
    assert!(ambiguous_query(&page, b"/p?%50age=2"), "an escaped P");
    // Go drops a pair whose escape is broken, others keep it as is.
    assert!(ambiguous_query(&page, b"/p?page=%zz"));
    assert!(ambiguous_query(&page, b"/p?page=1%"));
    // Express (`qs`) and PHP read `page[]` as `page`; PHP trims a leading space and reads `.`
    // and ` ` as `_`.
    assert!(ambiguous_query(&page, b"/p?page=1&page[]=2"));
    assert!(ambiguous_query(&page, b"/p?page=1&page%5B0%5D=2"));
    assert!(ambiguous_query(&page, b"/p?+page=2"));
    let size = policy(&["querystring.page_size"]);
    assert!(ambiguous_query(&size, b"/p?page_size=1&page.size=2"));
    assert!(ambiguous_query(&size, b"/p?page+size=2"));
    assert!(ambiguous_query(&size, b"/p?Page_Size=2"));
    assert!(!ambiguous_query(
        &size,
        b"/p?page_size=1&page=2&size=3&pagesize=4"
    ));
    // Parameters out of the key may be anything.
    assert!(!ambiguous_query(&page, b"/p?page=%41&x=%zz&Other=1"));
    assert!(!ambiguous_query(
        &page,
        b"/p?page=1&PAGE_SIZE=2&pages=3&p[age]=4"
    ));
    assert!(!ambiguous_query(&page, b"/p?page=1&page=2&x"));
    assert!(!ambiguous_query(&page, b"/p"));
}
