//! End-to-end harness: a real Envoy process with the built tollgate.wasm, a loopback upstream
//! written here, and a small HTTP/1.1 client that can also send raw bytes.
//!
//! Everything binds to 127.0.0.1 on ports the kernel picks (Envoy's listener and admin use
//! port 0 and are discovered through the admin API), so tests run in parallel safely. Every
//! process started is killed on drop.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod standin;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Envoy binary: `$ENVOY`, else the one `make` installs into `.tools/`.
pub fn envoy_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ENVOY") {
        return PathBuf::from(p);
    }
    let p = repo_root().join(".tools/bin/envoy");
    assert!(
        p.exists(),
        "Envoy not found at {}; run `make test` (it installs Envoy) or set ENVOY",
        p.display()
    );
    p
}

/// The module under test: `$TOLLGATE_WASM`, else the release build.
pub fn wasm_path() -> PathBuf {
    if let Ok(p) = std::env::var("TOLLGATE_WASM") {
        return PathBuf::from(p);
    }
    let p = repo_root().join("target/wasm32-wasip1/release/tollgate.wasm");
    assert!(
        p.exists(),
        "{} missing; run `make build` first",
        p.display()
    );
    p
}

// ---------------------------------------------------------------------------------------------
// Upstream

#[derive(Clone, Debug)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn ok(body: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
    pub fn status(mut self, s: u16) -> Reply {
        self.status = s;
        self
    }
    pub fn header(mut self, n: &str, v: &str) -> Reply {
        self.headers.push((n.into(), v.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&SeenRequest) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server that records what it receives.
pub struct Upstream {
    pub port: u16,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl Upstream {
    /// Answers 200 "upstream" to everything.
    pub fn start() -> Upstream {
        Upstream::with(|_| Reply::ok("upstream"))
    }

    pub fn with(handler: impl Fn(&SeenRequest) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = seen2.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve_connection(stream, &seen, &handler));
            }
        });
        Upstream { port, seen }
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

fn serve_connection(stream: TcpStream, seen: &Mutex<Vec<SeenRequest>>, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut raw = Vec::new();
            if reader.read_until(b'\n', &mut raw).unwrap_or(0) == 0 {
                return;
            }
            while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                raw.pop();
            }
            if raw.is_empty() {
                break;
            }
            if let Some(colon) = raw.iter().position(|b| *b == b':') {
                let name = String::from_utf8_lossy(&raw[..colon]).to_ascii_lowercase();
                let mut value = raw[colon + 1..].to_vec();
                while value.first() == Some(&b' ') {
                    value.remove(0);
                }
                if name == "content-length" {
                    len = String::from_utf8_lossy(&value).trim().parse().unwrap_or(0);
                }
                headers.push((name, value));
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = SeenRequest {
            method,
            path,
            headers,
            body,
        };
        let reply = handler(&req);
        let head = req.method == "HEAD";
        seen.lock().unwrap().push(req);
        let mut out = format!("HTTP/1.1 {} X\r\n", reply.status).into_bytes();
        for (n, v) in &reply.headers {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        // A reply with `transfer-encoding: chunked` goes out in chunks of up to 4 bytes and no
        // length; a HEAD reply has the length of the body it leaves out.
        let chunked = reply
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
        if chunked {
            out.extend_from_slice(b"\r\n");
            if !head {
                for chunk in reply.body.chunks(4) {
                    out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    out.extend_from_slice(chunk);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
        } else {
            out.extend_from_slice(
                format!("content-length: {}\r\n\r\n", reply.body.len()).as_bytes(),
            );
            if !head {
                out.extend_from_slice(&reply.body);
            }
        }
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy

/// Options of one Envoy under test.
pub struct EnvoyOptions {
    /// tollgate's configuration (the contract's JSON).
    pub plugin_config: Value,
    pub upstream_port: u16,
    pub concurrency: u32,
    /// Extra HTTP filters placed after tollgate (before the router).
    pub extra_filters: Vec<Value>,
    /// Replaces the wasm module path (for remote loading or optimised builds).
    pub wasm: Option<PathBuf>,
    /// Extra fields for the HTTP connection manager.
    pub hcm_extra: Value,
    /// Adds Envoy's own file access log, in JSON, carrying tollgate's filter state
    /// ([`TOLLGATE_ACCESS_LOG_FIELDS`]) next to a few Envoy fields.
    pub access_log_path: Option<PathBuf>,
    /// Adds `stats_config.stats_tags` (tollgate's stage, route and method labels) and a 250 ms
    /// stats flush, so histograms reach the admin endpoint quickly.
    pub stats_tags: bool,
    /// Caching as docs/CACHING.md places it: Envoy's cache filter right after tollgate, and
    /// tollgate's upstream role (same configuration) as an upstream HTTP filter of the cluster.
    pub cache: bool,
    /// The upstream role's configuration when it is not `plugin_config` (two pushes apart).
    pub upstream_config: Option<Value>,
    /// With `cache`: Envoy's file-system cache in this directory (size-limited, evicting),
    /// instead of its in-memory one.
    pub cache_dir: Option<PathBuf>,
    /// More clusters (the rate limit service's, ...).
    pub extra_clusters: Vec<Value>,
}

/// The ports an example configuration in envoy/ listens on, moved to free ones.
pub struct ExamplePorts {
    /// The gateway listener (10000 in the file).
    pub gateway: u16,
    /// The admin endpoint (9901).
    pub admin: u16,
    /// The demo upstream the same Envoy serves (10080).
    pub demo: u16,
}

/// `envoy/<file>` as `make run` starts it, with its gateway, admin and demo upstream ports moved
/// to free ones and a local module path pointed at the build under test.
pub fn example_yaml(file: &str) -> (String, ExamplePorts) {
    let yaml = std::fs::read_to_string(repo_root().join("envoy").join(file)).unwrap();
    let ports = ExamplePorts {
        gateway: free_port(),
        admin: free_port(),
        demo: free_port(),
    };
    let yaml = yaml
        .replace(
            "port_value: 10000",
            &format!("port_value: {}", ports.gateway),
        )
        .replace("port_value: 9901", &format!("port_value: {}", ports.admin))
        .replace("port_value: 10080", &format!("port_value: {}", ports.demo))
        .replace(
            "filename: target/wasm32-wasip1/release/tollgate.wasm",
            &format!("filename: {}", wasm_path().display()),
        );
    (yaml, ports)
}

/// An HTTP/2 (gRPC) cluster on 127.0.0.1:`port`, as a rate limit service needs.
pub fn grpc_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": port
            }}}}]}]
        }
    })
}

/// The fields of the harness's Envoy file access log: Envoy's own, then tollgate's filter state
/// (`set_property(["tollgate.X"])` is Envoy filter state `wasm.tollgate.X`).
pub const TOLLGATE_ACCESS_LOG_FIELDS: [(&str, &str); 14] = [
    ("status", "%RESPONSE_CODE%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("details", "%RESPONSE_CODE_DETAILS%"),
    ("path", "%PATH(NQ)%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("duration", "%DURATION%"),
    ("stage", "%FILTER_STATE(wasm.tollgate.stage:PLAIN)%"),
    (
        "resourcePath",
        "%FILTER_STATE(wasm.tollgate.resourcePath:PLAIN)%",
    ),
    (
        "apiKeyId",
        "%FILTER_STATE(wasm.tollgate.identity.apiKeyId:PLAIN)%",
    ),
    (
        "errorMessage",
        "%FILTER_STATE(wasm.tollgate.error.message:PLAIN)%",
    ),
    (
        "errorType",
        "%FILTER_STATE(wasm.tollgate.error.responseType:PLAIN)%",
    ),
    (
        "integrationLatency",
        "%FILTER_STATE(wasm.tollgate.integrationLatency:PLAIN)%",
    ),
    (
        "cacheStatus",
        "%FILTER_STATE(wasm.tollgate.cacheStatus:PLAIN)%",
    ),
    (
        "celResourcePath",
        "%CEL(filter_state['wasm.tollgate.resourcePath'])%",
    ),
];

/// `stats_config` with tollgate's stats tags (the regexes of `tollgate::metrics::STATS_TAGS`).
pub fn tollgate_stats_config() -> Value {
    let tags: Vec<Value> = tollgate::metrics::STATS_TAGS
        .iter()
        .map(|(tag, regex)| json!({"tag_name": tag, "regex": regex}))
        .collect();
    json!({"stats_tags": tags})
}

impl EnvoyOptions {
    pub fn new(plugin_config: Value, upstream_port: u16) -> Self {
        EnvoyOptions {
            plugin_config,
            upstream_port,
            concurrency: 2,
            extra_filters: Vec::new(),
            wasm: None,
            hcm_extra: json!({}),
            access_log_path: None,
            stats_tags: false,
            cache: false,
            upstream_config: None,
            cache_dir: None,
            extra_clusters: Vec::new(),
        }
    }
}

pub fn wasm_filter(plugin_config: &Value, wasm: &Path, root_id: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "tollgate",
                "root_id": root_id,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": plugin_config.to_string()
                },
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "tollgate",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                }
            }
        }
    })
}

/// An ECDS resource file holding one HTTP filter configuration named `name`: Envoy reads it
/// from `path_config_source` and watches it ([`publish_file`]).
pub fn ecds_file(name: &str, typed_config: &Value) -> Value {
    json!({"resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": name,
        "typed_config": typed_config
    }]})
}

/// `bootstrap(opts)` with the listener's first HTTP filter (tollgate's) taken from the ECDS
/// file `path` instead (the filter's `config_discovery`, as Istio delivers a WasmPlugin), named
/// `name`. ECDS needs a node id and cluster, which it gets.
pub fn ecds_bootstrap(opts: &EnvoyOptions, name: &str, path: &Path) -> Value {
    let mut boot = bootstrap(opts);
    boot["node"] = json!({"id": "tollgate-test", "cluster": "tollgate-test"});
    let filters = &mut boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    assert_eq!(filters[0]["name"], "envoy.filters.http.wasm");
    filters[0] = json!({"name": name, "config_discovery": {
        "config_source": {
            "resource_api_version": "V3",
            "path_config_source": {"path": path.display().to_string()}
        },
        "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]
    }});
    boot
}

/// Replaces a file Envoy watches the way it expects: written aside, then moved over.
pub fn publish_file(path: &Path, doc: &Value) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(doc).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The fail-closed guard of the examples (envoy/envoy.yaml's `tollgate_guard`; tests/ship.rs
/// checks they are equal): an RBAC filter after tollgate that lets through only requests
/// carrying the filter state tollgate sets on those it lets go on (SECURITY.md).
pub fn guard_filter() -> Value {
    json!({
        "name": "tollgate_guard",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules_stat_prefix": "tollgate_guard.",
            "rules": {"action": "ALLOW", "policies": {"checked_by_tollgate": {
                "permissions": [{"any": true}],
                "principals": [{"filter_state": {
                    "key": "wasm.tollgate.stage",
                    "string_match": {"safe_regex": {"regex": ".*"}}
                }}]
            }}}
        }
    })
}

pub fn bootstrap(opts: &EnvoyOptions) -> Value {
    let wasm = opts.wasm.clone().unwrap_or_else(wasm_path);
    let mut filters = vec![wasm_filter(&opts.plugin_config, &wasm, "tollgate")];
    if opts.cache {
        filters.push(match &opts.cache_dir {
            Some(dir) => file_system_cache_filter(dir),
            None => cache_filter(),
        });
    }
    filters.extend(opts.extra_filters.iter().cloned());
    filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "route_config": {
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "10s"}}]
            }]
        },
        "http_filters": filters
    });
    if let Some(p) = &opts.access_log_path {
        hcm["access_log"] = json!([{
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                "path": p.display().to_string(),
                "log_format": {"json_format": TOLLGATE_ACCESS_LOG_FIELDS
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect::<serde_json::Map<String, Value>>()}
            }
        }]);
    }
    if let (Some(h), Some(extra)) = (hcm.as_object_mut(), opts.hcm_extra.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    let mut boot = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "main",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm
                }]}]
            }],
            "clusters": [{
                "name": "upstream",
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "upstream",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": opts.upstream_port
                    }}}}]}]
                }
            }]
        }
    });
    if opts.cache {
        boot["static_resources"]["clusters"][0]["typed_extension_protocol_options"] =
            upstream_role_options(
                opts.upstream_config.as_ref().unwrap_or(&opts.plugin_config),
                &wasm,
            );
    }
    if let Some(clusters) = boot["static_resources"]["clusters"].as_array_mut() {
        clusters.extend(opts.extra_clusters.iter().cloned());
    }
    if opts.stats_tags {
        boot["stats_config"] = tollgate_stats_config();
        boot["stats_flush_interval"] = json!("0.25s");
    }
    boot
}

/// Envoy's cache filter with its in-memory cache.
pub fn cache_filter() -> Value {
    json!({
        "name": "envoy.filters.http.cache",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.cache.simple_http_cache.v3.SimpleHttpCacheConfig"
            }
        }
    })
}

/// Envoy's cache filter with its file-system cache in `dir`, bounded as docs/CACHING.md shows.
pub fn file_system_cache_filter(dir: &Path) -> Value {
    json!({
        "name": "envoy.filters.http.cache",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cache.v3.CacheConfig",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.http.cache.file_system_http_cache.v3.FileSystemHttpCacheConfig",
                "manager_config": {"thread_pool": {"thread_count": 1}},
                "cache_path": dir.display().to_string(),
                "max_cache_size_bytes": 104857600,
                "max_cache_entry_count": 100000
            }
        }
    })
}

/// A cluster's `typed_extension_protocol_options` with tollgate's upstream role
/// (root_id `tollgate_upstream`) before the upstream codec.
pub fn upstream_role_options(plugin_config: &Value, wasm: &Path) -> Value {
    json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
            "http_filters": [
                wasm_filter(plugin_config, wasm, "tollgate_upstream"),
                {
                    "name": "envoy.filters.http.upstream_codec",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}
                }
            ]
        }
    })
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub log_path: PathBuf,
    pub dir: tempdir::Dir,
}

pub mod tempdir {
    use std::path::PathBuf;

    /// A directory under the target dir, removed on drop.
    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Dir {
            let base = std::env::temp_dir().join("tollgate-e2e");
            std::fs::create_dir_all(&base).unwrap();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = base.join(format!("{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if std::env::var_os("TOLLGATE_KEEP_E2E").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

/// Why Envoy did not come up.
#[derive(Debug)]
pub struct StartFailure {
    pub exit: Option<i32>,
    pub log: String,
}

impl Envoy {
    pub fn start(opts: &EnvoyOptions) -> Envoy {
        match Envoy::try_start(opts) {
            Ok(e) => e,
            Err(f) => panic!("Envoy did not start (exit {:?}):\n{}", f.exit, f.log),
        }
    }

    pub fn try_start(opts: &EnvoyOptions) -> Result<Envoy, StartFailure> {
        Envoy::try_start_bootstrap(&bootstrap(opts), opts.concurrency)
    }

    pub fn try_start_bootstrap(config: &Value, concurrency: u32) -> Result<Envoy, StartFailure> {
        let dir = tempdir::Dir::new("envoy");
        let cfg_path = dir.path().join("envoy.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let log_path = dir.path().join("envoy.log");
        let admin_path = dir.path().join("admin.txt");
        let child = Command::new(envoy_bin())
            .arg("-c")
            .arg(&cfg_path)
            .args(["--concurrency", &concurrency.to_string()])
            .arg("--disable-hot-restart")
            .args(["--file-flush-interval-msec", "50"])
            .args(["-l", "info", "--component-log-level", "wasm:debug"])
            .arg("--log-path")
            .arg(&log_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn envoy");
        let mut envoy = Envoy {
            child,
            port: 0,
            admin_port: 0,
            log_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(StartFailure {
                    exit: status.code(),
                    log: envoy.log(),
                });
            }
            if Instant::now() > deadline {
                return Err(StartFailure {
                    exit: None,
                    log: envoy.log(),
                });
            }
            if envoy.admin_port == 0 {
                if let Ok(s) = std::fs::read_to_string(&admin_path) {
                    if let Some(p) = s.trim().rsplit(':').next().and_then(|p| p.parse().ok()) {
                        envoy.admin_port = p;
                    }
                }
            }
            if envoy.admin_port != 0 {
                if let Ok(r) = try_request(envoy.admin_port, "GET", "/ready", &[], b"") {
                    if r.status == 200 {
                        let l = request(envoy.admin_port, "GET", "/listeners?format=json", &[]);
                        let v: Value = serde_json::from_slice(&l.body).unwrap();
                        let port = v["listener_statuses"][0]["local_address"]["socket_address"]
                            ["port_value"]
                            .as_u64()
                            .unwrap_or(0);
                        if port != 0 {
                            envoy.port = u16::try_from(port).unwrap();
                            return Ok(envoy);
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Lines tollgate wrote through the host log.
    pub fn plugin_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("wasm log tollgate"))
            .map(str::to_string)
            .collect()
    }

    /// Waits until `pred` holds on the log (lines are written asynchronously).
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what} in the Envoy log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, "GET", path, headers)
    }

    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        request(self.port, method, path, headers)
    }

    /// Admin stats as name -> value (counters and gauges).
    pub fn stats(&self) -> HashMap<String, i64> {
        let r = request(self.admin_port, "GET", "/stats?format=json", &[]);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let mut out = HashMap::new();
        for s in v["stats"].as_array().into_iter().flatten() {
            if let (Some(n), Some(val)) = (s["name"].as_str(), s["value"].as_i64()) {
                out.insert(n.to_string(), val);
            }
        }
        out
    }

    pub fn admin(&self, path: &str) -> String {
        String::from_utf8_lossy(&request(self.admin_port, "GET", path, &[]).body).into_owned()
    }

    /// The wasm VM never failed and the plugin never panicked.
    pub fn assert_no_wasm_failure(&self) {
        let stats = self.stats();
        for (name, v) in &stats {
            if name.starts_with("wasm.") && name.contains("failed") {
                assert_eq!(*v, 0, "{name} = {v}");
            }
        }
        let log = self.log();
        assert!(!log.contains("panicked at"), "plugin panicked:\n{log}");
        assert!(
            !log.to_lowercase().contains("wasm vm failed"),
            "VM failed:\n{log}"
        );
        // How Envoy 1.40 reports a trap (it has no "failed" stat): `Function: proxy_on_... failed:
        // Uncaught RuntimeError: unreachable` (tests/failure_policy.rs provokes one).
        assert!(
            !log.contains("Uncaught RuntimeError") && !log.contains("Function: proxy_on"),
            "the wasm VM trapped:\n{log}"
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    try_request(port, method, path, headers, b"").unwrap()
}

/// A gRPC call as a client makes it (HTTP/2 prior knowledge, `POST`, `application/grpc`,
/// `te: trailers`, an empty body), by curl: the response's head and body as text, lower-cased
/// (`http/2 200`, `grpc-status: 8`, ...).
pub fn grpc_call(port: u16, path: &str, headers: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "-i", "--http2-prior-knowledge", "-X", "POST"])
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .args(["--data-binary", "", "--max-time", "10"]);
    for (name, value) in headers {
        cmd.args(["-H", &format!("{name}: {value}")]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

pub fn try_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n")
        .into_bytes();
    for (n, v) in headers {
        raw.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() {
        raw.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(body);
    raw_request(port, &raw)
}

/// Runs `cmd` with `input` on its standard input; its output, standard error included.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Sends raw bytes and reads the response: up to its `content-length` when it has one (Envoy
/// may hold a closing connection open for a second after a local reply), else until the server
/// closes.
pub fn raw_request(port: u16, raw: &[u8]) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(raw)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if complete_length(&buf).is_some_and(|len| buf.len() >= len) {
            break;
        }
    }
    parse_response(&buf)
}

/// The full length of a response with a `content-length` once its head is in `buf`.
fn complete_length(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    // 1xx answers are followed by the real one.
    if head.starts_with("http/1.1 1") {
        return None;
    }
    let len = head.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n.trim() == "content-length").then(|| v.trim().parse::<usize>().ok())?
    })?;
    Some(end + 4 + len)
}

pub fn parse_response(buf: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let mut body = buf[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
}

/// Runs `n` requests on `threads` threads at once and returns their statuses.
pub fn concurrent(
    port: u16,
    n: usize,
    threads: usize,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<u16> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, out, barrier, headers, path) = (
                next.clone(),
                out.clone(),
                barrier.clone(),
                headers.clone(),
                path.to_string(),
            );
            std::thread::spawn(move || {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(a, b)| (a.as_str(), b.as_str()))
                    .collect();
                barrier.wait();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                    let r = request(port, "GET", &path, &h);
                    out.lock().unwrap().push(r.status);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let v = out.lock().unwrap().clone();
    v
}

/// A TCP connection to 127.0.0.1:`port` from the loopback address `source_ip` (any of
/// 127.0.0.0/8), so tests can be many distinct clients.
pub fn connect_from(source_ip: &str, port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let src: std::net::SocketAddr = format!("{source_ip}:0").parse().unwrap();
    socket.bind(&src.into()).unwrap();
    let dst: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    socket.connect(&dst.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// A keep-alive HTTP/1.1 connection for many requests in a row.
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl KeepAlive {
    pub fn connect(port: u16) -> KeepAlive {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    /// Sends a GET and returns the status (the body is read and dropped).
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> u16 {
        let mut raw = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n");
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        self.writer.write_all(raw.as_bytes()).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).unwrap();
        status
    }
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A free loopback port (the kernel's pick; released for the caller to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Envoy started from one of the repository's YAML files (after the caller moved its ports and
/// paths), waited on until its admin at `admin` says ready; killed on drop.
pub struct YamlEnvoy {
    child: Child,
    pub log_path: PathBuf,
    pub dir: tempdir::Dir,
}

impl YamlEnvoy {
    pub fn start(dir: tempdir::Dir, yaml: &str, concurrency: u32, admin: u16) -> YamlEnvoy {
        YamlEnvoy::try_start_limited(dir, yaml, concurrency, admin, None)
            .unwrap_or_else(|log| panic!("Envoy did not start:\n{log}"))
    }

    /// As `start`, with the process's virtual address space limited to `address_space` bytes
    /// (`RLIMIT_AS`, set by util-linux's `prlimit`), where V8 may not reserve what a Wasm VM
    /// needs. Err: Envoy exited; its log.
    pub fn try_start_limited(
        dir: tempdir::Dir,
        yaml: &str,
        concurrency: u32,
        admin: u16,
        address_space: Option<u64>,
    ) -> Result<YamlEnvoy, String> {
        let cfg = dir.path().join("envoy.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let log_path = dir.path().join("envoy.log");
        let mut cmd = match address_space {
            None => Command::new(envoy_bin()),
            Some(bytes) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--as={bytes}")).arg("--").arg(envoy_bin());
                c
            }
        };
        let child = cmd
            .arg("-c")
            .arg(&cfg)
            .args([
                "--concurrency",
                &concurrency.to_string(),
                "--disable-hot-restart",
            ])
            .args([
                "-l",
                "info",
                "--file-flush-interval-msec",
                "50",
                "--log-path",
            ])
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut envoy = YamlEnvoy {
            child,
            log_path,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("exit {status}\n{}", envoy.log()));
            }
            let ready = try_request(admin, "GET", "/ready", &[], b"").map(|r| r.status);
            if matches!(ready, Ok(200)) {
                return Ok(envoy);
            }
            assert!(
                Instant::now() < deadline,
                "Envoy not ready:\n{}",
                envoy.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for YamlEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Logs

/// tollgate's JSON access records in the Envoy log, in the order written.
pub fn records(envoy: &Envoy) -> Vec<Value> {
    envoy
        .plugin_lines()
        .iter()
        .filter(|l| l.contains("\"requestId\""))
        .filter_map(|l| l.find('{').map(|i| &l[i..]))
        .map(|j| serde_json::from_str(j).unwrap_or_else(|e| panic!("{e}: {j}")))
        .collect()
}

pub fn wait_records(envoy: &Envoy, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = records(envoy);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lines of Envoy's own file access log, parsed, once there are `n`.
pub fn wait_file_log(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
