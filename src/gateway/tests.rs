use super::*;
use crate::throttle::store::MemoryStore;
use std::collections::HashMap;

const SEC: u64 = 1_000_000_000;
const T0: u64 = 1_764_000_000 * SEC; // 2025-11-24

#[derive(Clone)]
struct Req {
    headers: HashMap<String, Vec<u8>>,
    /// Headers sent a second time (their second value).
    again: HashMap<String, Vec<u8>>,
    /// The request has a body.
    body: bool,
    addr: Vec<u8>,
    reads: std::cell::RefCell<Vec<String>>,
}

impl Req {
    fn new(method: &str, path: &str) -> Req {
        let mut headers = HashMap::new();
        headers.insert(":method".into(), method.as_bytes().to_vec());
        headers.insert(":path".into(), path.as_bytes().to_vec());
        Req {
            headers,
            again: HashMap::new(),
            body: false,
            addr: b"10.0.0.1:5555".to_vec(),
            reads: Default::default(),
        }
    }
    fn with(mut self, name: &str, value: &str) -> Req {
        self.headers.insert(name.into(), value.as_bytes().to_vec());
        self
    }
    fn from(mut self, addr: &str) -> Req {
        self.addr = addr.as_bytes().to_vec();
        self
    }
}

impl RequestSource for Req {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.reads.borrow_mut().push(name.to_string());
        self.headers.get(name).map(Vec::as_slice)
    }
    fn header_joined(&self, name: &str) -> Option<Vec<u8>> {
        let mut v = self.header(name)?.to_vec();
        if let Some(a) = self.again.get(name) {
            v.extend_from_slice(b", ");
            v.extend_from_slice(a);
        }
        Some(v)
    }
    fn header_once(&self, name: &str) -> Option<Result<&[u8], Repeated>> {
        let v = self.header(name)?;
        Some(if self.again.contains_key(name) {
            Err(Repeated)
        } else {
            Ok(v)
        })
    }
    fn source_address(&self) -> Option<&[u8]> {
        self.reads.borrow_mut().push("source.address".into());
        Some(&self.addr)
    }
    fn has_body(&self) -> bool {
        self.body
    }
}

struct Gw {
    cfg: Config,
    keys: StoreKeys,
    store: MemoryStore,
}

impl Gw {
    fn new(json: &str) -> Gw {
        let cfg = Config::from_json(json.as_bytes()).unwrap();
        let keys = StoreKeys::new("tollgate:test:", &cfg);
        let store = MemoryStore::new();
        initialize_store(&cfg, &keys, &store, T0).unwrap();
        Gw { cfg, keys, store }
    }
    fn run(&self, req: Req, now: u64) -> Decision {
        decide(&self.cfg, &self.keys, &self.store, now, &req)
    }
    /// Takes `d`'s call to the rate limit service and concludes it with `reply`.
    fn answered(&self, d: &mut Decision, reply: &[u8]) {
        let call = d.service_call.take().expect("a call to the service");
        conclude(&self.cfg, &self.keys, &self.store, d, call, Ok(reply));
    }
    /// A later leg of an internal redirect, at T0.
    fn leg(&self, req: Req, first_leg: Option<Decision>) -> Decision {
        decide_leg(&self.cfg, &self.keys, &self.store, T0, &req, first_leg)
    }
}

fn status(d: &Decision) -> u16 {
    match &d.outcome {
        Outcome::Forward => 200,
        Outcome::Respond { status, .. } => *status,
    }
}

fn header<'a>(d: &'a Decision, name: &str) -> Option<&'a str> {
    let list = match &d.outcome {
        Outcome::Respond { headers, .. } => headers,
        Outcome::Forward => &d.response_headers,
    };
    list.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

const KEYS: &str = r#""api_key": {"keys": [
    {"id": "gold-1", "value": "k-gold-1", "usage_plan": "gold"},
    {"id": "gold-2", "value": "k-gold-2", "usage_plan": "gold"},
    {"id": "free-1", "value": "k-free-1", "usage_plan": "free"},
    {"id": "noplan", "value": "k-noplan"}]},
  "usage_plans": {
    "gold": {"throttle": {"rate": 0.001, "burst": 3}},
    "free": {"throttle": {"rate": 100, "burst": 100}, "quota": {"limit": 2, "period": "DAY"}}}"#;

#[test]
fn empty_config_forwards_and_reads_little() {
    let gw = Gw::new("{}");
    let req = Req::new("GET", "/x");
    let d = decide(&gw.cfg, &gw.keys, &gw.store, T0, &req);
    assert_eq!(d.outcome, Outcome::Forward);
    assert!(d.response_headers.is_empty());
    assert!(d.cors.is_none());
    assert_eq!(*req.reads.borrow(), vec![":method", ":path", "origin"]);
    assert!(gw.store.is_empty());
}

#[test]
fn stage_burst_admits_exactly_burst() {
    let gw = Gw::new(r#"{"throttle": {"rate": 0.001, "burst": 20}}"#);
    let admitted = (0..100)
        .filter(|_| status(&gw.run(Req::new("GET", "/"), T0)) == 200)
        .count();
    assert_eq!(admitted, 20);
    let d = gw.run(Req::new("GET", "/"), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(d.error, Some(ErrorType::Throttled));
    match &d.outcome {
        Outcome::Respond { body, .. } => {
            assert_eq!(*body, Some(r#"{"message":"Too Many Requests"}"#))
        }
        Outcome::Forward => panic!("expected a local response"),
    }
    assert_eq!(header(&d, "content-type"), Some("application/json"));
    assert_eq!(header(&d, "retry-after"), Some("1000"));
    // `t` is the seconds until the next token (draft-10), as Retry-After, not until full.
    assert_eq!(header(&d, "ratelimit"), Some(r#""stage";r=0;t=1000"#));
}

#[test]
fn retry_after_covers_the_checks_after_the_one_that_refused() {
    // The stage bucket is empty behind the route's: waiting the route's second would meet the
    // stage's 429. Retry-After is the longest wait, read from the later buckets, which are not
    // charged.
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.01, "burst": 2},
            "routes": [{"match": "GET /r", "throttle": {"rate": 1, "burst": 1}}]}"#,
    );
    assert_eq!(status(&gw.run(Req::new("GET", "/"), T0)), 200);
    assert_eq!(status(&gw.run(Req::new("GET", "/r"), T0)), 200);
    let d = gw.run(Req::new("GET", "/r"), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(header(&d, "retry-after"), Some("100"));
    // The route's own report still says what the route has.
    assert_eq!(header(&d, "ratelimit"), Some(r#""route";r=0;t=1"#));
    let later = gw.run(Req::new("GET", "/r"), T0 + 1_100_000_000);
    assert_eq!(status(&later), 429);
    assert_eq!(header(&later, "retry-after"), Some("99"));
    // A later bucket with tokens does not lengthen the wait, and reading it took none.
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.01, "burst": 3},
            "routes": [{"match": "GET /r", "throttle": {"rate": 1, "burst": 1}}]}"#,
    );
    assert_eq!(status(&gw.run(Req::new("GET", "/r"), T0)), 200);
    for _ in 0..3 {
        let d = gw.run(Req::new("GET", "/r"), T0);
        assert_eq!(header(&d, "retry-after"), Some("1"));
    }
    assert_eq!(status(&gw.run(Req::new("GET", "/"), T0)), 200);
    assert_eq!(status(&gw.run(Req::new("GET", "/"), T0)), 200);
    assert_eq!(status(&gw.run(Req::new("GET", "/"), T0)), 429);
    // A plan's throttle refuses a key whose quota is spent too: wait for the quota's window.
    let gw = Gw::new(
        r#"{"api_key": {"keys": [{"id": "a", "value": "k-a", "usage_plan": "p"}]},
            "usage_plans": {"p": {"throttle": {"rate": 1, "burst": 2},
                                  "quota": {"limit": 2, "period": "DAY"}}},
            "client_throttle": {"by": "ip", "rate": 0.001, "burst": 5}}"#,
    );
    let keyed = || Req::new("GET", "/").with("x-api-key", "k-a");
    assert_eq!(status(&gw.run(keyed(), T0)), 200);
    assert_eq!(status(&gw.run(keyed(), T0)), 200);
    let d = gw.run(keyed(), T0);
    assert_eq!(status(&d), 429);
    // T0 is 2025-11-24 16:00 UTC: the day's window ends in 8 hours.
    assert_eq!(header(&d, "retry-after"), Some("28800"));
    // A later bucket whose one-token refill is no longer than the wait known is not read.
    struct Counting<'a>(&'a MemoryStore, std::cell::Cell<usize>);
    impl SharedStore for Counting<'_> {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }
    for (stage_rate, reads) in [("1000", 1), ("0.01", 2)] {
        let gw = Gw::new(&format!(
            r#"{{"throttle": {{"rate": {stage_rate}, "burst": 5}},
                "routes": [{{"match": "GET /r", "throttle": {{"rate": 1, "burst": 1}}}}]}}"#
        ));
        assert_eq!(status(&gw.run(Req::new("GET", "/r"), T0)), 200);
        let counting = Counting(&gw.store, std::cell::Cell::new(0));
        let d = decide(&gw.cfg, &gw.keys, &counting, T0, &Req::new("GET", "/r"));
        assert_eq!(status(&d), 429);
        assert_eq!(counting.1.get(), reads, "stage rate {stage_rate}");
    }
    // Report-only: nothing read for a header no answer carries (the route bucket alone).
    let gw = Gw::new(
        r#"{"enforce": false, "throttle": {"rate": 0.01, "burst": 1},
            "routes": [{"match": "GET /r", "throttle": {"rate": 1, "burst": 1}}]}"#,
    );
    assert_eq!(status(&gw.run(Req::new("GET", "/r"), T0)), 200);
    let counting = Counting(&gw.store, std::cell::Cell::new(0));
    let d = decide(&gw.cfg, &gw.keys, &counting, T0, &Req::new("GET", "/r"));
    assert_eq!(d.error, Some(ErrorType::Throttled));
    assert_eq!(d.outcome, Outcome::Forward);
    assert_eq!(counting.1.get(), 1);
    // A client bucket not worth reading: not even its identity is looked up.
    let gw = Gw::new(
        r#"{"client_throttle": {"by": "ip", "rate": 1000, "burst": 5},
            "routes": [{"match": "GET /r", "throttle": {"rate": 1, "burst": 1}}]}"#,
    );
    assert_eq!(status(&gw.run(Req::new("GET", "/r"), T0)), 200);
    let req = Req::new("GET", "/r");
    let d = decide(&gw.cfg, &gw.keys, &gw.store, T0, &req);
    assert_eq!(status(&d), 429);
    assert!(
        !req.reads.borrow().iter().any(|r| r == "source.address"),
        "{:?}",
        req.reads.borrow()
    );
}

#[test]
fn api_keys_and_required_routes() {
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "routes": [{{"match": "POST /pets", "api_key_required": true}}]}}"#
    ));
    // Missing key on a key route.
    let d = gw.run(Req::new("POST", "/pets"), T0);
    assert_eq!(status(&d), 403);
    assert_eq!(d.error, Some(ErrorType::InvalidApiKey));
    // Unknown key anywhere.
    let d = gw.run(Req::new("GET", "/free").with("x-api-key", "nope"), T0);
    assert_eq!(status(&d), 403);
    // Non-UTF-8 key: a clean 403.
    let mut r = Req::new("POST", "/pets");
    r.headers.insert("x-api-key".into(), vec![0xff, 0xfe]);
    assert_eq!(status(&gw.run(r, T0)), 403);
    // Valid key, no plan.
    let d = gw.run(Req::new("POST", "/pets").with("x-api-key", "k-noplan"), T0);
    assert_eq!(status(&d), 200);
    assert_eq!(d.key, Some(3));
    // No key on an open route: fine.
    assert_eq!(status(&gw.run(Req::new("GET", "/open"), T0)), 200);
    // A key header sent twice names no one key: refused, whatever the values, on any route,
    // before anything is charged.
    for (first, second) in [
        ("k-noplan", "k-noplan"),
        ("k-noplan", "nope"),
        ("nope", "k-noplan"),
    ] {
        for (m, p) in [("POST", "/pets"), ("GET", "/open")] {
            let mut r = Req::new(m, p).with("x-api-key", first);
            r.again
                .insert("x-api-key".into(), second.as_bytes().to_vec());
            let d = gw.run(r, T0);
            assert_eq!(status(&d), 403, "{first} then {second} on {m} {p}");
            assert_eq!(d.error, Some(ErrorType::InvalidApiKey));
            assert_eq!(d.key, None);
        }
    }
}

/// Two filters of one plugin name and VM (one shared data) with different stages: every
/// counter is the stage's own, the key's plan counters included (as the rate limit service's
/// descriptors, which start with the stage).
#[test]
fn stages_sharing_a_plugin_name_keep_their_own_buckets() {
    let store = MemoryStore::new();
    let setup = |stage: &str| {
        let cfg = Config::from_json(
            format!(
                r#"{{"stage": "{stage}", "throttle": {{"rate": 0.001, "burst": 2}},
                "api_key": {{"keys": [{{"id": "k", "value": "k-1", "usage_plan": "gold"}}]}},
                "usage_plans": {{"gold": {{"quota": {{"limit": 1, "period": "DAY"}}}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let keys = StoreKeys::new("tollgate:same:", &cfg);
        initialize_store(&cfg, &keys, &store, T0).unwrap();
        (cfg, keys)
    };
    let prod = setup("prod");
    let beta = setup("beta");
    let run = |(cfg, keys): &(Config, StoreKeys), req: Req| decide(cfg, keys, &store, T0, &req);
    let keyed = || Req::new("GET", "/").with("x-api-key", "k-1");
    // prod spends the key's quota of 1 and its stage burst of 2; beta's are whole.
    assert_eq!(status(&run(&prod, keyed())), 200);
    assert_eq!(run(&prod, keyed()).error, Some(ErrorType::QuotaExceeded));
    assert_eq!(status(&run(&prod, Req::new("GET", "/"))), 200);
    assert_eq!(status(&run(&prod, Req::new("GET", "/"))), 429);
    assert_eq!(status(&run(&beta, keyed())), 200);
    assert_eq!(status(&run(&beta, Req::new("GET", "/"))), 200);
    assert_eq!(status(&run(&beta, Req::new("GET", "/"))), 429);
    for (cfg, keys) in [&prod, &beta] {
        let under = format!("tollgate:same:stage:{}", cfg.stage);
        assert_eq!(keys.stage, under);
        for k in keys.plan.iter().chain(&keys.quota).chain(&keys.routes) {
            assert!(k.starts_with(&format!("{under}:")), "{k}");
        }
        assert!(keys.client(0).starts_with(&format!("{under}:client:")));
    }
}

/// Counters of different kinds never share a key, whatever the names: a stage called `plan` or
/// `quota`, a plan called `client` or `route`, a key id that is a slot number.
#[test]
fn no_two_counters_share_a_key() {
    let mut all: Vec<String> = Vec::new();
    for (stage, plan) in [
        ("plan", "client"),
        ("quota", "route"),
        ("stage", "stage"),
        ("client", "plan"),
        ("route", "quota"),
    ] {
        let cfg = Config::from_json(
            format!(
                r#"{{"stage": "{stage}", "throttle": {{"rate": 1, "burst": 1}},
                "client_throttle": {{"by": "ip", "rate": 1, "burst": 1, "slots": 16}},
                "routes": [{{"match": "GET /7", "throttle": {{"rate": 1, "burst": 1}}}}],
                "api_key": {{"keys": [{{"id": "7", "value": "k-7", "usage_plan": "{plan}"}}]}},
                "usage_plans": {{"{plan}": {{"throttle": {{"rate": 1, "burst": 1}},
                                             "quota": {{"limit": 3, "period": "DAY"}}}}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let keys = StoreKeys::new("tollgate:t:", &cfg);
        all.extend((0..16).map(|slot| keys.client(slot)));
        all.extend(
            keys.routes
                .iter()
                .chain(&keys.plan)
                .chain(&keys.quota)
                .cloned(),
        );
        all.push(keys.stage.clone());
        all.push(keys.client_slots_made());
        all.push(format!("{}:warned", keys.stage_prefix()));
    }
    // Within a configuration and across these (their stages differ).
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "{all:?}");
}

#[test]
fn plan_burst_is_per_key() {
    let gw = Gw::new(&format!("{{{KEYS}}}"));
    for key in ["k-gold-1", "k-gold-2"] {
        let ok = (0..10)
            .filter(|_| status(&gw.run(Req::new("GET", "/").with("x-api-key", key), T0)) == 200)
            .count();
        assert_eq!(ok, 3, "{key}");
    }
}

#[test]
fn quota_counts_only_admitted_and_resets_next_day() {
    let gw = Gw::new(&format!("{{{KEYS}}}"));
    let key = || Req::new("GET", "/").with("x-api-key", "k-free-1");
    assert_eq!(status(&gw.run(key(), T0)), 200);
    assert_eq!(status(&gw.run(key(), T0)), 200);
    let d = gw.run(key(), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(d.error, Some(ErrorType::QuotaExceeded));
    match &d.outcome {
        Outcome::Respond { body, .. } => assert_eq!(*body, Some(r#"{"message":"Limit Exceeded"}"#)),
        Outcome::Forward => panic!("expected a local response"),
    }
    assert!(header(&d, "retry-after").is_some());
    // Another key is independent.
    assert_eq!(
        status(&gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0)),
        200
    );
    // Next UTC day.
    assert_eq!(status(&gw.run(key(), T0 + 86_400 * SEC)), 200);
}

#[test]
fn quota_not_spent_by_throttled_requests() {
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "throttle": {{"rate": 0.001, "burst": 1}}}}"#
    ));
    let key = || Req::new("GET", "/").with("x-api-key", "k-free-1");
    assert_eq!(status(&gw.run(key(), T0)), 200);
    for _ in 0..5 {
        assert_eq!(gw.run(key(), T0).error, Some(ErrorType::Throttled));
    }
    let q = gw
        .store
        .get("tollgate:test:stage:default:quota:free:free-1")
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(QuotaState::decode(&q).unwrap().used, 1);
}

#[test]
fn client_buckets_by_ip_are_independent() {
    let gw =
        Gw::new(r#"{"client_throttle": {"by": "ip", "rate": 0.001, "burst": 2, "slots": 1024}}"#);
    for ip in ["10.0.0.1:1", "10.0.0.2:1", "[2001:db8::1]:443"] {
        let ok = (0..5)
            .filter(|_| status(&gw.run(Req::new("GET", "/").from(ip), T0)) == 200)
            .count();
        assert_eq!(ok, 2, "{ip}");
    }
    // The same client on another port shares the bucket.
    assert_eq!(
        status(&gw.run(Req::new("GET", "/").from("10.0.0.1:2"), T0)),
        429
    );
    // Another host of the same IPv6 /64 shares it too.
    assert_eq!(
        status(&gw.run(Req::new("GET", "/").from("[2001:db8::2]:1"), T0)),
        429
    );
}

#[test]
fn memory_is_bounded_by_slots() {
    let gw = Gw::new(
        r#"{"client_throttle": {"by": "header:x-user", "rate": 1, "burst": 1, "slots": 64}}"#,
    );
    let before = gw.store.len();
    for i in 0..5_000 {
        gw.run(Req::new("GET", "/").with("x-user", &format!("u{i}")), T0);
    }
    assert_eq!(gw.store.len(), before);
    // The slots and the mark that says they exist.
    assert_eq!(before, 64 + 1);
}

#[test]
fn ipv6_addresses_parse_as_std_parses_them() {
    for text in [
        "2001:db8:1:2:3:4:5:6",
        "2001:db8::1",
        "::1",
        "::",
        "fe80::1%eth0",
        "1::",
        "1:2:3:4:5:6:7::",
        "::2:3:4:5:6:7:8",
        "64:ff9b::192.0.2.33",
        "::ffff:1.2.3.4",
        "1:2:3:4:5:6:1.2.3.4",
        "1:2:3:4:5:6:7:8:9",
        "1::2::3",
        "12345::",
        "g::",
        ":1:2:3:4:5:6:7",
        "1.2.3.4",
        "::1.2.3",
        "::1.2.3.256",
        "",
    ] {
        let ours = ipv6_groups(text);
        let std = text
            .split('%')
            .next()
            .unwrap()
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| a.segments());
        assert_eq!(ours, std, "{text}");
    }
}

#[test]
fn ip_identity_forms() {
    assert_eq!(ip_identity(b"1.2.3.4:80"), b"1.2.3.4");
    assert_eq!(
        ip_identity(b"[2001:db8:1:2:3:4:5:6]:80"),
        b"2001:db8:1:2::/64"
    );
    // IPv6 forms of an IPv4 client are that client, not a /64 every IPv4 client shares.
    for v6 in [
        "::ffff:1.2.3.4",
        "::ffff:0:1.2.3.4",
        "::1.2.3.4",
        "64:ff9b::1.2.3.4",
        "64:ff9b::102:304",
    ] {
        assert_eq!(
            ip_identity(format!("[{v6}]:80").as_bytes()),
            b"1.2.3.4",
            "{v6}"
        );
    }
    assert_ne!(
        ip_identity(b"[64:ff9b::5.6.7.8]:80"),
        ip_identity(b"[64:ff9b::1.2.3.4]:80")
    );
    // Loopback and the unspecified address stay IPv6; so does a NAT64 prefix other than the
    // well-known one (its /64 as for any address).
    assert_eq!(ip_identity(b"[::1]:80"), b"0:0:0:0::/64");
    assert_eq!(ip_identity(b"[::]:80"), b"0:0:0:0::/64");
    assert_eq!(ip_identity(b"[64:ff9b:1::1.2.3.4]:80"), b"64:ff9b:1:0::/64");
    assert_eq!(ip_identity(b"\xff:1"), "\u{fffd}".as_bytes());
    assert_eq!(ip_identity(b""), b"");
}

#[test]
fn route_then_stage_order_and_headers() {
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 5},
            "routes": [{"match": "GET /pets/{id}", "throttle": {"rate": 0.001, "burst": 2}}]}"#,
    );
    let d = gw.run(Req::new("GET", "/pets/1"), T0);
    assert_eq!(status(&d), 200);
    assert_eq!(
        header(&d, "ratelimit-policy"),
        Some(r#""route";q=2;w=2000, "stage";q=5;w=5000"#)
    );
    assert_eq!(
        header(&d, "ratelimit"),
        Some(r#""route";r=1;t=1000, "stage";r=4;t=1000"#)
    );
    gw.run(Req::new("GET", "/pets/1"), T0);
    // The route bucket is empty; the stage bucket is not touched by the rejection.
    assert_eq!(status(&gw.run(Req::new("GET", "/pets/2"), T0)), 429);
    for _ in 0..3 {
        assert_eq!(status(&gw.run(Req::new("GET", "/other"), T0)), 200);
    }
    assert_eq!(status(&gw.run(Req::new("GET", "/other"), T0)), 429);
}

#[test]
fn header_modes() {
    let gw =
        Gw::new(r#"{"throttle": {"rate": 1, "burst": 5}, "rate_limit_headers": "x-ratelimit"}"#);
    let d = gw.run(Req::new("GET", "/"), T0);
    assert_eq!(header(&d, "x-ratelimit-limit"), Some("5"));
    assert_eq!(header(&d, "x-ratelimit-remaining"), Some("4"));
    assert!(header(&d, "ratelimit").is_none());
    let gw = Gw::new(r#"{"throttle": {"rate": 1, "burst": 5}, "rate_limit_headers": "none"}"#);
    assert!(gw.run(Req::new("GET", "/"), T0).response_headers.is_empty());
}

#[test]
fn report_only_forwards_but_reports() {
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "enforce": false, "throttle": {{"rate": 0.001, "burst": 1}},
            "routes": [{{"match": "GET /strict", "enforce": true}}]}}"#
    ));
    assert_eq!(status(&gw.run(Req::new("GET", "/"), T0)), 200);
    let d = gw.run(Req::new("GET", "/"), T0);
    assert_eq!(status(&d), 200);
    assert_eq!(d.error, Some(ErrorType::Throttled));
    let d = gw.run(Req::new("GET", "/").with("x-api-key", "bad"), T0);
    assert_eq!(status(&d), 200);
    assert_eq!(d.error, Some(ErrorType::InvalidApiKey));
    // A route that enforces.
    assert_eq!(status(&gw.run(Req::new("GET", "/strict"), T0)), 429);
}

const CORS: &str = r#""cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["GET", "PUT"],
    "allow_headers": ["x-custom"], "max_age": 600}"#;

#[test]
fn preflight_answered_without_key_or_throttle() {
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, {CORS}, "throttle": {{"rate": 0.001, "burst": 1}},
            "routes": [{{"match": "PUT /pets/{{id}}", "api_key_required": true}},
                       {{"match": "ANY /admin/{{proxy+}}", "cors": false}}]}}"#
    ));
    let pre = |origin: &str| {
        Req::new("OPTIONS", "/pets/1")
            .with("origin", origin)
            .with("access-control-request-method", "PUT")
            .with("access-control-request-headers", "x-custom")
    };
    for _ in 0..3 {
        let d = gw.run(pre("https://app.example.com"), T0);
        assert_eq!(status(&d), 204);
        assert_eq!(
            header(&d, "access-control-allow-origin"),
            Some("https://app.example.com")
        );
        assert_eq!(header(&d, "access-control-max-age"), Some("600"));
    }
    let d = gw.run(pre("https://evil.example.net"), T0);
    assert_eq!(status(&d), 403);
    assert!(header(&d, "access-control-allow-origin").is_none());
    // CORS off on a route: the OPTIONS is an ordinary request (and meets the throttle).
    let r = Req::new("OPTIONS", "/admin/x")
        .with("origin", "https://app.example.com")
        .with("access-control-request-method", "GET");
    assert_eq!(gw.run(r, T0).outcome, Outcome::Forward);
}

#[test]
fn local_responses_carry_cors_for_allowed_origins() {
    let gw = Gw::new(&format!(
        r#"{{{CORS}, "throttle": {{"rate": 0.001, "burst": 1}}}}"#
    ));
    let r = || Req::new("GET", "/").with("origin", "https://app.example.com");
    let d = gw.run(r(), T0);
    assert_eq!(status(&d), 200);
    assert!(d.cors.is_some());
    let d = gw.run(r(), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(
        header(&d, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&d, "vary"), Some("Origin"));
    let d = gw.run(Req::new("GET", "/").with("origin", "https://evil.net"), T0);
    assert_eq!(status(&d), 429);
    assert!(header(&d, "access-control-allow-origin").is_none());
    assert!(d.cors.is_none());
    // The refusal still varies by Origin (a cache storing errors must not serve it to an
    // allowed origin), and so does one to a request without Origin.
    assert_eq!(header(&d, "vary"), Some("Origin"));
    let d = gw.run(Req::new("GET", "/"), T0);
    assert_eq!(header(&d, "vary"), Some("Origin"));
    // Without a CORS policy, no Vary.
    let gw = Gw::new(r#"{"throttle": {"rate": 0.001, "burst": 1}}"#);
    gw.run(Req::new("GET", "/"), T0);
    let d = gw.run(Req::new("GET", "/").with("origin", "https://evil.net"), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(header(&d, "vary"), None);
}

#[test]
fn contention_fails_closed() {
    struct Busy(MemoryStore);
    impl SharedStore for Busy {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.0.get(key)
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
            Err(StoreError::CasMismatch)
        }
    }
    let cfg = Config::from_json(br#"{"throttle": {"rate": 10, "burst": 10}}"#).unwrap();
    let keys = StoreKeys::new("p:", &cfg);
    let store = Busy(MemoryStore::new());
    initialize_store(&cfg, &keys, &store.0, T0).unwrap();
    let d = decide(&cfg, &keys, &store, T0, &Req::new("GET", "/"));
    assert_eq!(status(&d), 429);
    // The warning names the counter.
    assert_eq!(
        d.store_failure.map(|f| f.to_string()).as_deref(),
        Some("shared data stayed contended through every retry (the stage counter); request refused to keep the limit")
    );
}

#[test]
fn a_store_failure_refusal_tells_the_tokens_it_gave_back() {
    // The stage bucket's store fails after the route's bucket gave a token: the 429 gives the
    // token back, and its headers say so (the failed check has no report of its own).
    struct StageBusy(MemoryStore);
    impl SharedStore for StageBusy {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            if key == "p:stage:default" {
                return Err(StoreError::CasMismatch);
            }
            self.0.set(key, value, cas)
        }
    }
    let cfg = Config::from_json(
        br#"{"throttle": {"rate": 10, "burst": 10},
             "routes": [{"match": "GET /r", "throttle": {"rate": 0.001, "burst": 2}}]}"#,
    )
    .unwrap();
    let keys = StoreKeys::new("p:", &cfg);
    let store = StageBusy(MemoryStore::new());
    initialize_store(&cfg, &keys, &store.0, T0).unwrap();
    for _ in 0..2 {
        let d = decide(&cfg, &keys, &store, T0, &Req::new("GET", "/r"));
        assert_eq!(status(&d), 429);
        assert!(d.store_failure.is_some());
        assert_eq!(header(&d, "ratelimit"), Some(r#""route";r=2;t=0"#));
    }
}

/// The counters of a configuration are made by the first root context that loads it; the
/// others (one per worker, in the worker's thread) read one mark instead of every counter. A
/// changed configuration makes what it adds and keeps the counts.
#[test]
fn counters_are_made_once_per_configuration() {
    struct Counting(MemoryStore, std::cell::Cell<usize>);
    impl SharedStore for Counting {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }
    let config = |n: usize| {
        let keys: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id": "k{i}", "value": "v{i}", "usage_plan": "p"}}"#))
            .collect();
        let text = format!(
            r#"{{"api_key": {{"keys": [{}]}},
                "usage_plans": {{"p": {{"throttle": {{"rate": 0.001, "burst": 1}},
                                       "quota": {{"limit": 5, "period": "DAY"}}}}}}}}"#,
            keys.join(",")
        );
        let cfg = Config::from_json(text.as_bytes()).unwrap();
        let digest = crate::keys::sha256(text.as_bytes());
        (cfg, warnings_mark("test", &digest, &[]))
    };
    let store = Counting(MemoryStore::new(), std::cell::Cell::new(0));
    let (cfg, mark) = config(300);
    let keys = StoreKeys::new("p:", &cfg);
    // The first root context: the mark, and a bucket and a quota per key; then it logs the
    // load, which marks it.
    let loaded = "p:warned";
    assert_eq!(
        initialize_store_once(&cfg, &keys, &store, T0, (loaded, mark)).unwrap(),
        600
    );
    assert_eq!(store.1.get(), 601);
    assert!(first_to_warn(&store, loaded, mark));
    let keyed = || Req::new("GET", "/").with("x-api-key", "v7");
    assert_eq!(status(&decide(&cfg, &keys, &store, T0, &keyed())), 200);
    assert_eq!(status(&decide(&cfg, &keys, &store, T0, &keyed())), 429);
    // Every other root context of that configuration: one read, nothing made or reset.
    for _ in 0..3 {
        store.1.set(0);
        assert_eq!(
            initialize_store_once(&cfg, &keys, &store, T0, (loaded, mark)).unwrap(),
            0
        );
        assert_eq!(store.1.get(), 1);
        assert!(!first_to_warn(&store, loaded, mark));
    }
    assert_eq!(status(&decide(&cfg, &keys, &store, T0, &keyed())), 429);
    // A configuration with 10 keys more: the mark, then every counter is looked at and only the
    // new ones made; key 7's bucket keeps its state.
    let (more, more_mark) = config(310);
    assert_ne!(mark, more_mark);
    let more_keys = StoreKeys::new("p:", &more);
    store.1.set(0);
    assert_eq!(
        initialize_store_once(&more, &more_keys, &store, T0, (loaded, more_mark)).unwrap(),
        20
    );
    assert_eq!(store.1.get(), 621);
    assert!(first_to_warn(&store, loaded, more_mark));
    assert_eq!(
        status(&decide(&more, &more_keys, &store, T0, &keyed())),
        429
    );
    store.1.set(0);
    assert_eq!(
        initialize_store_once(&more, &more_keys, &store, T0, (loaded, more_mark)).unwrap(),
        0
    );
    assert_eq!(store.1.get(), 1);
    // The first configuration back: its mark is gone, so it looks at every counter again.
    store.1.set(0);
    assert_eq!(
        initialize_store_once(&cfg, &keys, &store, T0, (loaded, mark)).unwrap(),
        0
    );
    assert_eq!(store.1.get(), 601);
}

/// A reload reads one mark instead of every client slot, and makes only the slots it adds;
/// the slots keep their state.
#[test]
fn a_reload_makes_only_the_client_slots_it_adds() {
    struct Counting(MemoryStore, std::cell::Cell<usize>);
    impl SharedStore for Counting {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            self.1.set(self.1.get() + 1);
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }
    let config = |slots: u32| {
        Config::from_json(
            format!(
                r#"{{"client_throttle": {{"by": "ip", "rate": 0.001, "burst": 1, "slots": {slots}}}}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let store = Counting(MemoryStore::new(), std::cell::Cell::new(0));
    let cfg = config(1000);
    let keys = StoreKeys::new("p:", &cfg);
    assert_eq!(initialize_store(&cfg, &keys, &store, T0).unwrap(), 1000);
    assert_eq!(store.1.get(), 1001, "the mark and every slot");
    // A client spends its slot's token.
    let client = || Req::new("GET", "/").from("10.1.2.3");
    assert_eq!(status(&decide(&cfg, &keys, &store, T0, &client())), 200);
    assert_eq!(status(&decide(&cfg, &keys, &store, T0, &client())), 429);
    // The same slots again: one read.
    store.1.set(0);
    assert_eq!(initialize_store(&cfg, &keys, &store, T0).unwrap(), 0);
    assert_eq!(store.1.get(), 1);
    // Fewer: one read, nothing made.
    store.1.set(0);
    let fewer = config(10);
    assert_eq!(
        initialize_store(&fewer, &StoreKeys::new("p:", &fewer), &store, T0).unwrap(),
        0
    );
    assert_eq!(store.1.get(), 1);
    // More: the mark and the 500 new slots only.
    store.1.set(0);
    let more = config(1500);
    let more_keys = StoreKeys::new("p:", &more);
    assert_eq!(
        initialize_store(&more, &more_keys, &store, T0).unwrap(),
        500
    );
    assert_eq!(store.1.get(), 501);
    store.1.set(0);
    assert_eq!(initialize_store(&more, &more_keys, &store, T0).unwrap(), 0);
    assert_eq!(store.1.get(), 1);
    // The client's bucket kept its state through the reloads (if its slot is among the first
    // 1000; else a fresh one of the new slots would admit it).
    let slot = client_slot(b"10.1.2.3", 1500, &more_keys.client_seed);
    let expected = if slot < 1000 { 429 } else { 200 };
    assert_eq!(
        status(&decide(&more, &more_keys, &store, T0, &client())),
        expected
    );
}

#[test]
fn slots_spread_clients() {
    let mut seen = std::collections::HashSet::new();
    for i in 0..1000 {
        seen.insert(client_slot(
            format!("10.0.{}.{}", i / 256, i % 256).as_bytes(),
            4096,
            &[7; 16],
        ));
    }
    assert!(seen.len() > 850, "{}", seen.len());
    assert!(seen.iter().all(|s| *s < 4096));
}

#[test]
fn ambiguous_paths_are_refused_before_any_check() {
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "throttle": {{"rate": 0.001, "burst": 1}},
            "routes": [{{"match": "ANY /admin/{{proxy+}}", "api_key_required": true}}]}}"#
    ));
    for p in ["/admin/..;/x", "/admin/%2e%2e;/x", "/a/.;/b"] {
        let d = gw.run(Req::new("GET", p), T0);
        assert_eq!(status(&d), 400, "{p}");
        assert_eq!(d.error, Some(ErrorType::BadRequest));
        match &d.outcome {
            Outcome::Respond { body, .. } => {
                assert_eq!(*body, Some(r#"{"message":"Bad Request"}"#))
            }
            Outcome::Forward => panic!("expected a local response"),
        }
    }
    // No token was spent on them.
    assert_eq!(status(&gw.run(Req::new("GET", "/x"), T0)), 200);
    // Report-only mode records the error but forwards.
    let gw = Gw::new(r#"{"enforce": false, "routes": [{"match": "GET /a"}]}"#);
    let d = gw.run(Req::new("GET", "/a/..;/b"), T0);
    assert_eq!(d.outcome, Outcome::Forward);
    assert_eq!(d.error, Some(ErrorType::BadRequest));
    // Without routes there is no route to guess: `{}` passes all traffic through, and a
    // stage throttle counts such a path like any other.
    for cfg in ["{}", r#"{"throttle": {"rate": 0.001, "burst": 1}}"#] {
        let gw = Gw::new(cfg);
        for p in ["/app/;jsessionid=ABC", "/admin/..;/x", "/a/.;/b"] {
            let d = gw.run(Req::new("GET", p), T0);
            assert_eq!(d.outcome, Outcome::Forward, "{cfg} {p}");
            assert_eq!(d.error, None, "{cfg} {p}");
            if cfg != "{}" {
                break;
            }
        }
        if cfg != "{}" {
            assert_eq!(status(&gw.run(Req::new("GET", "/a/.;/b"), T0)), 429);
        }
    }
}

#[test]
fn encoded_reserved_characters_do_not_escape_a_literal_route() {
    // `%3A` is `:` to the upstream (Django, Flask, Spring decode it; Envoy does not): the
    // key-required literal route applies, not the open catch-all.
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "routes": [
            {{"match": "POST /v1/items:batchDelete", "api_key_required": true}},
            {{"match": "ANY /{{proxy+}}"}}]}}"#
    ));
    for p in [
        "/v1/items:batchDelete",
        "/v1/items%3AbatchDelete",
        "/v1/items%3abatchDelete",
        "/v1/items%3AbatchDelete%3Bx=1",
    ] {
        let d = gw.run(Req::new("POST", p), T0);
        assert_eq!((status(&d), d.route), (403, Some(0)), "{p}");
    }
    let d = gw.run(
        Req::new("POST", "/v1/items%3AbatchDelete").with("x-api-key", "k-noplan"),
        T0,
    );
    assert_eq!((status(&d), d.route), (200, Some(0)));
    // A `;` sent encoded is refused where a raw one is.
    for p in ["/;x/v1/items:batchDelete", "/%3Bx/v1/items:batchDelete"] {
        let d = gw.run(Req::new("POST", p), T0);
        assert_eq!(
            (status(&d), d.error),
            (400, Some(ErrorType::BadRequest)),
            "{p}"
        );
    }
}

#[test]
fn head_is_held_to_the_get_route() {
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "routes": [
            {{"match": "GET /reports/{{id}}", "api_key_required": true}},
            {{"match": "GET /pets/{{id}}", "throttle": {{"rate": 0.001, "burst": 1}}}}]}}"#
    ));
    assert_eq!(status(&gw.run(Req::new("HEAD", "/reports/1"), T0)), 403);
    assert_eq!(status(&gw.run(Req::new("HEAD", "/pets/1"), T0)), 200);
    assert_eq!(status(&gw.run(Req::new("GET", "/pets/1"), T0)), 429);
}

#[test]
fn head_is_held_to_a_more_specific_get_route_than_its_own() {
    // A HEAD route for the collection does not take HEAD of a key-required GET resource.
    let gw = Gw::new(&format!(
        r#"{{{KEYS}, "routes": [
            {{"match": "GET /files/secret", "api_key_required": true}},
            {{"match": "HEAD /files/{{name}}"}}]}}"#
    ));
    let d = gw.run(Req::new("HEAD", "/files/secret"), T0);
    assert_eq!((status(&d), d.route), (403, Some(0)));
    assert_eq!(d.error, Some(ErrorType::InvalidApiKey));
    let d = gw.run(
        Req::new("HEAD", "/files/secret").with("x-api-key", "k-noplan"),
        T0,
    );
    assert_eq!((status(&d), d.route), (200, Some(0)));
    let d = gw.run(Req::new("HEAD", "/files/public"), T0);
    assert_eq!((status(&d), d.route), (200, Some(1)));
}

const CACHE: &str = r#""api_key": {"keys": [
    {"id": "admin", "value": "k-admin", "invalidate_cache": true},
    {"id": "user", "value": "k-user"}]},
  "cache": {"ttl": 60},
  "routes": [
    {"match": "GET /pets", "throttle": {"rate": 0.001, "burst": 2},
     "cache": {"key_parameters": ["querystring.page", "header.accept-language"]}},
    {"match": "GET /fail/{id}", "cache": {"unauthorized_strategy": "FAIL_WITH_403"}},
    {"match": "GET /off/{id}", "cache": {"ttl": 0}},
    {"match": "GET /report/{id}", "enforce": false, "cache": {"unauthorized_strategy": "FAIL_WITH_403"}}]"#;

fn lookup(d: &Decision) -> (Option<(String, String)>, bool, bool) {
    match &d.cache {
        CachePlan::Lookup {
            rewrite,
            refresh,
            warn,
        } => (
            rewrite.as_ref().map(|r| {
                (
                    String::from_utf8(r.path.clone()).unwrap(),
                    String::from_utf8(r.stash.clone()).unwrap(),
                )
            }),
            *refresh,
            *warn,
        ),
        other => panic!("expected a lookup, got {other:?}"),
    }
}

#[test]
fn cache_plan_keys_the_request_and_gates_invalidation() {
    let gw = Gw::new(&format!("{{{CACHE}}}"));
    // Key normalisation: non-key parameters out, key header folded in.
    let d = gw.run(
        Req::new("GET", "/pets?utm=x&page=2").with("accept-language", "fr"),
        T0,
    );
    assert_eq!(d.outcome, Outcome::Forward);
    assert_eq!(
        lookup(&d),
        (
            Some((
                "/pets?page=2&~h.accept-language=67AD8F41A7BB0A18C45F3EFD8F6A32BD".into(),
                "?utm=x&page=2".into()
            )),
            false,
            false
        )
    );
    // Unauthorized invalidation: served from the cache with a Warning (the default strategy).
    let d = gw.run(
        Req::new("GET", "/stage/1").with("cache-control", "max-age=0"),
        T0,
    );
    assert_eq!(lookup(&d), (None, false, true));
    let d = gw.run(
        Req::new("GET", "/stage/1")
            .with("cache-control", "max-age=0")
            .with("x-api-key", "k-user"),
        T0,
    );
    assert_eq!(lookup(&d), (None, false, true));
    // An invalidate_cache key refreshes.
    let d = gw.run(
        Req::new("GET", "/stage/1")
            .with("pragma", "no-cache")
            .with("x-api-key", "k-admin"),
        T0,
    );
    assert_eq!(lookup(&d), (None, true, false));
    // FAIL_WITH_403: the contract's 403, recorded as the request's error.
    let d = gw.run(
        Req::new("GET", "/fail/1")
            .with("cache-control", "no-cache")
            .with("x-api-key", "k-user"),
        T0,
    );
    assert_eq!(status(&d), 403);
    assert_eq!(d.error, Some(ErrorType::CacheInvalidationDenied));
    assert_eq!(d.error.unwrap().as_str(), "CACHE_INVALIDATION_DENIED");
    match &d.outcome {
        Outcome::Respond { body, .. } => assert_eq!(*body, Some(r#"{"message":"Forbidden"}"#)),
        Outcome::Forward => panic!("expected a local response"),
    }
    assert_eq!(d.cache, CachePlan::Off);
    // The same with a body: Envoy's cache filter leaves it alone, so it goes around the cache
    // and nothing is refused (as with `Authorization`).
    let mut with_body = Req::new("GET", "/fail/1")
        .with("cache-control", "no-cache")
        .with("x-api-key", "k-user");
    with_body.body = true;
    let d = gw.run(with_body, T0);
    assert_eq!((status(&d), d.error), (200, None));
    assert_eq!(d.cache, CachePlan::Bypass { shield: false });
    let d = gw.run(
        Req::new("GET", "/fail/1")
            .with("cache-control", "no-cache")
            .with("x-api-key", "k-admin"),
        T0,
    );
    assert_eq!(lookup(&d), (None, true, false));
    // Report-only: the decision is recorded, the request is served from the cache.
    let d = gw.run(
        Req::new("GET", "/report/1").with("cache-control", "max-age=0"),
        T0,
    );
    assert_eq!(d.outcome, Outcome::Forward);
    assert_eq!(d.error, Some(ErrorType::CacheInvalidationDenied));
    assert_eq!(lookup(&d), (None, false, false));
}

#[test]
fn cache_plan_bypasses_what_the_cache_must_not_answer() {
    let gw = Gw::new(&format!("{{{CACHE}}}"));
    // TTL 0: shielded from Envoy's cache (GET and HEAD), other methods need no shield.
    let d = gw.run(Req::new("GET", "/off/1"), T0);
    assert_eq!(d.cache, CachePlan::Bypass { shield: true });
    let d = gw.run(Req::new("HEAD", "/off/1"), T0);
    assert_eq!(d.cache, CachePlan::Bypass { shield: true });
    let d = gw.run(Req::new("POST", "/pets"), T0);
    assert_eq!(d.cache, CachePlan::Bypass { shield: false });
    // Requests Envoy's cache filter leaves alone anyway: no key, no invalidation gate.
    for h in [
        "authorization",
        "if-none-match",
        "if-modified-since",
        "if-range",
    ] {
        let d = gw.run(
            Req::new("GET", "/fail/1")
                .with(h, "x")
                .with("cache-control", "max-age=0"),
            T0,
        );
        assert_eq!(d.cache, CachePlan::Bypass { shield: false }, "{h}");
        assert_eq!(d.outcome, Outcome::Forward, "{h}");
    }
    // Throttles come first: a throttled request never reaches the cache.
    assert_eq!(status(&gw.run(Req::new("GET", "/pets"), T0)), 200);
    let d = gw.run(Req::new("GET", "/pets"), T0);
    assert_eq!(status(&d), 200);
    let d = gw.run(Req::new("GET", "/pets"), T0);
    assert_eq!(status(&d), 429);
    assert_eq!(d.cache, CachePlan::Off);
    // Without caching in the configuration nothing is planned and nothing more is read.
    let gw = Gw::new(r#"{"cache": {"enabled": false}}"#);
    let req = Req::new("GET", "/x").with("cache-control", "max-age=0");
    let d = decide(&gw.cfg, &gw.keys, &gw.store, T0, &req);
    assert_eq!(d.cache, CachePlan::Off);
    assert_eq!(*req.reads.borrow(), vec![":method", ":path", "origin"]);
}

/// Slots must be identical on the 64-bit host and in the 32-bit plugin (and across workers and
/// restarts): `make unit-wasm32` runs this under wasm32 too.
#[test]
fn slot_hash_is_the_same_on_every_target() {
    let got: Vec<u32> = [
        (&b"10.0.0.1"[..], 4096),
        (b"2001:db8:1:2::/64", 4096),
        (b"key:partner-a", 1 << 20),
        (b"hdr:\xff\xfe", 7),
        (b"", 1),
        (b"x", 0),
    ]
    .iter()
    .map(|(id, slots)| client_slot(id, *slots, b"0123456789abcdef"))
    .collect();
    // Computed on x86_64; `slots: 0` is treated as one slot.
    assert_eq!(got, [2479, 2983, 542287, 1, 0, 0]);
}

#[test]
fn the_seed_decides_the_slots() {
    // Another seed, another placement: a pair that shares a slot under one seed (found by
    // search, as someone who knew the hash and the seed could) is apart under most others.
    let ids: Vec<String> = (0..5000).map(|i| format!("tenant-{i}")).collect();
    let a = [1u8; 16];
    let b = [2u8; 16];
    let victim = client_slot(b"victim", 4096, &a);
    let twin = ids
        .iter()
        .find(|id| client_slot(id.as_bytes(), 4096, &a) == victim)
        .expect("5000 tries find a twin among 4096 slots");
    assert_ne!(
        client_slot(twin.as_bytes(), 4096, &b),
        client_slot(b"victim", 4096, &b)
    );
    let moved = ids
        .iter()
        .filter(|id| client_slot(id.as_bytes(), 4096, &a) != client_slot(id.as_bytes(), 4096, &b))
        .count();
    assert!(moved > 4900, "{moved}");
    // The same seed, the same slot (every worker places a client alike).
    assert_eq!(client_slot(b"victim", 4096, &a), victim);
}

#[test]
fn the_first_root_context_settles_the_client_seed_for_all() {
    let cfg =
        Config::from_json(br#"{"client_throttle": {"by": "ip", "rate": 1, "burst": 1}}"#).unwrap();
    let store = MemoryStore::new();
    let mut first = StoreKeys::new("p:", &cfg);
    settle_client_seed(&store, &mut first, [1; 16]).unwrap();
    assert_eq!(first.client_seed, [1; 16]);
    // A worker's root context (or a reload) comes with fresh bytes of its own: it takes the
    // settled seed.
    let mut worker = StoreKeys::new("p:", &cfg);
    settle_client_seed(&store, &mut worker, [2; 16]).unwrap();
    assert_eq!(worker.client_seed, [1; 16]);
}

// --- the rate limit service ------------------------------------------------------------------

mod service {
    use super::*;
    use crate::ratelimit_service::{CallFailure, Code, DescriptorStatus, RateLimitRequest, Unit};
    use prost::Message;

    fn with_service(checks: &str, extra: &str) -> Gw {
        Gw::new(&format!(
            r#"{{{KEYS}, "throttle": {{"rate": 0.001, "burst": 1000}},
                "rate_limit_service": {{"cluster": "rls", "domain": "tg", "failure_mode": "deny",
                                        "checks": {checks} {extra}}}}}"#
        ))
    }

    use crate::ratelimit_service::tests::{response as answer, status as descriptor_status};

    /// A status of a limit of `limit` a day, reset in an hour.
    fn day_status(code: Code, limit: u32, remaining: u32) -> DescriptorStatus {
        descriptor_status(code, limit, Unit::Day, remaining, Some((3600, 0)))
    }

    fn sent(call: &ServiceCall) -> Vec<Vec<(String, String)>> {
        let req = RateLimitRequest::decode(call.message.as_slice()).unwrap();
        assert_eq!(req.domain, "tg");
        req.descriptors
            .iter()
            .map(|d| {
                d.entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.clone()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_delegated_quota_is_asked_of_the_service_not_spent_locally() {
        let gw = with_service(r#"["quota"]"#, "");
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), T0);
        assert_eq!(d.outcome, Outcome::Forward);
        assert!(d.response_headers.is_empty(), "rendered after the answer");
        let call = d.service_call.take().unwrap();
        assert_eq!(call.checks, vec![rls::Check::Quota]);
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            sent(&call),
            vec![vec![
                kv("stage", "default"),
                kv("usage_plan", "free"),
                kv("api_key_id", "free-1"),
                kv("quota", "DAY"),
            ]]
        );
        // The local quota (limit 2) is not spent: many requests still ask the service.
        for _ in 0..5 {
            let d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), T0);
            assert!(d.service_call.is_some());
        }
        // OK: forwarded with the local stage policy and the service's quota.
        let ok = answer(
            Code::Ok,
            vec![day_status(Code::Ok, 10, 7)],
            &[("x-rls", "yes")],
        );
        let r = conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&ok));
        assert_eq!(r, ServiceResult::Ok);
        assert_eq!(d.outcome, Outcome::Forward);
        assert_eq!(
            header(&d, "ratelimit-policy"),
            Some("\"plan\";q=100;w=1, \"stage\";q=1000;w=1000000, \"quota\";q=10;w=86400")
        );
        assert_eq!(d.service_headers, vec![kv("x-rls", "yes")]);
    }

    #[test]
    fn over_limit_is_the_contracts_429() {
        let gw = with_service(r#"["quota"]"#, "");
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), T0);
        let call = d.service_call.take().unwrap();
        let over = answer(
            Code::OverLimit,
            vec![day_status(Code::OverLimit, 10, 0)],
            &[],
        );
        assert_eq!(
            conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&over)),
            ServiceResult::OverLimit
        );
        assert_eq!(status(&d), 429);
        assert_eq!(d.error, Some(ErrorType::QuotaExceeded));
        assert_eq!(header(&d, "retry-after"), Some("3600"));
        // The plan and stage tokens the request took went back when the service refused it:
        // the answer tells what the client has.
        assert_eq!(
            header(&d, "ratelimit"),
            Some("\"plan\";r=100;t=0, \"stage\";r=1000;t=0, \"quota\";r=0;t=3600")
        );
        match &d.outcome {
            Outcome::Respond { body, .. } => {
                assert_eq!(*body, Some(r#"{"message":"Limit Exceeded"}"#))
            }
            Outcome::Forward => panic!("expected a 429"),
        }
    }

    #[test]
    fn failures_follow_failure_mode() {
        for (mode, want) in [("deny", 429), ("allow", 200)] {
            let gw = Gw::new(&format!(
                r#"{{{KEYS}, "rate_limit_service": {{"cluster": "rls", "domain": "tg",
                    "failure_mode": "{mode}", "checks": ["plan"]}}}}"#
            ));
            let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
            let call = d.service_call.take().unwrap();
            let r = conclude(
                &gw.cfg,
                &gw.keys,
                &gw.store,
                &mut d,
                call,
                Err(CallFailure::Timeout),
            );
            assert_eq!(r, ServiceResult::Failure(CallFailure::Timeout));
            assert_eq!(status(&d), want, "{mode}");
            if want == 429 {
                assert_eq!(header(&d, "retry-after"), Some("1"));
                assert_eq!(d.error, Some(ErrorType::Throttled));
            } else {
                // The local bucket (local_first) still reports.
                assert_eq!(header(&d, "ratelimit-policy"), Some("\"plan\";q=3;w=3000"));
                assert_eq!(d.error, None);
            }
        }
    }

    #[test]
    fn a_check_the_service_tells_nothing_about_keeps_its_local_report() {
        // Limitador answers OK with no per-descriptor statuses: the local plan bucket
        // (local_first), which was charged, still reports; a status replaces it.
        let gw = with_service(r#"["plan"]"#, "");
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
        let call = d.service_call.take().unwrap();
        let ok = answer(Code::Ok, vec![], &[]);
        assert_eq!(
            conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&ok)),
            ServiceResult::Ok
        );
        assert_eq!(
            header(&d, "ratelimit-policy"),
            Some("\"plan\";q=3;w=3000, \"stage\";q=1000;w=1000000")
        );
        assert!(header(&d, "ratelimit")
            .unwrap()
            .starts_with("\"plan\";r=2;t=1000, "));
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
        let call = d.service_call.take().unwrap();
        let told = answer(Code::Ok, vec![day_status(Code::Ok, 50, 49)], &[]);
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&told));
        // The service's report replaces the local one where it stood.
        let told = header(&d, "ratelimit").unwrap();
        assert!(
            told.starts_with("\"plan\";r=49;t=3600, ") && !told.contains("r=1;"),
            "{told}"
        );
    }

    #[test]
    fn local_first_sheds_load_before_the_call() {
        // gold: burst 3, practically no refill. The fourth request is refused locally, no call.
        let gw = with_service(r#"["plan"]"#, "");
        for _ in 0..3 {
            let d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
            assert!(d.service_call.is_some());
        }
        let d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
        assert_eq!(status(&d), 429);
        assert!(d.service_call.is_none());

        // local_first: false: only the service counts the delegated plan throttle.
        let gw = with_service(r#"["plan"]"#, r#", "local_first": false"#);
        for _ in 0..10 {
            let d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
            assert_eq!(
                d.service_call.map(|c| c.checks),
                Some(vec![rls::Check::Plan])
            );
        }
    }

    #[test]
    fn no_applicable_check_makes_no_call() {
        let gw = with_service(r#"["plan", "quota"]"#, "");
        // No key: nothing of the plan applies; the stage bucket is local.
        let d = gw.run(Req::new("GET", "/"), T0);
        assert!(d.service_call.is_none());
        assert!(header(&d, "ratelimit-policy").is_some());
        // A key without a plan.
        let d = gw.run(Req::new("GET", "/").with("x-api-key", "k-noplan"), T0);
        assert!(d.service_call.is_none());
    }

    #[test]
    fn report_only_forwards_what_the_service_refuses() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "enforce": false, "rate_limit_service": {{"cluster": "rls",
                "domain": "tg", "failure_mode": "deny", "checks": ["plan"]}}}}"#
        ));
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-gold-1"), T0);
        let call = d.service_call.take().unwrap();
        let over = answer(Code::OverLimit, Vec::new(), &[]);
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&over));
        assert_eq!(d.outcome, Outcome::Forward);
        assert_eq!(d.error, Some(ErrorType::Throttled));
    }

    #[test]
    fn client_descriptors_carry_the_identity() {
        let gw = Gw::new(
            r#"{"client_throttle": {"by": "ip", "rate": 10, "burst": 10},
                "routes": [{"match": "GET /pets/{id}", "throttle": {"rate": 5, "burst": 5}}],
                "rate_limit_service": {"cluster": "rls", "domain": "tg", "failure_mode": "allow",
                                       "checks": ["client", "route"]}}"#,
        );
        let d = gw.run(
            Req::new("GET", "/pets/7").from("[2001:db8:1:2:3::9]:443"),
            T0,
        );
        let call = d.service_call.unwrap();
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            sent(&call),
            vec![
                vec![kv("stage", "default"), kv("route", "GET /pets/{id}")],
                vec![kv("stage", "default"), kv("client", "2001:db8:1:2::/64")],
            ]
        );
    }

    /// A later leg whose route throttle the service holds (no local check) fails under
    /// `deny`: its 429 tells no `"route"` item of the earlier leg's route, and refunds nothing
    /// it did not take.
    #[test]
    fn a_later_legs_failed_call_tells_no_earlier_route_and_refunds_nothing_else() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "throttle": {{"rate": 0.001, "burst": 5}},
                "routes": [{{"match": "ANY /v1", "throttle": {{"rate": 0.001, "burst": 9}}}},
                           {{"match": "ANY /v2", "throttle": {{"rate": 0.001, "burst": 5}}}}],
                "rate_limit_service": {{"cluster": "rls", "domain": "tg", "failure_mode": "deny",
                                        "local_first": false, "checks": ["route"]}}}}"#
        ));
        let mut leg1 = gw.run(Req::new("GET", "/v1"), T0);
        let call = leg1.service_call.take().unwrap();
        let ok = answer(
            Code::Ok,
            vec![descriptor_status(
                Code::Ok,
                3,
                Unit::Minute,
                2,
                Some((30, 0)),
            )],
            &[],
        );
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut leg1, call, Ok(&ok));
        let told = header(&leg1, "ratelimit").unwrap_or_default().to_string();
        assert!(told.contains(r#""stage";r=4;"#), "{told}");
        assert!(told.contains(r#""route";r=2;"#), "{told}");
        let mut d = gw.leg(Req::new("GET", "/v2"), Some(leg1));
        let call = d
            .service_call
            .take()
            .expect("the route is asked of the service");
        conclude(
            &gw.cfg,
            &gw.keys,
            &gw.store,
            &mut d,
            call,
            Err(CallFailure::Timeout),
        );
        assert_eq!(status(&d), 429);
        let told = header(&d, "ratelimit").unwrap_or_default().to_string();
        // The stage token the first leg took stays spent, and the answer says so.
        assert_eq!(told, r#""stage";r=4;t=1000"#, "{told}");
    }

    #[test]
    fn a_later_leg_on_another_route_asks_the_service_about_that_route_only() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "throttle": {{"rate": 0.001, "burst": 1000}},
                "routes": [{{"match": "ANY /v1"}},
                           {{"match": "ANY /v2", "throttle": {{"rate": 0.001, "burst": 5}}}}],
                "rate_limit_service": {{"cluster": "rls", "domain": "tg", "failure_mode": "deny",
                                        "local_first": false, "checks": ["route", "stage"]}}}}"#
        ));
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        // The first leg: the stage asked of the service (no route throttle on /v1).
        let mut leg1 = gw.run(Req::new("GET", "/v1").with("x-api-key", "k-gold-1"), T0);
        let call = leg1.service_call.take().unwrap();
        assert_eq!(sent(&call), vec![vec![kv("stage", "default")]]);
        let ok = answer(Code::Ok, Vec::new(), &[]);
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut leg1, call, Ok(&ok));
        // Redirected to /v2: its route throttle, held by the service, is asked; nothing else.
        let mut d = gw.leg(
            Req::new("GET", "/v2").with("x-api-key", "k-gold-1"),
            Some(leg1),
        );
        let call = d
            .service_call
            .take()
            .expect("the route is asked of the service");
        assert_eq!(call.checks, vec![rls::Check::Route]);
        assert_eq!(
            sent(&call),
            vec![vec![kv("stage", "default"), kv("route", "ANY /v2")]]
        );
        let over = answer(Code::OverLimit, Vec::new(), &[]);
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&over));
        assert_eq!(status(&d), 429);
        // The service's own headers: the later leg's answer keeps the first leg's, but for
        // the names it sets again.
        let mut leg1 = gw.run(Req::new("GET", "/v1"), T0);
        let h1 = answer(
            Code::Ok,
            Vec::new(),
            &[("x-quota-left", "7"), ("x-rl", "a")],
        );
        gw.answered(&mut leg1, &h1);
        let mut d = gw.leg(Req::new("GET", "/v2"), Some(leg1));
        let h2 = answer(Code::Ok, Vec::new(), &[("X-RL", "b"), ("x-route", "r")]);
        gw.answered(&mut d, &h2);
        assert_eq!(
            d.service_headers,
            vec![kv("x-quota-left", "7"), kv("x-rl", "b"), kv("x-route", "r")]
        );
        // A first leg that reported nothing passed the service's own `ratelimit` on; the later
        // leg reports its route, so tollgate's `ratelimit` is the one value sent.
        let mut leg1 = gw.run(Req::new("GET", "/v1"), T0);
        let h1 = answer(
            Code::Ok,
            Vec::new(),
            &[("ratelimit", "theirs"), ("x-a", "1")],
        );
        gw.answered(&mut leg1, &h1);
        assert_eq!(
            leg1.service_headers,
            vec![kv("ratelimit", "theirs"), kv("x-a", "1")]
        );
        let mut d = gw.leg(Req::new("GET", "/v2"), Some(leg1));
        let status = descriptor_status(Code::Ok, 5, Unit::Minute, 4, Some((30, 0)));
        let h2 = answer(Code::Ok, vec![status], &[]);
        gw.answered(&mut d, &h2);
        assert!(header(&d, "ratelimit").is_some_and(|v| v.contains("\"route\"")));
        assert_eq!(d.service_headers, vec![kv("x-a", "1")]);
        // The same when the later leg asks nothing (its route's throttle is local): the
        // carried `ratelimit` gives way to tollgate's.
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "throttle": {{"rate": 0.001, "burst": 1000}},
                "routes": [{{"match": "ANY /v1"}},
                           {{"match": "ANY /v2", "throttle": {{"rate": 0.001, "burst": 5}}}}],
                "rate_limit_service": {{"cluster": "rls", "domain": "tg", "failure_mode": "deny",
                                        "local_first": false, "checks": ["stage"]}}}}"#
        ));
        let mut leg1 = gw.run(Req::new("GET", "/v1"), T0);
        gw.answered(&mut leg1, &h1);
        assert_eq!(
            leg1.service_headers,
            vec![kv("ratelimit", "theirs"), kv("x-a", "1")]
        );
        let d = gw.leg(Req::new("GET", "/v2"), Some(leg1));
        assert!(d.service_call.is_none());
        assert!(header(&d, "ratelimit").is_some_and(|v| v.contains("\"route\"")));
        assert_eq!(d.service_headers, vec![kv("x-a", "1")]);
        // The same route again (a leg on /v2 after /v2): not asked twice.
        let mut first = gw.run(Req::new("GET", "/v2"), T0);
        gw.answered(&mut first, &ok);
        let d = gw.leg(Req::new("GET", "/v2"), Some(first));
        assert!(d.service_call.is_none());
    }
}

/// What a request refused later gets back (`Spent`, `give_back`).
mod refused_requests_spend_nothing {
    use super::*;
    use crate::ratelimit_service::tests::{response as answer, status as descriptor_status};
    use crate::ratelimit_service::{Code, Unit};

    fn tokens(gw: &Gw, key: &str) -> u64 {
        let v = gw.store.get(key).unwrap().unwrap().0;
        BucketState::decode(&v).unwrap().tokens_micro / bucket::SCALE
    }

    fn quota_used(gw: &Gw, id: &str) -> u64 {
        let mut keys = gw.cfg.api_keys.as_ref().unwrap().keys().iter();
        let i = keys.position(|k| k.id == id).unwrap();
        let v = gw.store.get(&gw.keys.quota[i]).unwrap().unwrap().0;
        QuotaState::decode(&v).map_or(0, |s| s.used)
    }

    #[test]
    fn a_client_over_its_limit_does_not_drain_the_stage_bucket() {
        let gw = Gw::new(
            r#"{"throttle": {"rate": 0.001, "burst": 100},
                "client_throttle": {"by": "ip", "rate": 0.001, "burst": 5}}"#,
        );
        let admitted = (0..100)
            .filter(|_| status(&gw.run(Req::new("GET", "/").from("10.0.0.66:1"), T0)) == 200)
            .count();
        assert_eq!(admitted, 5);
        assert_eq!(
            tokens(&gw, "tollgate:test:stage:default"),
            95,
            "only admitted requests spent"
        );
        let d = gw.run(Req::new("GET", "/").from("10.0.0.7:1"), T0);
        assert_eq!(status(&d), 200, "{:?}", d.error);
    }

    #[test]
    fn report_only_spends_as_enforcement_would() {
        let gw = Gw::new(
            r#"{"enforce": false, "throttle": {"rate": 0.001, "burst": 100},
                "client_throttle": {"by": "ip", "rate": 0.001, "burst": 5}}"#,
        );
        for _ in 0..20 {
            let d = gw.run(Req::new("GET", "/").from("10.0.0.66:1"), T0);
            assert_eq!(d.outcome, Outcome::Forward);
        }
        assert_eq!(tokens(&gw, "tollgate:test:stage:default"), 95);
    }

    #[test]
    fn a_plan_over_its_quota_gives_back_its_bucket_tokens() {
        // free: bucket of 100, quota of 2 a day.
        let gw = Gw::new(&format!("{{{KEYS}}}"));
        let key = Req::new("GET", "/").with("x-api-key", "k-free-1");
        let statuses: Vec<u16> = (0..5).map(|_| status(&gw.run(key_req(&key), T0))).collect();
        assert_eq!(statuses, [200, 200, 429, 429, 429]);
        assert_eq!(
            tokens(&gw, "tollgate:test:stage:default:plan:free:free-1"),
            98
        );
        assert_eq!(quota_used(&gw, "free-1"), 2);
    }

    fn key_req(r: &Req) -> Req {
        let mut n = Req::new("GET", "/");
        n.headers = r.headers.clone();
        n
    }

    #[test]
    fn a_request_the_service_refuses_does_not_count_against_the_local_quota() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "rate_limit_service": {{"cluster": "rls", "domain": "tg",
                "failure_mode": "deny", "checks": ["plan"]}}}}"#
        ));
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), T0);
        let call = d.service_call.take().unwrap();
        assert_eq!(quota_used(&gw, "free-1"), 1, "counted in front of the call");
        let over = answer(
            Code::OverLimit,
            vec![descriptor_status(
                Code::OverLimit,
                10,
                Unit::Second,
                0,
                Some((1, 0)),
            )],
            &[],
        );
        let r = conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&over));
        assert_eq!(r, ServiceResult::OverLimit);
        assert_eq!(status(&d), 429);
        assert_eq!(quota_used(&gw, "free-1"), 0, "given back");
        // A failure under failure_mode deny refuses too, and gives back as well.
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), T0);
        let call = d.service_call.take().unwrap();
        conclude(
            &gw.cfg,
            &gw.keys,
            &gw.store,
            &mut d,
            call,
            Err(crate::ratelimit_service::CallFailure::Timeout),
        );
        assert_eq!(status(&d), 429);
        assert_eq!(quota_used(&gw, "free-1"), 0);
        // Admitted by the service: it stays counted.
        let mut d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), T0);
        let call = d.service_call.take().unwrap();
        let ok = answer(
            Code::Ok,
            vec![descriptor_status(Code::Ok, 10, Unit::Second, 9, None)],
            &[],
        );
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&ok));
        assert_eq!(d.outcome, Outcome::Forward);
        assert_eq!(quota_used(&gw, "free-1"), 1);
    }

    #[test]
    fn a_refused_cache_invalidation_spends_no_quota() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "cache": {{"enabled": true, "require_authorization": true,
                "unauthorized_strategy": "FAIL_WITH_403"}}}}"#
        ));
        let fresh = || {
            Req::new("GET", "/x")
                .with("x-api-key", "k-free-1")
                .with("cache-control", "max-age=0")
        };
        for _ in 0..3 {
            let d = gw.run(fresh(), T0);
            assert_eq!(status(&d), 403);
            assert_eq!(d.error, Some(ErrorType::CacheInvalidationDenied));
        }
        assert_eq!(quota_used(&gw, "free-1"), 0);
        assert_eq!(
            tokens(&gw, "tollgate:test:stage:default:plan:free:free-1"),
            100
        );
        let d = gw.run(Req::new("GET", "/x").with("x-api-key", "k-free-1"), T0);
        assert_eq!(status(&d), 200, "{:?}", d.error);
    }

    /// Report-only makes every decision as enforcement would, charges included: a cache
    /// invalidation counted as refused asks the rate limit service nothing (enforced, the
    /// request ends before the call), and its answer tells the local charges given back.
    #[test]
    fn a_report_only_cache_refusal_asks_the_service_nothing() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "enforce": false, "throttle": {{"rate": 0.001, "burst": 10}},
                "cache": {{"enabled": true, "require_authorization": true,
                           "unauthorized_strategy": "FAIL_WITH_403"}},
                "rate_limit_service": {{"cluster": "rls", "domain": "tg", "failure_mode": "deny", "checks": ["quota"]}}}}"#
        ));
        let req = Req::new("GET", "/x")
            .with("x-api-key", "k-free-1")
            .with("cache-control", "max-age=0");
        let d = gw.run(req, T0);
        assert_eq!(d.outcome, Outcome::Forward);
        assert_eq!(d.error, Some(ErrorType::CacheInvalidationDenied));
        assert!(d.service_call.is_none(), "the service was asked");
        assert_eq!(
            header(&d, "ratelimit"),
            Some(r#""plan";r=100;t=0, "stage";r=10;t=0"#)
        );
        assert_eq!(tokens(&gw, "tollgate:test:stage:default"), 10);
        // Without the invalidation: the call is made.
        let d = gw.run(Req::new("GET", "/x").with("x-api-key", "k-free-1"), T0);
        assert!(d.service_call.is_some());
    }

    /// A later leg of a request its first leg counted as refused (report-only) asks the
    /// service nothing: enforced, the request would have ended at the first leg.
    #[test]
    fn a_redirect_back_to_an_earlier_legs_route_asks_the_service_once() {
        let gw = Gw::new(
            r#"{"routes": [{"match": "ANY /a", "throttle": {"rate": 0.001, "burst": 5}},
                           {"match": "ANY /b", "throttle": {"rate": 0.001, "burst": 5}}],
                "rate_limit_service": {"cluster": "rls", "domain": "tg", "failure_mode": "deny",
                                       "local_first": false, "checks": ["route"]}}"#,
        );
        let ok = answer(Code::Ok, Vec::new(), &[]);
        let leg = |path: &str, first: Option<Decision>| {
            let mut d = gw.leg(Req::new("GET", path), first);
            let asked = d.service_call.is_some();
            if asked {
                gw.answered(&mut d, &ok);
            }
            (d, asked)
        };
        let (a, asked_a) = leg("/a", None);
        let (b, asked_b) = leg("/b", Some(a));
        let (_, asked_back) = leg("/a", Some(b));
        assert_eq!((asked_a, asked_b, asked_back), (true, true, false));
    }

    #[test]
    fn a_later_leg_of_a_request_counted_as_refused_asks_the_service_nothing() {
        let gw = Gw::new(
            r#"{"enforce": false, "throttle": {"rate": 0.001, "burst": 1},
                "routes": [{"match": "ANY /v1"},
                           {"match": "ANY /v2", "throttle": {"rate": 0.001, "burst": 5}}],
                "rate_limit_service": {"cluster": "rls", "domain": "tg", "local_first": false, "failure_mode": "deny",
                                       "checks": ["route"]}}"#,
        );
        assert_eq!(gw.run(Req::new("GET", "/v1"), T0).error, None);
        let leg1 = gw.run(Req::new("GET", "/v1"), T0);
        assert_eq!(leg1.error, Some(ErrorType::Throttled));
        assert!(leg1.service_call.is_none());
        let d = gw.leg(Req::new("GET", "/v2"), Some(leg1));
        assert_eq!(d.error, Some(ErrorType::Throttled));
        assert!(d.service_call.is_none(), "the service was asked");
        // Not refused before: the later leg asks about /v2.
        let leg1 = gw.run(Req::new("GET", "/v1"), T0);
        let leg1 = Decision {
            error: None,
            ..leg1
        };
        assert!(gw
            .leg(Req::new("GET", "/v2"), Some(leg1))
            .service_call
            .is_some());
    }

    #[test]
    fn a_report_only_stage_does_not_open_an_enforced_route_to_ambiguous_paths() {
        let gw = Gw::new(
            r#"{"enforce": false,
                "api_key": {"keys": [{"id": "a", "value": "k"}]},
                "routes": [{"match": "ANY /admin/{proxy+}", "api_key_required": true,
                            "enforce": true}]}"#,
        );
        assert_eq!(status(&gw.run(Req::new("GET", "/admin/secret"), T0)), 403);
        for p in ["/;x/admin/secret", "/admin/..;/admin/secret"] {
            let d = gw.run(Req::new("GET", p), T0);
            assert_eq!(status(&d), 400, "{p}");
            assert_eq!(d.error, Some(ErrorType::BadRequest));
        }
        // With enforcement off everywhere, it is reported, not refused.
        let gw = Gw::new(r#"{"enforce": false, "routes": [{"match": "ANY /admin/{proxy+}"}]}"#);
        let d = gw.run(Req::new("GET", "/;x/admin/secret"), T0);
        assert_eq!(d.outcome, Outcome::Forward);
        assert_eq!(d.error, Some(ErrorType::BadRequest));
    }

    #[test]
    fn no_clock_refuses_instead_of_guessing() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "throttle": {{"rate": 10, "burst": 10}}}}"#
        ));
        let d = gw.run(Req::new("GET", "/"), 0);
        assert_eq!(status(&d), 429);
        assert!(d
            .store_failure
            .is_some_and(|w| w.to_string().contains("clock")));
        let d = gw.run(Req::new("GET", "/").with("x-api-key", "k-free-1"), 0);
        assert_eq!(status(&d), 429);
        assert_eq!(quota_used(&gw, "free-1"), 0);
        // A configuration without limits needs no clock.
        let gw = Gw::new("{}");
        assert_eq!(status(&gw.run(Req::new("GET", "/"), 0)), 200);
    }
}

#[test]
fn a_preflight_about_a_route_with_cors_off_goes_on_as_the_options_request_it_is() {
    let gw = Gw::new(&format!(
        r#"{{{CORS}, "routes": [{{"match": "PUT /items/{{id}}", "cors": false}},
                               {{"match": "ANY /items/{{id}}", "api_key_required": true,
                                 "throttle": {{"rate": 0.001, "burst": 1}}}}],
                     {KEYS}}}"#
    ));
    let preflight = || {
        Req::new("OPTIONS", "/items/1")
            .with("origin", "https://app.example.com")
            .with("access-control-request-method", "PUT")
    };
    // Checked as an OPTIONS request: the `ANY` route's key and throttle apply, whatever route
    // the preflight headers name.
    let d = gw.run(preflight(), T0);
    assert_eq!((status(&d), d.route), (403, Some(1)));
    let d = gw.run(preflight().with("x-api-key", "k-gold-1"), T0);
    assert_eq!(d.outcome, Outcome::Forward);
    assert_eq!(d.route, Some(1));
    assert!(
        d.cors.is_none() && d.cors_off,
        "no CORS policy touches its answer"
    );
    let d = gw.run(preflight().with("x-api-key", "k-gold-1"), T0);
    assert_eq!(status(&d), 429);
    // About GET, the stage's policy answers.
    let r = Req::new("OPTIONS", "/items/1")
        .with("origin", "https://app.example.com")
        .with("access-control-request-method", "GET");
    assert_eq!(status(&gw.run(r, T0)), 204);
}

mod service_headers {
    use super::*;
    use crate::ratelimit_service::tests::{response as answer, status as descriptor_status};
    use crate::ratelimit_service::{Code, Unit};

    #[test]
    fn a_services_429_carries_tollgates_headers_once_and_no_cors_for_a_refused_origin() {
        let gw = Gw::new(&format!(
            r#"{{{KEYS}, "rate_limit_headers": "x-ratelimit",
                "cors": {{"allow_origins": ["https://app.example.com"]}},
                "rate_limit_service": {{"cluster": "rls", "domain": "tg",
                    "failure_mode": "deny", "checks": ["quota"]}}}}"#
        ));
        let req = || {
            Req::new("GET", "/")
                .with("x-api-key", "k-free-1")
                .with("origin", "https://evil.example.net")
        };
        let mut d = gw.run(req(), T0);
        let call = d.service_call.take().unwrap();
        let over = answer(
            Code::OverLimit,
            vec![descriptor_status(
                Code::OverLimit,
                100,
                Unit::Hour,
                0,
                Some((3600, 0)),
            )],
            &[
                ("X-RateLimit-Limit", "999"),
                ("Retry-After", "0"),
                ("Access-Control-Allow-Origin", "https://evil.example.net"),
                ("Access-Control-Allow-Credentials", "true"),
                ("x-svc", "yes"),
            ],
        );
        conclude(&gw.cfg, &gw.keys, &gw.store, &mut d, call, Ok(&over));
        assert_eq!(
            d.service_headers,
            vec![("x-svc".to_string(), "yes".to_string())]
        );
        let Outcome::Respond {
            status, headers, ..
        } = &d.outcome
        else {
            panic!("{:?}", d.outcome)
        };
        assert_eq!(*status, 429);
        let all: Vec<&str> = headers
            .iter()
            .map(|(n, _)| *n)
            .chain(d.service_headers.iter().map(|(n, _)| n.as_str()))
            .collect();
        for name in ["retry-after", "x-ratelimit-limit"] {
            assert_eq!(
                all.iter().filter(|n| **n == name).count(),
                1,
                "{name}: {all:?}"
            );
        }
        assert!(
            !all.iter().any(|n| n.starts_with("access-control-")),
            "{all:?}"
        );
        assert_eq!(header(&d, "retry-after"), Some("3600"));
    }
}

#[test]
fn every_refusal_gets_a_grpc_status_a_client_does_not_retry_at_once() {
    // Every 429 the pipeline gives is RESOURCE_EXHAUSTED; the others as gRPC maps them.
    for e in [
        ErrorType::Throttled,
        ErrorType::QuotaExceeded,
        ErrorType::InvalidApiKey,
        ErrorType::CorsPreflightDenied,
        ErrorType::CacheInvalidationDenied,
        ErrorType::BadRequest,
    ] {
        let expected = match e.status() {
            429 => GRPC_RESOURCE_EXHAUSTED,
            403 => 7,
            _ => 13,
        };
        assert_eq!(grpc_answer(e.status(), &[], None).1, expected, "{e:?}");
    }
}

#[test]
fn a_followed_redirect_is_checked_but_not_charged_again() {
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 3},
            "api_key": {"keys": [{"id": "a", "value": "k-a", "usage_plan": "p"}]},
            "usage_plans": {"p": {"quota": {"limit": 5, "period": "DAY"}}},
            "routes": [{"match": "GET /final", "api_key_required": true},
                       {"match": "GET /moved", "throttle": {"rate": 0.001, "burst": 1}}]}"#,
    );
    let keyed = |path: &str| Req::new("GET", path).with("x-api-key", "k-a");
    let leg = |path: &str, first| gw.leg(keyed(path), first);

    let leg1 = gw.run(keyed("/start"), T0);
    assert_eq!(status(&leg1), 200);
    let told = header(&leg1, "ratelimit").map(String::from);
    assert_eq!(
        told.as_deref(),
        Some(r#""stage";r=2;t=1000, "quota";r=4;t=28800"#)
    );
    // The second leg: checked (its route requires the key, which it has), nothing charged,
    // the first leg's headers told.
    let d = leg("/final", Some(leg1));
    assert_eq!(status(&d), 200);
    assert_eq!(header(&d, "ratelimit"), told.as_deref());
    let fresh = gw.run(keyed("/start"), T0);
    assert_eq!(
        header(&fresh, "ratelimit"),
        Some(r#""stage";r=1;t=1000, "quota";r=3;t=28800"#)
    );

    // A second leg on a route with its own throttle takes that route's token, and tells it
    // where a first leg would (route before stage).
    let leg1 = gw.run(keyed("/start"), T0);
    let d = leg("/moved", Some(leg1));
    assert_eq!(status(&d), 200);
    assert_eq!(
        header(&d, "ratelimit"),
        Some(r#""route";r=0;t=1000, "stage";r=0;t=1000, "quota";r=2;t=28800"#)
    );
    // Refused there, its first leg's charges stay: that leg reached the upstream.
    assert_eq!(status(&gw.run(Req::new("GET", "/start"), T0)), 429);
    let gw2 = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 2},
            "routes": [{"match": "GET /moved", "throttle": {"rate": 0.001, "burst": 1}}]}"#,
    );
    let run2 = |gw: &Gw, path: &str, first| gw.leg(Req::new("GET", path), first);
    assert_eq!(status(&run2(&gw2, "/moved", None)), 200);
    let leg1 = run2(&gw2, "/start", None);
    assert_eq!(header(&leg1, "ratelimit"), Some(r#""stage";r=0;t=1000"#));
    let d = run2(&gw2, "/moved", Some(leg1));
    assert_eq!(status(&d), 429);
    assert_eq!(
        header(&d, "ratelimit"),
        Some(r#""route";r=0;t=1000, "stage";r=0;t=1000"#)
    );
    assert_eq!(status(&run2(&gw2, "/start", None)), 429);

    // From one throttled route to another: the second route's report replaces the first's.
    let gw3 = Gw::new(
        r#"{"routes": [{"match": "GET /a", "throttle": {"rate": 0.001, "burst": 3}},
                       {"match": "GET /b", "throttle": {"rate": 0.001, "burst": 2}}]}"#,
    );
    let leg1 = run2(&gw3, "/a", None);
    assert_eq!(header(&leg1, "ratelimit"), Some(r#""route";r=2;t=1000"#));
    let d = run2(&gw3, "/b", Some(leg1));
    assert_eq!(header(&d, "ratelimit"), Some(r#""route";r=1;t=1000"#));
    assert_eq!(
        header(&d, "ratelimit-policy"),
        Some(r#""route";q=2;w=2000"#)
    );

    // A second leg refused for its key: its first leg (which reached the upstream) stays
    // charged, so the stage's only token is spent.
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 1},
            "api_key": {"keys": [{"id": "a", "value": "k-a"}]},
            "routes": [{"match": "GET /final", "api_key_required": true}]}"#,
    );
    let leg1 = gw.run(Req::new("GET", "/start"), T0);
    assert_eq!(status(&leg1), 200);
    let d = gw.leg(Req::new("GET", "/final"), Some(leg1));
    assert_eq!(status(&d), 403);
    assert_eq!(status(&gw.run(Req::new("GET", "/start"), T0)), 429);
}

#[test]
fn a_handover_is_claimed_once_by_its_stream_and_waits_a_bounded_time() {
    let h = |start: u64, at: u64| Handover {
        stream_start_ns: start,
        started_ns: at,
        left_ns: at,
        first_leg: Decision::new(Outcome::Forward, None, None, None),
        series: None,
    };
    let mut hs = Handovers::default();
    assert!(hs.is_empty());
    hs.put(h(10, T0));
    assert!(hs.claim(11, T0).is_none());
    assert_eq!(hs.claim(10, T0).map(|h| h.stream_start_ns), Some(10));
    assert!(hs.claim(10, T0).is_none());
    assert!(hs.is_empty());
    // Several wait at once (second legs held by an earlier filter), each for its own stream.
    for t in [5, 1, 3] {
        hs.put(h(t, T0));
    }
    assert_eq!(hs.claim(3, T0 + SEC).map(|h| h.stream_start_ns), Some(3));
    // One never claimed is given up after the wait.
    assert!(hs.claim(1, T0 + HANDOVER_WAIT_NS).is_none());
    assert!(hs.is_empty());
    // Bounded: when full, the one that waited longest gives way to the new one.
    for t in 0..=HANDOVERS_MAX as u64 {
        hs.put(h(t + 100, T0 + t));
    }
    assert!(hs.claim(100, T0).is_none(), "the oldest gave way");
    assert!(
        hs.claim(100 + HANDOVERS_MAX as u64, T0).is_some(),
        "the newest is kept"
    );
    assert!(hs.claim(99 + HANDOVERS_MAX as u64, T0).is_some());
    assert!(hs.claim(101, T0).is_some());
}

#[test]
fn a_redirect_chain_refused_on_its_last_leg_keeps_the_earlier_legs_route_tokens() {
    let gw = Gw::new(
        r#"{"routes": [{"match": "GET /a", "throttle": {"rate": 0.001, "burst": 5}},
                       {"match": "GET /b", "throttle": {"rate": 0.001, "burst": 5}},
                       {"match": "GET /c", "throttle": {"rate": 0.001, "burst": 1}}]}"#,
    );
    let leg = |path: &str, first| gw.leg(Req::new("GET", path), first);
    assert_eq!(status(&leg("/c", None)), 200);
    let a = leg("/a", None);
    let b = leg("/b", Some(a));
    assert_eq!(status(&b), 200);
    let c = leg("/c", Some(b));
    assert_eq!(status(&c), 429);
    // /a and /b reached the upstream: their tokens stay spent (three left after the next
    // request on each), and /c's refusal took none.
    for path in ["/a", "/b"] {
        let d = leg(path, None);
        assert!(
            header(&d, "ratelimit").is_some_and(|v| v.starts_with(r#""route";r=3;"#)),
            "{path}: {:?}",
            header(&d, "ratelimit")
        );
    }
}

/// A POST the upstream answers with 303 (an order made) whose GET leg is refused: the POST
/// reached the upstream, so its quota unit stays counted. (It used to go back: every order
/// whose confirmation page was throttled was free, and a quota of 3 let 8 orders through.)
#[test]
fn a_refused_later_leg_does_not_make_its_first_leg_free() {
    let gw = Gw::new(
        r#"{"api_key": {"keys": [{"id": "a", "value": "k-a", "usage_plan": "p"},
                                 {"id": "b", "value": "k-b"}]},
            "usage_plans": {"p": {"quota": {"limit": 3, "period": "DAY"}}},
            "routes": [{"match": "POST /orders", "api_key_required": true},
                       {"match": "GET /orders/{id}", "api_key_required": true,
                        "throttle": {"rate": 0.001, "burst": 1}}]}"#,
    );
    let keyed = |m: &str, p: &str| Req::new(m, p).with("x-api-key", "k-a");
    // The confirmation page's one token goes to someone else.
    let other = Req::new("GET", "/orders/0").with("x-api-key", "k-b");
    assert_eq!(status(&gw.run(other, T0)), 200);
    let mut orders = 0;
    for _ in 0..8 {
        let post = gw.run(keyed("POST", "/orders"), T0);
        if status(&post) != 200 {
            assert_eq!(post.error, Some(ErrorType::QuotaExceeded));
            continue;
        }
        orders += 1;
        let get = gw.leg(keyed("GET", "/orders/1"), Some(post));
        assert_eq!(status(&get), 429);
        // Its answer tells the quota as spent.
        let told = header(&get, "ratelimit").unwrap_or_default().to_string();
        assert!(
            told.contains(&format!(r#""quota";r={};"#, 3 - orders)),
            "{told}"
        );
    }
    assert_eq!(orders, 3, "a quota of 3 admits 3 orders");
}

#[test]
fn a_redirect_back_to_an_earlier_legs_route_takes_no_second_token() {
    // A -> B -> A: the request took A's token on its first leg; its third does not take another.
    let gw = Gw::new(
        r#"{"routes": [{"match": "GET /a", "throttle": {"rate": 0.001, "burst": 5}},
                       {"match": "GET /b", "throttle": {"rate": 0.001, "burst": 5}}]}"#,
    );
    let leg = |path: &str, first| gw.leg(Req::new("GET", path), first);
    let a = leg("/a", None);
    let b = leg("/b", Some(a));
    let back = leg("/a", Some(b));
    assert_eq!(status(&back), 200);
    // The answer's `"route"` item is the last route checked, B's.
    assert!(
        header(&back, "ratelimit").is_some_and(|v| v.starts_with(r#""route";r=4;"#)),
        "{:?}",
        header(&back, "ratelimit")
    );
    for path in ["/a", "/b"] {
        let d = leg(path, None);
        assert!(
            header(&d, "ratelimit").is_some_and(|v| v.starts_with(r#""route";r=3;"#)),
            "{path}: {:?}",
            header(&d, "ratelimit")
        );
    }
}

/// A later leg refused by cache invalidation (`FAIL_WITH_403`): its earlier leg's charges
/// stay, and its answer tells them as spent.
#[test]
fn a_later_leg_refused_by_the_cache_tells_its_first_legs_charges_as_spent() {
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 5},
            "cache": {"ttl": 30, "require_authorization": true,
                      "unauthorized_strategy": "FAIL_WITH_403"}}"#,
    );
    let leg1 = gw.run(Req::new("POST", "/orders"), T0);
    assert_eq!(header(&leg1, "ratelimit"), Some(r#""stage";r=4;t=1000"#));
    let d = gw.leg(
        Req::new("GET", "/fail/1").with("cache-control", "no-cache"),
        Some(leg1),
    );
    assert_eq!(status(&d), 403);
    assert_eq!(header(&d, "ratelimit"), Some(r#""stage";r=4;t=1000"#));
    let next = gw.run(Req::new("GET", "/x"), T0);
    assert_eq!(header(&next, "ratelimit"), Some(r#""stage";r=3;t=1000"#));
}

/// A later leg refused by the cache after an earlier leg took a route token: that token stays
/// spent, and the answer's `"route"` item (the earlier route's) is not told as refunded.
#[test]
fn a_later_leg_refused_by_the_cache_tells_an_earlier_route_token_as_spent() {
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 5},
            "routes": [{"match": "ANY /v1", "throttle": {"rate": 0.001, "burst": 9}},
                       {"match": "ANY /fail/{id}"}],
            "cache": {"ttl": 30, "require_authorization": true,
                      "unauthorized_strategy": "FAIL_WITH_403"}}"#,
    );
    let leg1 = gw.run(Req::new("POST", "/v1"), T0);
    let told = header(&leg1, "ratelimit").unwrap_or_default().to_string();
    assert!(told.contains(r#""route";r=8;t=1000"#), "{told}");
    let d = gw.leg(
        Req::new("GET", "/fail/1").with("cache-control", "no-cache"),
        Some(leg1),
    );
    assert_eq!(status(&d), 403);
    assert_eq!(header(&d, "ratelimit"), Some(told.as_str()));
}

/// A chain longer than the legs remembered: the last four legs' routes are, so the fifth and
/// sixth legs on one route (`/r5/a` -> `/r5/b`) take one token between them.
#[test]
fn a_long_redirect_chain_remembers_its_latest_legs() {
    let gw = Gw::new(
        r#"{"routes": [{"match": "GET /r1", "throttle": {"rate": 0.001, "burst": 9}},
                       {"match": "GET /r2", "throttle": {"rate": 0.001, "burst": 9}},
                       {"match": "GET /r3", "throttle": {"rate": 0.001, "burst": 9}},
                       {"match": "GET /r4", "throttle": {"rate": 0.001, "burst": 9}},
                       {"match": "GET /r5/{id}", "throttle": {"rate": 0.001, "burst": 9}}]}"#,
    );
    let mut leg = None;
    for path in ["/r1", "/r2", "/r3", "/r4", "/r5/a", "/r5/b"] {
        let d = gw.leg(Req::new("GET", path), leg.take());
        assert_eq!(status(&d), 200, "{path}");
        leg = Some(d);
    }
    let d = gw.leg(Req::new("GET", "/r5/c"), None);
    assert!(
        header(&d, "ratelimit").is_some_and(|v| v.starts_with(r#""route";r=7;"#)),
        "one token for the chain, one for this request: {:?}",
        header(&d, "ratelimit")
    );
}

#[test]
fn a_refused_request_tells_what_it_gave_back() {
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 5},
            "routes": [
              {"match": "GET /pets/{id}", "throttle": {"rate": 0.001, "burst": 2}},
              {"match": "GET /fail/{id}", "cache": {"unauthorized_strategy": "FAIL_WITH_403"}},
              {"match": "GET /report/{id}", "enforce": false,
               "cache": {"unauthorized_strategy": "FAIL_WITH_403"}}],
            "cache": {"ttl": 60}}"#,
    );
    let ok = gw.run(Req::new("GET", "/fail/1"), T0);
    assert_eq!(header(&ok, "ratelimit"), Some(r#""stage";r=4;t=1000"#));
    // Refused by the cache after the stage bucket gave a token: it went back, and the 403
    // says four are left, not three.
    let denied = gw.run(
        Req::new("GET", "/fail/1").with("cache-control", "no-cache"),
        T0,
    );
    assert_eq!(status(&denied), 403);
    assert_eq!(header(&denied, "ratelimit"), Some(r#""stage";r=4;t=1000"#));
    // Report-only: forwarded, counted as refused, told the same way.
    let report = gw.run(Req::new("GET", "/report/1").with("pragma", "no-cache"), T0);
    assert_eq!(status(&report), 200);
    assert_eq!(header(&report, "ratelimit"), Some(r#""stage";r=4;t=1000"#));

    // Refused by the stage bucket after the route bucket gave a token: the route's token went
    // back (its bucket is full again), and the 429 says so.
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 1},
            "routes": [{"match": "GET /pets/{id}", "throttle": {"rate": 0.001, "burst": 2}}]}"#,
    );
    assert_eq!(status(&gw.run(Req::new("GET", "/other"), T0)), 200);
    let refused = gw.run(Req::new("GET", "/pets/1"), T0);
    assert_eq!(status(&refused), 429);
    assert_eq!(
        header(&refused, "ratelimit"),
        Some(r#""route";r=2;t=0, "stage";r=0;t=1000"#)
    );
    let next = gw.run(Req::new("GET", "/pets/1"), T0);
    assert_eq!(status(&next), 429);
    assert_eq!(
        header(&next, "ratelimit"),
        Some(r#""route";r=2;t=0, "stage";r=0;t=1000"#)
    );
}

#[test]
fn a_report_only_refusal_refunds_its_headers_once() {
    // Report-only: the stage bucket refuses (counted as refused, forwarded) and the cache
    // would refuse too; the route's token went back once, and the headers say so once.
    let gw = Gw::new(
        r#"{"enforce": false, "throttle": {"rate": 0.001, "burst": 1}, "cache": {"ttl": 60},
            "routes": [{"match": "GET /r/{id}", "throttle": {"rate": 0.001, "burst": 5},
                        "cache": {"unauthorized_strategy": "FAIL_WITH_403"}}]}"#,
    );
    assert_eq!(status(&gw.run(Req::new("GET", "/r/1"), T0)), 200);
    let d = gw.run(
        Req::new("GET", "/r/1").with("cache-control", "no-cache"),
        T0,
    );
    assert_eq!(status(&d), 200);
    assert_eq!(d.error, Some(ErrorType::Throttled));
    assert_eq!(
        header(&d, "ratelimit"),
        Some(r#""route";r=4;t=1000, "stage";r=0;t=1000"#)
    );
}

#[test]
fn a_later_leg_answered_as_a_preflight_keeps_its_earlier_legs_charges() {
    // The upstream redirects a preflight it answers itself (a route with CORS off) to a
    // location where tollgate answers it: the client's request ends in tollgate's 204.
    let gw = Gw::new(
        r#"{"throttle": {"rate": 0.001, "burst": 1},
            "cors": {"allow_origins": ["https://app.example.com"]},
            "routes": [{"match": "GET /legacy", "cors": false}]}"#,
    );
    let preflight = |path: &str| {
        Req::new("OPTIONS", path)
            .with("origin", "https://app.example.com")
            .with("access-control-request-method", "GET")
    };
    let leg1 = gw.run(preflight("/legacy"), T0);
    assert_eq!(status(&leg1), 200, "forwarded: the upstream answers it");
    let d = gw.leg(preflight("/new"), Some(leg1));
    assert_eq!(status(&d), 204);
    // The first leg reached the upstream: the stage's only token stays spent.
    assert_eq!(status(&gw.run(Req::new("GET", "/x"), T0)), 429);
}

#[test]
fn a_later_leg_counted_as_refused_keeps_its_first_legs_charges() {
    // Report-only: a later leg refused for its key is counted as refused; its first leg's
    // stage token stays spent, as under enforcement (that leg reached the upstream).
    let gw = Gw::new(
        r#"{"enforce": false, "throttle": {"rate": 0.001, "burst": 1},
            "api_key": {"keys": [{"id": "a", "value": "k-a"}]},
            "routes": [{"match": "GET /final", "api_key_required": true},
                       {"match": "GET /b", "throttle": {"rate": 0.001, "burst": 5}}]}"#,
    );
    let leg1 = gw.run(Req::new("GET", "/start"), T0);
    assert_eq!(leg1.error, None);
    let d = gw.leg(Req::new("GET", "/final"), Some(leg1));
    assert_eq!((status(&d), d.error), (200, Some(ErrorType::InvalidApiKey)));
    let fresh = gw.run(Req::new("GET", "/start"), T0);
    assert_eq!(
        fresh.error,
        Some(ErrorType::Throttled),
        "the stage token stays spent"
    );
}

#[test]
fn a_later_leg_of_a_request_counted_as_refused_gives_its_route_token_back_and_says_so() {
    // Report-only: the first leg is counted as refused by its route's bucket; a later leg on
    // another throttled route gives that route's token back, and its headers say so.
    let gw = Gw::new(
        r#"{"enforce": false,
            "routes": [{"match": "GET /start", "throttle": {"rate": 0.001, "burst": 1}},
                       {"match": "GET /b", "throttle": {"rate": 0.001, "burst": 5}}]}"#,
    );
    assert_eq!(gw.run(Req::new("GET", "/start"), T0).error, None);
    let leg1 = gw.run(Req::new("GET", "/start"), T0);
    assert_eq!(leg1.error, Some(ErrorType::Throttled));
    let d = gw.leg(Req::new("GET", "/b"), Some(leg1));
    assert_eq!(d.error, Some(ErrorType::Throttled));
    assert_eq!(header(&d, "ratelimit"), Some(r#""route";r=5;t=0"#));
    let b = gw.leg(Req::new("GET", "/b"), None);
    assert_eq!(header(&b, "ratelimit"), Some(r#""route";r=4;t=1000"#));
}

#[test]
fn a_preflight_answer_is_cached_only_when_the_urls_other_routes_would_allow_the_same() {
    // Browsers reuse the headers a preflight allowed for every request to the URL; a POST
    // (safelisted) needs nothing more. Here POST has a policy of its own without `x-custom`.
    let gw = Gw::new(
        r#"{"cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["PUT"],
                     "allow_headers": ["x-custom"], "max_age": 600},
            "routes": [
              {"match": "POST /pets/{id}", "cors": {"allow_origins": ["https://app.example.com"]}},
              {"match": "GET /legacy/{id}", "cors": false}]}"#,
    );
    let pf = |path: &str, method: &str, headers: Option<&str>| {
        let r = Req::new("OPTIONS", path)
            .with("origin", "https://app.example.com")
            .with("access-control-request-method", method);
        let r = match headers {
            Some(h) => r.with("access-control-request-headers", h),
            None => r,
        };
        gw.run(r, T0)
    };
    let d = pf("/pets/7", "PUT", Some("X-Custom"));
    assert_eq!(status(&d), 204);
    assert_eq!(header(&d, "access-control-allow-methods"), Some("PUT"));
    assert_eq!(header(&d, "access-control-allow-headers"), Some("x-custom"));
    assert_eq!(header(&d, "access-control-max-age"), Some("0"));
    // Without headers asked, only the method is named: cached as configured.
    let d = pf("/pets/7", "PUT", None);
    assert_eq!(header(&d, "access-control-max-age"), Some("600"));
    // Where every safelisted method's route allows the same, cached as configured.
    let d = pf("/other/7", "PUT", Some("x-custom"));
    assert_eq!(header(&d, "access-control-max-age"), Some("600"));
    // Another preflighted method's route with a policy of its own that refuses the header:
    // not cached either (browsers keep header entries per URL, for every method).
    let gw2 = Gw::new(
        r#"{"cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["PUT"],
                     "allow_headers": ["x-custom"], "max_age": 600},
            "routes": [{"match": "DELETE /pets/{id}",
                        "cors": {"allow_origins": ["https://app.example.com"],
                                 "allow_methods": ["DELETE"]}}]}"#,
    );
    let r = Req::new("OPTIONS", "/pets/7")
        .with("origin", "https://app.example.com")
        .with("access-control-request-method", "PUT")
        .with("access-control-request-headers", "x-custom");
    let d = gw2.run(r, T0);
    assert_eq!(status(&d), 204);
    assert_eq!(header(&d, "access-control-max-age"), Some("0"));
    // A GET route that leaves CORS to its upstream: never cached with headers.
    let d = pf("/legacy/7", "PUT", Some("x-custom"));
    assert_eq!(status(&d), 204);
    assert_eq!(header(&d, "access-control-max-age"), Some("0"));
    // An answer that allows credentials serves credentialed requests from the cache (Fetch's
    // preflight cache keeps credentials per entry): a route at the URL whose policy allows the
    // origin and header but not credentials would see a credentialed request it refuses.
    let creds = |post_credentials: bool| {
        Gw::new(&format!(
            r#"{{"cors": {{"allow_origins": ["https://app.example.com"], "allow_methods": ["PUT"],
                          "allow_headers": ["x-custom"], "max_age": 600,
                          "allow_credentials": true}},
                "routes": [{{"match": "POST /pets/{{id}}",
                            "cors": {{"allow_origins": ["https://app.example.com"],
                                     "allow_headers": ["x-custom"], "max_age": 300,
                                     "allow_credentials": {post_credentials}}}}}]}}"#
        ))
    };
    let r = Req::new("OPTIONS", "/pets/7")
        .with("origin", "https://app.example.com")
        .with("access-control-request-method", "PUT")
        .with("access-control-request-headers", "x-custom");
    let d = creds(false).run(r.clone(), T0);
    assert_eq!(status(&d), 204);
    assert_eq!(header(&d, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&d, "access-control-max-age"), Some("0"));
    let d = creds(true).run(r, T0);
    assert_eq!(header(&d, "access-control-max-age"), Some("600"));
    // The other way round (the answer allows no credentials), the browser keeps a
    // credential-less entry, which no credentialed request uses: cached as configured.
    let r = Req::new("OPTIONS", "/pets/7")
        .with("origin", "https://app.example.com")
        .with("access-control-request-method", "POST")
        .with("access-control-request-headers", "x-custom");
    let d = creds(false).run(r, T0);
    assert_eq!(status(&d), 204);
    assert_eq!(header(&d, "access-control-allow-credentials"), None);
    assert_eq!(header(&d, "access-control-max-age"), Some("300"));
}

#[test]
fn client_identities_stay_apart_as_descriptor_values() {
    assert_eq!(descriptor_text(b"hdr:acme"), "hdr:acme");
    assert_eq!(descriptor_text(b"hdr:caf\xe9"), "hdr:caf\\xe9");
    assert_ne!(
        descriptor_text(b"hdr:caf\xe9"),
        descriptor_text(b"hdr:caf\xff")
    );
    assert_eq!(descriptor_text("hdr:café".as_bytes()), "hdr:café");
}

#[test]
fn start_up_warnings_are_logged_by_the_first_context_of_a_configuration() {
    let store = MemoryStore::new();
    let key = "tollgate:p:stage:s:warned";
    let a = warnings_mark("0.1.0", b"d1", &["plain value".to_string()]);
    let none = warnings_mark("0.1.0", b"d1", &[]);
    // Main thread, two workers, with one configuration: one logs.
    let logged: Vec<bool> = (0..3).map(|_| first_to_warn(&store, key, a)).collect();
    assert_eq!(logged, [true, false, false]);
    // Fixed (no warnings: the mark changes, nothing to log), then back: logged again, once.
    assert!(first_to_warn(&store, key, none));
    assert!(!first_to_warn(&store, key, none));
    assert!(first_to_warn(&store, key, a));
    assert!(!first_to_warn(&store, key, a));
    // Another module's version, or other warnings, is another mark.
    assert_ne!(
        warnings_mark("0.2.0", b"d1", &["plain value".to_string()]),
        a
    );
    assert_ne!(
        warnings_mark("0.1.0", b"d1", &["plain".to_string(), "value".to_string()]),
        a
    );
    // And so is another configuration with the same warnings: its load is logged too.
    assert_ne!(
        warnings_mark("0.1.0", b"d2", &["plain value".to_string()]),
        a
    );
    assert_eq!(store.len(), 1, "one key, however many configurations");
    // A store that fails: everyone logs.
    struct Broken;
    impl SharedStore for Broken {
        fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Err(StoreError::Host)
        }
        fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
            Err(StoreError::Host)
        }
    }
    assert!(first_to_warn(&Broken, key, a));
    assert!(first_to_warn(&Broken, key, a));
}

#[test]
fn a_grpc_client_gets_a_trailers_only_answer() {
    let headers = vec![
        ("retry-after", "3".to_string()),
        ("content-type", "application/json".to_string()),
        (
            "access-control-allow-origin",
            "https://app.example.com".to_string(),
        ),
    ];
    let (h, code) = grpc_answer(429, &headers, Some(r#"{"message":"Too Many Requests"}"#));
    assert_eq!(code, 8);
    assert_eq!(
        h,
        [
            ("retry-after", "3".to_string()),
            (
                "access-control-allow-origin",
                "https://app.example.com".to_string()
            ),
            ("grpc-status", "8".to_string()),
            (
                "grpc-message",
                r#"{"message":"Too Many Requests"}"#.to_string()
            ),
        ]
    );
    let (h, code) = grpc_answer(403, &[], None);
    assert_eq!(code, 7);
    assert_eq!(
        h,
        [
            ("grpc-status", "7".to_string()),
            ("grpc-message", String::new())
        ]
    );
    assert_eq!(grpc_answer(400, &[], None).1, 13);
}
