//! Access log lines from hostile request values (path, user agent, request id, ...) in every
//! format, and template parsing. Invariants: a record is exactly one line with no control
//! characters but tab, so a client cannot forge or split log lines; the JSON format is valid
//! JSON giving back the values as the filter saw them.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate::access_log::{LogFormat, Record};

#[derive(Arbitrary, Debug)]
struct Input {
    template: String,
    request_id: Option<String>,
    epoch_ms: Option<u64>,
    method: Option<String>,
    path: Option<String>,
    protocol: Option<String>,
    status: Option<u16>,
    length: Option<u64>,
    latency: Option<u64>,
    integration: Option<u64>,
    source_ip: Option<String>,
    user_agent: Option<String>,
    key_id: Option<String>,
    error: Option<String>,
}

fuzz_target!(|input: Input| {
    let rec = Record {
        request_id: input.request_id.as_deref(),
        request_time_epoch_ms: input.epoch_ms,
        http_method: input.method.as_deref(),
        resource_path: Some("/pets/{id}"),
        path: input.path.as_deref(),
        protocol: input.protocol.as_deref(),
        status: input.status,
        response_length: input.length,
        response_latency_ms: input.latency,
        integration_latency_ms: input.integration,
        source_ip: input.source_ip.as_deref(),
        user_agent: input.user_agent.as_deref(),
        api_key_id: input.key_id.as_deref(),
        stage: Some("prod"),
        error_message: input.error.as_deref(),
        error_response_type: Some("THROTTLED"),
        cache_status: None,
    };
    let mut formats = vec![
        LogFormat::Json,
        LogFormat::Clf,
        LogFormat::Csv,
        LogFormat::Xml,
    ];
    if let Ok(t) = LogFormat::parse(&input.template) {
        formats.push(t);
    }
    for f in &formats {
        let mut line = String::new();
        f.format_into(&rec, &mut line);
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{f:?} wrote a control character: {line:?}"
        );
    }
    let mut json = String::new();
    LogFormat::Json.format_into(&rec, &mut json);
    let v: serde_json::Value = match serde_json::from_str(&json) {
        Ok(v) => v,
        Err(e) => panic!("invalid JSON ({e}): {json}"),
    };
    assert_eq!(v["path"].as_str(), input.path.as_deref(), "{json}");
    assert_eq!(
        v["identity.userAgent"].as_str(),
        input.user_agent.as_deref(),
        "{json}"
    );
    assert_eq!(
        v["requestId"].as_str(),
        input.request_id.as_deref(),
        "{json}"
    );
});
