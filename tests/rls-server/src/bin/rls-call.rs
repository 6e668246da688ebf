//! rls-call: calls `ShouldRateLimit` and prints each answer as one JSON line.
//!
//! ```text
//! rls-call --grpc 127.0.0.1:PORT --domain tollgate \
//!          --descriptor stage=prod,usage_plan=gold,api_key_id=k1 [--descriptor ...] \
//!          [--hits N] [--count N] [--timeout-ms N]
//! ```
//!
//! A gRPC error or a timeout prints `{"error":"Unavailable","message":...}` (the timeout:
//! `"error":"timeout"`, after which the call is abandoned, resetting its stream). Exit status 0
//! when every call was answered, 3 when one failed, 2 on bad arguments.

use std::time::Duration;

use rls_server::*;
use tonic::codegen::http::uri::PathAndQuery;

const USAGE: &str = "usage: rls-call --grpc HOST:PORT --domain D --descriptor k=v[,k=v...] \
[--descriptor ...] [--hits N] [--count N] [--timeout-ms N]";

fn fail(msg: String) -> ! {
    eprintln!("rls-call: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn descriptor(spec: &str) -> RateLimitDescriptor {
    let entries = spec
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Entry {
                key: k.to_string(),
                value: v.to_string(),
            },
            None => fail(format!("--descriptor {spec}: entries are key=value")),
        })
        .collect();
    RateLimitDescriptor { entries }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut grpc = None;
    let mut req = RateLimitRequest::default();
    let mut count = 1u32;
    let mut timeout = Duration::from_secs(10);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(format!("{flag} needs a value")))
        };
        let mut number = |flag: &str| -> u64 {
            let v = value();
            v.parse()
                .unwrap_or_else(|e| fail(format!("{flag} {v}: {e}")))
        };
        match flag.as_str() {
            "--grpc" => grpc = Some(value()),
            "--domain" => req.domain = value(),
            "--descriptor" => req.descriptors.push(descriptor(&value())),
            "--hits" => req.hits_addend = number("--hits") as u32,
            "--count" => count = number("--count") as u32,
            "--timeout-ms" => timeout = Duration::from_millis(number("--timeout-ms")),
            other => fail(format!("unknown argument {other}")),
        }
    }
    let grpc = grpc.unwrap_or_else(|| fail("--grpc is required".into()));
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap_or_else(|e| fail(format!("--grpc {grpc}: {e}")));
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => {
            println!(
                "{}",
                serde_json::json!({"error": "connect", "message": e.to_string()})
            );
            std::process::exit(3)
        }
    };
    let mut client = tonic::client::Grpc::new(channel);
    let mut failed = false;
    for _ in 0..count {
        let call = async {
            client
                .ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            client
                .unary(
                    tonic::Request::new(req.clone()),
                    PathAndQuery::from_static(SHOULD_RATE_LIMIT_PATH),
                    tonic::codec::ProstCodec::<RateLimitRequest, RateLimitResponse>::default(),
                )
                .await
        };
        let line = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(resp)) => response_json(resp.get_ref()),
            Ok(Err(status)) => {
                failed = true;
                serde_json::json!({"error": format!("{:?}", status.code()), "message": status.message()})
            }
            Err(_) => {
                failed = true;
                serde_json::json!({"error": "timeout", "message": format!("no answer in {timeout:?}")})
            }
        };
        println!("{line}");
    }
    std::process::exit(if failed { 3 } else { 0 })
}
