//! rls-server: Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit`) on the `limitador` crate and its Redis storage, for tollgate's e2e tests.
//!
//! ```text
//! rls-server --grpc 127.0.0.1:0 --redis redis://127.0.0.1:6379 --limits limits.json
//!            [--delay-ms N] [--rate-limit-headers]
//! ```
//!
//! Prints `listening 127.0.0.1:PORT` on stdout once it accepts calls, one line per call on
//! stderr. The request's `domain` is the limitador namespace; its descriptors are bound, as
//! limitador-server's Envoy front end does, as a CEL list `descriptors` of maps (entry key ->
//! value), so limits say `descriptors[0].usage_plan == 'gold'` and `descriptors[0].api_key_id`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration as StdDuration;

use limitador::counter::Counter;
use limitador::errors::LimitadorError;
use limitador::limit::{Context, Expression, Limit, Namespace, Predicate};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::{AsyncRateLimiter, CheckResult};
use rls_server::*;
use serde::Deserialize;
use tonic::codegen::{empty_body, http, Body, BoxFuture, Service, StdError};
use tonic::{Request, Response, Status};

const USAGE: &str = "usage: rls-server --grpc 127.0.0.1:PORT --redis redis://127.0.0.1:PORT \
--limits FILE [--delay-ms N] [--rate-limit-headers]";

/// One limit of the `--limits` file, a JSON array of these.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitSpec {
    namespace: String,
    max_value: u64,
    seconds: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default)]
    variables: Vec<String>,
}

struct Args {
    grpc: SocketAddr,
    redis: String,
    limits: String,
    delay: StdDuration,
    rate_limit_headers: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut grpc = None;
    let mut redis = None;
    let mut limits = None;
    let mut delay_ms = 0u64;
    let mut rate_limit_headers = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--grpc" => {
                let v = value()?;
                grpc = Some(v.parse().map_err(|e| format!("--grpc {v}: {e}"))?);
            }
            "--redis" => redis = Some(value()?),
            "--limits" => limits = Some(value()?),
            "--delay-ms" => {
                let v = value()?;
                delay_ms = v.parse().map_err(|e| format!("--delay-ms {v}: {e}"))?;
            }
            "--rate-limit-headers" => rate_limit_headers = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let grpc: SocketAddr = grpc.ok_or("--grpc is required")?;
    if !grpc.ip().is_loopback() {
        return Err(format!(
            "--grpc {grpc}: a test fixture listens on loopback only"
        ));
    }
    Ok(Args {
        grpc,
        redis: redis.ok_or("--redis is required")?,
        limits: limits.ok_or("--limits is required")?,
        delay: StdDuration::from_millis(delay_ms),
        rate_limit_headers,
    })
}

fn load_limits(path: &str) -> Result<Vec<Limit>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let specs: Vec<LimitSpec> = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
    let mut limits = Vec::with_capacity(specs.len());
    for (i, s) in specs.into_iter().enumerate() {
        let conditions = s
            .conditions
            .iter()
            .map(|c| Predicate::parse(c).map_err(|e| format!("{path}: [{i}].conditions: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let variables = s
            .variables
            .iter()
            .map(|v| Expression::parse(v).map_err(|e| format!("{path}: [{i}].variables: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if s.namespace.is_empty() || s.seconds == 0 {
            return Err(format!(
                "{path}: [{i}]: namespace must be non-empty and seconds > 0"
            ));
        }
        let mut limit = Limit::new(s.namespace, s.max_value, s.seconds, conditions, variables);
        if let Some(name) = s.name {
            limit.set_name(name);
        }
        limits.push(limit);
    }
    Ok(limits)
}

/// limitador's `AsyncRedisStorage::new` takes redis-rs's `ConnectionManager` defaults: no
/// response timeout, and (redis 0.27.6) a reconnection backoff of 1 s then 60 s steps, so a call
/// made while Redis is down hangs for minutes. No retries and timeouts make a storage failure an
/// UNAVAILABLE answer at once; once Redis is back, calls work again (see `check_once`).
/// Waits up to 5 s for Redis at start.
async fn connect_redis(url: &str) -> Result<AsyncRedisStorage, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = redis::aio::ConnectionManagerConfig::new()
        // No retries inside redis-rs (its first backoff step is 1 s whatever `max_delay` says):
        // each call after a failure tries one fresh connection.
        .set_number_of_retries(0)
        .set_connection_timeout(StdDuration::from_millis(500))
        .set_response_timeout(StdDuration::from_millis(STORAGE_TIMEOUT_MS / 2));
    let mut tries = 0;
    loop {
        let attempt = async {
            let manager =
                redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone())
                    .await?;
            AsyncRedisStorage::new_with_conn_manager(manager).await
        };
        match attempt.await {
            Ok(storage) => return Ok(storage),
            Err(e) if tries >= 50 => return Err(e.to_string()),
            Err(_) => {
                tries += 1;
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        }
    }
}

/// The longest a check may take in the storage before the call answers UNAVAILABLE.
const STORAGE_TIMEOUT_MS: u64 = 2_000;

struct State {
    limiter: AsyncRateLimiter,
    delay: StdDuration,
    rate_limit_headers: bool,
    /// One check at a time in this process: limitador's `AsyncRedisStorage::check_and_update`
    /// reads the counters, then increments them in a second round trip, so concurrent calls
    /// could all pass the read. Serialising them makes one server exact.
    check_lock: tokio::sync::Mutex<()>,
}

/// The descriptor indexes a limit reads (`descriptors[N]` in its conditions and variables).
fn descriptor_indexes(limit: &Limit) -> Vec<usize> {
    let mut out = Vec::new();
    for src in limit.conditions().iter().chain(limit.variables().iter()) {
        let mut rest = src.as_str();
        while let Some(at) = rest.find("descriptors[") {
            rest = &rest[at + "descriptors[".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if let (Ok(n), true) = (digits.parse(), rest[digits.len()..].starts_with(']')) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

/// One status per request descriptor. A counter counts for the descriptors its limit reads
/// (a limit reading none counts for all); the status shows the most restrictive of them.
fn statuses(n: usize, counters: &[Counter], limited: bool, delta: u64) -> Vec<DescriptorStatus> {
    let mut out = vec![
        DescriptorStatus {
            code: Code::Ok as i32,
            ..Default::default()
        };
        n
    ];
    let mut chosen: Vec<Option<(bool, u64, &Counter)>> = vec![None; n];
    for c in counters {
        let remaining = c.remaining().unwrap_or(c.max_value());
        // With `limited`, nothing was incremented and a counter is over if `delta` does not fit.
        let over = limited && remaining < delta;
        let mut idx = descriptor_indexes(c.limit());
        idx.retain(|&i| i < n);
        if idx.is_empty() {
            idx = (0..n).collect();
        }
        for i in idx {
            let better = match chosen[i] {
                None => true,
                Some((o, r, _)) => (over, std::cmp::Reverse(remaining)) > (o, std::cmp::Reverse(r)),
            };
            if better {
                chosen[i] = Some((over, remaining, c));
            }
        }
    }
    for (status, pick) in out.iter_mut().zip(chosen) {
        let Some((over, remaining, c)) = pick else {
            continue;
        };
        if over {
            status.code = Code::OverLimit as i32;
        }
        status.current_limit = Some(RateLimit {
            name: c.limit().name().unwrap_or_default().to_string(),
            requests_per_unit: u32::try_from(c.max_value()).unwrap_or(u32::MAX),
            unit: Unit::from_seconds(c.limit().seconds()) as i32,
        });
        status.limit_remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
        let reset = c.expires_in().unwrap_or(c.window());
        status.duration_until_reset = Some(Duration {
            seconds: reset.as_secs() as i64,
            nanos: reset.subsec_nanos() as i32,
        });
    }
    // A limited call whose over-limit counter no status picked (cannot happen with the rule
    // above, but keep the answer consistent): mark every status over limit.
    if limited && out.iter().all(|s| s.code == Code::Ok as i32) {
        out.iter_mut().for_each(|s| s.code = Code::OverLimit as i32);
    }
    out
}

/// One `check_rate_limited_and_update`; an error comes with whether to try again: when the
/// Redis connection was found dead before anything was sent (a restarted Redis), redis-rs has
/// started a new one that the second try uses.
async fn check_once(
    limiter: &AsyncRateLimiter,
    namespace: &Namespace,
    ctx: &Context<'_>,
    delta: u64,
) -> Result<CheckResult, (bool, Status)> {
    match limiter
        .check_rate_limited_and_update(namespace, ctx, delta)
        .await
    {
        Ok(result) => Ok(result),
        Err(LimitadorError::StorageError(e)) => {
            let msg = e.msg().to_ascii_lowercase();
            let retry = msg.starts_with("reconnecting failed")
                || msg.contains("broken pipe")
                || msg.contains("connection reset");
            Err((retry, Status::unavailable(format!("storage: {e}"))))
        }
        Err(other) => Err((false, Status::internal(other.to_string()))),
    }
}

async fn should_rate_limit(
    state: Arc<State>,
    req: RateLimitRequest,
) -> Result<RateLimitResponse, Status> {
    if !state.delay.is_zero() {
        // Before counting: a caller that gives up during the delay resets the stream, the
        // handler is dropped here and the hit is not counted.
        tokio::time::sleep(state.delay).await;
    }
    let summary: Vec<String> = req
        .descriptors
        .iter()
        .map(|d| {
            let e: Vec<String> = d
                .entries
                .iter()
                .map(|e| format!("{}={}", e.key, e.value))
                .collect();
            format!("[{}]", e.join(","))
        })
        .collect();
    if req.domain.is_empty() {
        eprintln!(
            "rls-server: domain '' {} -> UNKNOWN (empty domain)",
            summary.join(" ")
        );
        return Ok(RateLimitResponse {
            overall_code: Code::Unknown as i32,
            ..Default::default()
        });
    }
    let delta = u64::from(req.hits_addend.max(1));
    let values: Vec<HashMap<String, String>> = req
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .collect();
    let n = values.len();
    let namespace = req.domain.clone();
    // In a task of its own: limitador panics on some CEL errors (e.g. `descriptors[1]` with one
    // descriptor); that becomes INTERNAL instead of a dropped connection.
    let st = Arc::clone(&state);
    let checked = tokio::spawn(async move {
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".to_string(), values);
        let _one_at_a_time = st.check_lock.lock().await;
        let namespace = namespace.into();
        let check = async {
            match check_once(&st.limiter, &namespace, &ctx, delta).await {
                Err((true, _)) => check_once(&st.limiter, &namespace, &ctx, delta).await,
                other => other,
            }
        };
        match tokio::time::timeout(StdDuration::from_millis(STORAGE_TIMEOUT_MS), check).await {
            Err(_) => Err(Status::unavailable("storage: timeout")),
            Ok(Err((_, status))) => Err(status),
            Ok(Ok(result)) => Ok(result),
        }
    })
    .await
    .map_err(|e| Status::internal(format!("check failed: {e}")))?;
    let mut result = match checked {
        Ok(r) => r,
        Err(status) => {
            eprintln!(
                "rls-server: domain {:?} {} -> {:?} {}",
                req.domain,
                summary.join(" "),
                status.code(),
                status.message()
            );
            return Err(status);
        }
    };
    let mut headers = Vec::new();
    if state.rate_limit_headers {
        let mut h: Vec<(String, String)> = result.response_header().into_iter().collect();
        h.sort();
        headers.extend(h.into_iter().map(|(key, value)| HeaderValue {
            key: key.to_lowercase(),
            value,
            raw_value: Vec::new(),
        }));
    }
    headers.push(HeaderValue {
        key: "x-rls-server".into(),
        value: "limitador".into(),
        raw_value: Vec::new(),
    });
    let resp = RateLimitResponse {
        overall_code: if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        } as i32,
        statuses: statuses(n, &result.counters, result.limited, delta),
        response_headers_to_add: headers,
    };
    let st: Vec<String> = resp
        .statuses
        .iter()
        .map(|s| format!("{}/{}", code_name(s.code), s.limit_remaining))
        .collect();
    eprintln!(
        "rls-server: domain {:?} {} hits {delta} -> {} statuses {}",
        req.domain,
        summary.join(" "),
        code_name(resp.overall_code),
        st.join(" ")
    );
    Ok(resp)
}

/// The hand-written gRPC service (what tonic-build would generate for the one method).
#[derive(Clone)]
struct RlsService(Arc<State>);

struct ShouldRateLimitMethod(Arc<State>);

impl tonic::server::UnaryService<RateLimitRequest> for ShouldRateLimitMethod {
    type Response = RateLimitResponse;
    type Future = BoxFuture<Response<RateLimitResponse>, Status>;
    fn call(&mut self, request: Request<RateLimitRequest>) -> Self::Future {
        let state = Arc::clone(&self.0);
        Box::pin(async move {
            should_rate_limit(state, request.into_inner())
                .await
                .map(Response::new)
        })
    }
}

impl<B> Service<http::Request<B>> for RlsService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let state = Arc::clone(&self.0);
        if req.uri().path() == SHOULD_RATE_LIMIT_PATH {
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic::codec::ProstCodec::default());
                Ok(grpc.unary(ShouldRateLimitMethod(state), req).await)
            })
        } else {
            Box::pin(async move {
                Ok(http::Response::builder()
                    .status(200)
                    .header(
                        "grpc-status",
                        (tonic::Code::Unimplemented as i32).to_string(),
                    )
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .body(empty_body())
                    .unwrap())
            })
        }
    }
}

impl tonic::server::NamedService for RlsService {
    const NAME: &'static str = SERVICE_NAME;
}

#[tokio::main]
async fn main() {
    // One line, not a backtrace, for limitador's panics on CEL errors (see should_rate_limit).
    std::panic::set_hook(Box::new(|info| eprintln!("rls-server: panic: {info}")));
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("rls-server: {e}");
        std::process::exit(2)
    });
    let limits = load_limits(&args.limits).unwrap_or_else(|e| {
        eprintln!("rls-server: {e}");
        std::process::exit(2)
    });
    let storage = connect_redis(&args.redis).await.unwrap_or_else(|e| {
        eprintln!("rls-server: redis {}: {e}", args.redis);
        std::process::exit(1)
    });
    let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
    let count = limits.len();
    for limit in limits {
        limiter.add_limit(limit);
    }
    let listener = tokio::net::TcpListener::bind(args.grpc)
        .await
        .unwrap_or_else(|e| {
            eprintln!("rls-server: bind {}: {e}", args.grpc);
            std::process::exit(1)
        });
    let addr = listener.local_addr().expect("local address");
    let incoming = tonic::transport::server::TcpIncoming::from_listener(listener, true, None)
        .expect("incoming");
    let state = Arc::new(State {
        limiter,
        delay: args.delay,
        rate_limit_headers: args.rate_limit_headers,
        check_lock: tokio::sync::Mutex::new(()),
    });
    eprintln!(
        "rls-server: {count} limits, redis {}, delay {:?}",
        args.redis, args.delay
    );
    println!("listening {addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Err(e) = tonic::transport::Server::builder()
        .add_service(RlsService(state))
        .serve_with_incoming(incoming)
        .await
    {
        eprintln!("rls-server: {e}");
        std::process::exit(1);
    }
}
