//! What users ship (issue 7), end to end: the optimized module `make dist` writes (size budget,
//! checksum, serving traffic in Envoy), Envoy fetching the module over HTTP with
//! `vm_config.code.remote` as envoy/envoy-remote.yaml does (and refusing one whose sha256
//! differs), and the Istio manifests in deploy/istio (they parse, their plugin configuration is
//! valid, and their Envoy pieces load in a real Envoy).
//!
//! The module under test is `$TOLLGATE_DIST_WASM` (the Makefile sets it and runs `make dist`
//! first), else dist/tollgate-<version>.wasm. The OCI image is tested by scripts/test-oci.sh.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The optimized module must stay within 250 KiB.
const SIZE_BUDGET: u64 = 250 * 1024;
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn dist_wasm() -> PathBuf {
    let p = std::env::var_os("TOLLGATE_DIST_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(format!("dist/tollgate-{VERSION}.wasm")));
    assert!(
        p.exists(),
        "{} missing; run `make dist` (make test and make e2e do)",
        p.display()
    );
    p
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The optimized module

#[test]
fn optimized_module_fits_the_size_budget_and_matches_its_checksum() {
    let wasm = dist_wasm();
    let bytes = std::fs::read(&wasm).unwrap();
    let size = bytes.len() as u64;
    assert!(
        size <= SIZE_BUDGET,
        "{} is {size} bytes ({:.1} KiB), over the {} KiB budget by {} bytes",
        wasm.display(),
        size as f64 / 1024.0,
        SIZE_BUDGET / 1024,
        size - SIZE_BUDGET
    );
    let sums = std::fs::read_to_string(wasm.with_extension("wasm.sha256")).unwrap();
    let name = wasm.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        sums.trim_end(),
        format!("{}  {name}", sha256_hex(&bytes)),
        "the .sha256 file must be `sha256sum -c` input for the module"
    );
}

/// Both modules (the one `make build` leaves for the e2e tests and the shipped one) export only
/// the callbacks tollgate implements: Envoy calls every exported callback, per request
/// (scripts/trim-exports.py says which are removed and why).
#[test]
fn modules_export_only_the_callbacks_tollgate_implements() {
    for module in [wasm_path(), dist_wasm()] {
        let out = check_exports(&module);
        assert!(
            out.status.success(),
            "{}: {}",
            module.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The check itself finds an untrimmed module: the SDK's full set of callbacks.
    let untrimmed =
        std::env::temp_dir().join(format!("tollgate-untrimmed-{}.wasm", std::process::id()));
    std::fs::write(&untrimmed, untrimmed_module()).unwrap();
    let out = check_exports(&untrimmed);
    let _ = std::fs::remove_file(&untrimmed);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an untrimmed module passed the check"
    );
    assert!(stderr.contains("still exports proxy_on_done"), "{stderr}");
    assert!(
        stderr.contains("still exports proxy_on_response_body"),
        "{stderr}"
    );
}

/// `scripts/trim-exports.py --check MODULE`.
fn check_exports(module: &Path) -> std::process::Output {
    Command::new("python3")
        .arg(repo_root().join("scripts/trim-exports.py"))
        .arg("--check")
        .arg(module)
        .output()
        .unwrap()
}

/// A minimal module exporting (as functions) what the SDK exports, names only.
fn untrimmed_module() -> Vec<u8> {
    let names = [
        "proxy_on_context_create",
        "proxy_on_request_headers",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_done",
        "proxy_on_log",
        "proxy_on_delete",
    ];
    // type section: one type () -> (); function section: one function; export section: every
    // name to function 0; code section: one empty body.
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend([1, 4, 1, 0x60, 0, 0]);
    m.extend([3, 2, 1, 0]);
    let mut exports = vec![names.len() as u8];
    for n in names {
        exports.push(n.len() as u8);
        exports.extend(n.as_bytes());
        exports.extend([0, 0]);
    }
    m.push(7);
    let mut size = exports.len();
    while size >= 0x80 {
        m.push((size & 0x7f) as u8 | 0x80);
        size >>= 7;
    }
    m.push(size as u8);
    m.extend(exports);
    m.extend([10, 4, 1, 2, 0, 0x0b]);
    m
}

#[test]
fn optimized_module_serves_traffic() {
    let up = Upstream::start();
    let cfg = json!({
        "stage": "dist",
        "api_key": {"keys": [{"id": "k1", "value": "key-1", "usage_plan": "p"}]},
        "usage_plans": {"p": {"throttle": {"rate": 0.01, "burst": 2}}},
        "cors": {"allow_origins": ["https://app.example.com"], "allow_methods": ["GET", "POST"]},
        "routes": [{"match": "POST /pets", "api_key_required": true}]
    });
    let mut opts = EnvoyOptions::new(cfg, up.port);
    opts.wasm = Some(dist_wasm());
    let envoy = Envoy::start(&opts);

    let r = envoy.get("/pets/1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "upstream");
    let r = envoy.send("POST", "/pets", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    let with_key = [("x-api-key", "key-1")];
    assert_eq!(envoy.send("POST", "/pets", &with_key).status, 200);
    assert_eq!(envoy.send("POST", "/pets", &with_key).status, 200);
    let r = envoy.send("POST", "/pets", &with_key);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), r#"{"message":"Too Many Requests"}"#);
    let r = envoy.send(
        "OPTIONS",
        "/pets",
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
        ],
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        up.count(),
        3,
        "403, 429 and the preflight never reach upstream"
    );
    envoy.assert_no_wasm_failure();
}

// ---------------------------------------------------------------------------------------------
// Remote loading: envoy/envoy-remote.yaml, with its ports moved to free ones and the module
// served by a loopback HTTP server here.

/// The example Envoy, killed on drop.
struct RemoteExample {
    envoy: YamlEnvoy,
    gateway: u16,
}

impl RemoteExample {
    /// Starts envoy/envoy-remote.yaml fetching the module from 127.0.0.1:`module_port` with
    /// `sha256`, and waits until Envoy is ready (initialisation includes the fetch).
    fn start(module_port: u16, sha256: &str) -> RemoteExample {
        let yaml = std::fs::read_to_string(repo_root().join("envoy/envoy-remote.yaml")).unwrap();
        let uri = format!("uri: http://127.0.0.1:8000/tollgate-{VERSION}.wasm");
        assert!(
            yaml.contains(&uri),
            "envoy/envoy-remote.yaml must fetch the current version: `{uri}`"
        );
        for placeholder in [
            "port_value: 10000",
            "port_value: 9901",
            "port_value: 10080",
            "port_value: 8000",
            "sha256: TOLLGATE_SHA256",
        ] {
            assert!(
                yaml.contains(placeholder),
                "{placeholder} not in the example"
            );
        }
        let (yaml, ports) = example_yaml("envoy-remote.yaml");
        let (gateway, admin) = (ports.gateway, ports.admin);
        let yaml = yaml
            .replace("port_value: 8000", &format!("port_value: {module_port}"))
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{module_port}"))
            .replace("sha256: TOLLGATE_SHA256", &format!("sha256: {sha256}"));
        // Initialisation includes the fetch, so ready means the module loaded (or failed
        // closed after its retries).
        RemoteExample {
            envoy: YamlEnvoy::start(tempdir::Dir::new("remote"), &yaml, 1, admin),
            gateway,
        }
    }

    fn log(&self) -> String {
        self.envoy.log()
    }

    fn wait_log(&self, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log();
            if log.contains(what) {
                return log;
            }
            assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A loopback HTTP server answering GET /tollgate-<version>.wasm with the module.
fn module_server(module: Vec<u8>) -> Upstream {
    let path = format!("/tollgate-{VERSION}.wasm");
    Upstream::with(move |r| {
        if r.method == "GET" && r.path == path {
            Reply {
                status: 200,
                headers: vec![("content-type".into(), "application/wasm".into())],
                body: module.clone(),
            }
        } else {
            Reply::ok("not found").status(404)
        }
    })
}

#[test]
fn envoy_fetches_the_module_over_http_and_serves() {
    let module = std::fs::read(dist_wasm()).unwrap();
    let sha = sha256_hex(&module);
    let server = module_server(module);
    let envoy = RemoteExample::start(server.port, &sha);

    let fetches = server.requests();
    assert!(!fetches.is_empty(), "Envoy never fetched the module");
    assert!(fetches
        .iter()
        .all(|r| r.path == format!("/tollgate-{VERSION}.wasm")));
    // The plugin runs: the route table and the key check of the example's configuration.
    let r = request(envoy.gateway, "GET", "/pets/1", &[]);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), envoy.log());
    assert!(r.text().contains("Rex"));
    assert!(
        r.header("ratelimit").is_some(),
        "tollgate's RateLimit header"
    );
    let r = request(envoy.gateway, "POST", "/pets", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), r#"{"message":"Forbidden"}"#);
    let r = request(
        envoy.gateway,
        "POST",
        "/pets",
        &[("x-api-key", "dev-key-123")],
    );
    assert_eq!(r.status, 200);
    let log = envoy.log();
    assert!(!log.contains("failed to load"), "{log}");
}

#[test]
fn a_module_with_another_sha256_is_refused() {
    let module = std::fs::read(dist_wasm()).unwrap();
    let wrong = sha256_hex(b"not the module");
    let server = module_server(module);
    let envoy = RemoteExample::start(server.port, &wrong);

    // Envoy fetched the bytes, found that they do not match, retried, and gave up on the plugin.
    let log = envoy.wait_log("Plugin tollgate failed to load");
    assert!(
        log.contains("Retry limit exceeded for fetching data from remote data source"),
        "{log}"
    );
    assert!(!server.requests().is_empty(), "Envoy never tried the URL");
    // The module never ran, and with FAIL_CLOSED nothing is served unchecked.
    assert!(!log.contains("wasm log tollgate"), "{log}");
    for path in ["/pets/1", "/pets"] {
        let r = request(envoy.gateway, "GET", path, &[]);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(!r.text().contains("Rex"));
    }
}

// ---------------------------------------------------------------------------------------------
// Istio: deploy/istio

/// Every YAML document of a file, as JSON (PyYAML, which `make test` installs).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'yaml'"),
        "PyYAML missing: `make test` installs it (Debian python3-yaml)"
    );
    assert!(out.status.success(), "{}: {err}", path.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn istio_doc(file: &str, kind: &str) -> Value {
    let path = repo_root().join("deploy/istio").join(file);
    let docs = yaml_docs(&path);
    docs.into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {}", path.display()))
}

/// The configPatches entry of an EnvoyFilter that applies to `what`.
fn patch<'a>(filter: &'a Value, what: &str) -> &'a Value {
    filter["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["applyTo"] == what)
        .unwrap_or_else(|| panic!("no {what} patch"))
}

#[test]
fn istio_manifests_are_consistent_and_their_envoy_pieces_load() {
    // The WasmPlugin: the main role from the OCI image, early, failing closed.
    let plugin = istio_doc("wasmplugin.yaml", "WasmPlugin");
    let spec = &plugin["spec"];
    let url = spec["url"].as_str().unwrap();
    assert!(url.starts_with("oci://"), "{url}");
    assert!(
        url.ends_with(&format!(":{VERSION}")),
        "{url}: tag the current version"
    );
    assert_eq!(spec["phase"], "AUTHN");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert!(spec["priority"].is_i64());
    assert_eq!(spec["pluginName"], "tollgate");
    let config = spec["pluginConfig"].clone();
    if let Err(e) = tollgate::config::Config::from_json(config.to_string().as_bytes()) {
        panic!("wasmplugin.yaml pluginConfig: {e}");
    }

    // The caching EnvoyFilter: the upstream role with the same image and configuration.
    let cache = istio_doc("cache.yaml", "EnvoyFilter");
    let ext = &patch(&cache, "EXTENSION_CONFIG")["patch"]["value"];
    let wasm = &ext["typed_config"]["config"];
    assert_eq!(wasm["root_id"], "tollgate_upstream");
    assert_eq!(wasm["failure_policy"], "FAIL_CLOSED");
    assert_eq!(wasm["vm_config"]["code"]["remote"]["http_uri"]["uri"], url);
    assert_eq!(
        wasm["configuration"]["value"], config,
        "the upstream role must have the WasmPlugin's configuration"
    );
    let protocol_options = patch(&cache, "CLUSTER")["patch"]["value"]
        ["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        .clone();
    let upstream_filters = protocol_options["http_filters"].as_array().unwrap();
    assert_eq!(upstream_filters[0]["name"], ext["name"]);
    assert_eq!(
        upstream_filters.last().unwrap()["name"],
        "envoy.filters.http.upstream_codec"
    );
    let cache_filter = patch(&cache, "HTTP_FILTER");
    assert_eq!(cache_filter["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        cache_filter["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    // The guard (hardening.yaml) is inserted before the router too, by an EnvoyFilter Istio
    // applies first (lower priority), so the cache filter lands between it and the router.
    let hardening = istio_doc("hardening.yaml", "EnvoyFilter");
    let guard = patch(&hardening, "HTTP_FILTER");
    assert_eq!(guard["patch"]["operation"], "INSERT_BEFORE");
    assert_eq!(
        guard["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router"
    );
    let priority = |f: &Value| f["spec"]["priority"].as_i64().unwrap_or(0);
    assert!(
        priority(&hardening) < priority(&cache),
        "hardening.yaml (the guard) must be applied before cache.yaml"
    );
    assert_eq!(guard["patch"]["value"], example_guard());

    // Metrics: the gateway's ProxyConfig names tollgate's tags in extraStatTags, for which Istio
    // generates exactly the stats_tags tollgate's names need, and includes tollgate's stats.
    let gw = &yaml_docs(&repo_root().join("deploy/istio/gateway-patch.yaml"))[0];
    let dir = tempdir::Dir::new("istio");
    let proxy_config = dir.path().join("proxy-config.yaml");
    std::fs::write(
        &proxy_config,
        gw["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let proxy_config = &yaml_docs(&proxy_config)[0];
    let extra_tags: Vec<&str> = proxy_config["extraStatTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    // Istio's bootstrap template: {"regex": "({{$tag}}=\\.=(.*?);\\.;)", "tag_name": "{{$tag}}"}.
    let istio_stats_tags: Vec<Value> = extra_tags
        .iter()
        .map(|t| json!({"tag_name": t, "regex": format!(r"({t}=\.=(.*?);\.;)")}))
        .collect();
    let want: Vec<Value> = tollgate::metrics::STATS_TAGS
        .iter()
        .map(|(t, r)| json!({"tag_name": t, "regex": r}))
        .collect();
    assert_eq!(
        istio_stats_tags, want,
        "extraStatTags vs tollgate::metrics::STATS_TAGS"
    );
    let prefixes = proxy_config["proxyStatsMatcher"]["inclusionPrefixes"]
        .as_array()
        .unwrap();
    assert!(prefixes.iter().any(|p| p == "wasmcustom.tollgate"));
    // The guard's counters, which Istio drops unless named, for TollgateGuardRefusing.
    let suffixes: Vec<&str> = proxy_config["proxyStatsMatcher"]["inclusionSuffixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();

    // The Envoy pieces in a real Envoy: the main filter with the pluginConfig, the cache filter
    // before the router, the cluster's upstream filters with the upstream role delivered by ECDS
    // (from a file here instead of istiod, and the module from disk instead of the registry), and
    // the stats tags.
    let module = dist_wasm();
    let up = Upstream::start();
    let mut opts = EnvoyOptions::new(json!({}), up.port);
    opts.extra_filters = vec![
        guard["patch"]["value"].clone(),
        cache_filter["patch"]["value"].clone(),
    ];
    let mut boot = bootstrap(&opts);
    boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0] = wasm_filter(&config, &module, "tollgate");
    let mut upstream_role = ext.clone();
    upstream_role["@type"] = json!("type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig");
    upstream_role["typed_config"]["config"]["vm_config"]["code"] =
        json!({"local": {"filename": module.display().to_string()}});
    let ecds = dir.path().join("ecds.json");
    std::fs::write(
        &ecds,
        json!({"version_info": "1", "resources": [upstream_role]}).to_string(),
    )
    .unwrap();
    let mut protocol_options = protocol_options;
    protocol_options["http_filters"][0]["config_discovery"]["config_source"] =
        json!({"path_config_source": {"path": ecds.display().to_string()}});
    // The patch's entry replaces Istio's whole (MERGE of a map entry), so it carries the
    // protocol itself: taken as shipped, Envoy must accept it.
    assert!(
        protocol_options.get("explicit_http_config").is_some(),
        "cache.yaml's HttpProtocolOptions must say the protocol: it replaces Istio's entry"
    );
    boot["static_resources"]["clusters"][0]["typed_extension_protocol_options"] = json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": protocol_options
    });
    boot["node"] = json!({"id": "istio-pieces", "cluster": "tollgate"});
    boot["stats_config"] = json!({"stats_tags": istio_stats_tags});
    let envoy = match Envoy::try_start_bootstrap(&boot, 1) {
        Ok(e) => e,
        Err(f) => panic!(
            "Envoy refused the Istio pieces (exit {:?}):\n{}",
            f.exit, f.log
        ),
    };
    let r = envoy.get("/pets/1", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = envoy.send("POST", "/pets", &[]);
    assert_eq!(r.status, 403, "the main filter runs the pluginConfig");
    let r = envoy.send("POST", "/pets", &[("x-api-key", "partner-a-secret")]);
    assert_eq!(r.status, 200);
    assert_eq!(up.count(), 2);
    // Both roles loaded (the upstream role through ECDS).
    let stats = envoy.stats();
    let ecds = "extension_config_discovery.upstream_http_filter.istio-ingress.tollgate-upstream";
    assert_eq!(stats.get(&format!("{ecds}.config_reload")), Some(&1));
    assert_eq!(stats.get(&format!("{ecds}.config_fail")), Some(&0));
    for name in [
        "http.ingress.rbac.tollgate_guard.allowed",
        "http.ingress.rbac.tollgate_guard.denied",
    ] {
        assert!(
            suffixes.iter().any(|s| name.ends_with(s)),
            "{name}: not kept by {suffixes:?}"
        );
    }
    // The guard let the two requests tollgate passed through (its 403 never reached it).
    assert_eq!(
        stats.get("http.ingress.rbac.tollgate_guard.allowed"),
        Some(&2)
    );
    assert_eq!(
        stats.get("http.ingress.rbac.tollgate_guard.denied"),
        Some(&0)
    );
    envoy.assert_no_wasm_failure();
}

/// envoy/envoy.yaml's fail-closed guard (SECURITY.md, "A worker without a VM"), as JSON.
fn example_guard() -> Value {
    let docs = yaml_docs(&repo_root().join("envoy/envoy.yaml"));
    let gateway = gateway_filters(&docs[0]);
    let guard = gateway
        .into_iter()
        .find(|f| f["name"] == "tollgate_guard")
        .expect("envoy/envoy.yaml has the guard");
    // The e2e tests that run with the guard use the harness's copy.
    assert_eq!(guard, guard_filter(), "tests/common's guard_filter differs");
    guard
}

/// The HTTP filters of the connection manager whose stat_prefix is `gateway`.
fn gateway_filters(doc: &Value) -> Vec<Value> {
    let mut hcms = Vec::new();
    typed(doc, ".HttpConnectionManager", &mut hcms);
    let gw = hcms
        .into_iter()
        .find(|h| h["stat_prefix"] == "gateway")
        .expect("a gateway listener");
    gw["http_filters"].as_array().unwrap().clone()
}

/// deploy/istio/hardening.yaml's settings, merged into a gateway's connection manager as Istio
/// merges them, give tollgate the paths and headers SECURITY.md relies on: an escaped slash or
/// an underscore header is refused by Envoy, and doubled slashes reach tollgate merged.
#[test]
fn istio_hardening_gives_tollgate_the_paths_it_relies_on() {
    let filter = istio_doc("hardening.yaml", "EnvoyFilter");
    let plugin = istio_doc("wasmplugin.yaml", "WasmPlugin");
    assert_eq!(
        filter["spec"]["workloadSelector"]["labels"],
        plugin["spec"]["selector"]["matchLabels"]
    );
    let merge = patch(&filter, "NETWORK_FILTER");
    assert_eq!(merge["patch"]["operation"], "MERGE");
    let mut settings = merge["patch"]["value"]["typed_config"].clone();
    settings.as_object_mut().unwrap().remove("@type");
    let up = Upstream::start();
    let config = json!({
        "api_key": {"keys": [{"id": "a", "value": "key-a-0123456789"}]},
        "routes": [{"match": "ANY /admin/{proxy+}", "api_key_required": true}]
    });
    let mut opts = EnvoyOptions::new(config, up.port);
    // Istio's defaults (its pathNormalization BASE: normalize_path only), then the patch.
    let mut hcm =
        json!({"merge_slashes": false, "path_with_escaped_slashes_action": "KEEP_UNCHANGED"});
    for (k, v) in settings.as_object().unwrap() {
        hcm[k] = v.clone();
    }
    opts.hcm_extra = hcm;
    let envoy = Envoy::start(&opts);
    assert_eq!(envoy.get("/admin/x", &[]).status, 403);
    assert_eq!(envoy.get("/admin%2Fx", &[]).status, 400, "escaped slash");
    assert_eq!(
        envoy.get("/admin%5cx", &[]).status,
        400,
        "escaped backslash"
    );
    assert_eq!(
        envoy.get("//admin//x", &[]).status,
        403,
        "merged slashes reach the route"
    );
    let r = envoy.get("/pets", &[("x_api_key", "key-a-0123456789")]);
    assert_eq!(r.status, 400, "underscore header");
    assert_eq!(up.count(), 0);
    envoy.assert_no_wasm_failure();
}

/// Every object in `v` (depth first) whose `@type` ends with `suffix`.
fn typed<'a>(v: &'a Value, suffix: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            if m.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(suffix))
            {
                out.push(v);
            }
            for child in m.values() {
                typed(child, suffix, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| typed(i, suffix, out)),
        _ => {}
    }
}

#[test]
fn every_example_listener_has_the_edge_settings_tollgate_relies_on() {
    // tollgate matches routes on the normalised path and reads headers by their Envoy name:
    // an example that keeps encoded slashes or underscore names would let an upstream see
    // another path or header than tollgate decided on.
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let guard = example_guard();
    for file in files {
        let docs = yaml_docs(&file);
        let mut hcms = Vec::new();
        for d in &docs {
            typed(d, ".HttpConnectionManager", &mut hcms);
        }
        let gateway = hcms
            .iter()
            .filter(|h| h["stat_prefix"] == "gateway")
            .collect::<Vec<_>>();
        assert!(
            !gateway.is_empty(),
            "{}: no gateway listener",
            file.display()
        );
        for h in gateway {
            let at = file.display();
            assert_eq!(h["use_remote_address"], true, "{at}");
            assert_eq!(h["xff_num_trusted_hops"], 0, "{at}");
            assert_eq!(h["normalize_path"], true, "{at}");
            assert_eq!(h["merge_slashes"], true, "{at}");
            assert_eq!(
                h["path_with_escaped_slashes_action"], "REJECT_REQUEST",
                "{at}"
            );
            assert_eq!(
                h["common_http_protocol_options"]["headers_with_underscores_action"],
                "REJECT_REQUEST",
                "{at}"
            );
            // The fail-closed guard right after tollgate's main filter, the same everywhere.
            let filters = h["http_filters"].as_array().unwrap();
            let wasm = filters
                .iter()
                .position(|f| f["name"] == "envoy.filters.http.wasm")
                .unwrap_or_else(|| panic!("{at}: no tollgate"));
            assert_eq!(
                filters.get(wasm + 1),
                Some(&guard),
                "{at}: the guard must follow tollgate"
            );
        }
    }
}
