//! Access log lines: one line per request, in `access_log.format` (contract, "Access log and
//! metrics"): `json` (default), `clf`, `csv`, `xml`, or a template with `$context.*` variables.
//!
//! Pure and allocation-light: [`LogFormat::parse`] runs once at configuration time (templates are
//! split into segments there); [`LogFormat::format_into`] appends to a caller-provided `String`
//! and never panics. Every format writes exactly one line: no format ever emits a raw CR or LF
//! (or any other control character), so a request value cannot forge a second record.
//!
//! Choices worth knowing (the module's tests pin every one of them):
//! - `json`: keys are the variable names (`"identity.sourceIp"`), all 18 in [`Field::ALL`] order,
//!   unknown values are `null`; numbers are numbers; `requestTime` is the CLF time string.
//! - `clf`: API Gateway's CLF with the actual request path instead of `resourcePath`.
//! - `csv`: RFC 4180 quoting, one record per line (control characters are written as `\xHH`).
//! - `xml`: element names are the variable names verbatim (dots are legal in XML names).
//! - template: values raw except control characters (`\xHH`); unknown or empty values are `-`.

mod template;
mod text;

#[cfg(test)]
mod tests;

pub use template::{Segment, Template};
pub use text::{decimal, is_bidi_control, json_escape_into, push_hex, push_u64, write_clf_time};

use crate::error::FieldError;
use text::{csv_field_into, quoted_escape_into, token_escape_into, xml_escape_into};

/// One request's access record. Fields are None when unknown ("-" in text formats, null in JSON).
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub request_id: Option<&'a str>,
    pub request_time_epoch_ms: Option<u64>,
    pub http_method: Option<&'a str>,
    /// The matched route template, e.g. "/pets/{id}".
    pub resource_path: Option<&'a str>,
    /// The request path without its query string ([`path_without_query`]).
    pub path: Option<&'a str>,
    /// "HTTP/1.1"
    pub protocol: Option<&'a str>,
    pub status: Option<u16>,
    pub response_length: Option<u64>,
    pub response_latency_ms: Option<u64>,
    pub integration_latency_ms: Option<u64>,
    pub source_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub api_key_id: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub error_message: Option<&'a str>,
    /// THROTTLED, QUOTA_EXCEEDED, INVALID_API_KEY, ...
    pub error_response_type: Option<&'a str>,
    /// hit | miss | bypass | -
    pub cache_status: Option<&'a str>,
}

/// The $context variables, in the contract's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    RequestId,
    RequestTime,
    RequestTimeEpoch,
    HttpMethod,
    ResourcePath,
    Path,
    Protocol,
    Status,
    ResponseLength,
    ResponseLatency,
    IntegrationLatency,
    SourceIp,
    UserAgent,
    ApiKeyId,
    Stage,
    ErrorMessage,
    ErrorResponseType,
    CacheStatus,
}

/// A field's value, before a format decides how to write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    Text(&'a str),
    Number(u64),
    /// Milliseconds since the Unix epoch, written as CLF time (`requestTime`).
    Time(u64),
}

impl Field {
    pub const ALL: [Field; 18] = [
        Field::RequestId,
        Field::RequestTime,
        Field::RequestTimeEpoch,
        Field::HttpMethod,
        Field::ResourcePath,
        Field::Path,
        Field::Protocol,
        Field::Status,
        Field::ResponseLength,
        Field::ResponseLatency,
        Field::IntegrationLatency,
        Field::SourceIp,
        Field::UserAgent,
        Field::ApiKeyId,
        Field::Stage,
        Field::ErrorMessage,
        Field::ErrorResponseType,
        Field::CacheStatus,
    ];

    /// Variable name without the "$context." prefix, e.g. "identity.sourceIp", "error.responseType".
    pub fn name(self) -> &'static str {
        match self {
            Field::RequestId => "requestId",
            Field::RequestTime => "requestTime",
            Field::RequestTimeEpoch => "requestTimeEpoch",
            Field::HttpMethod => "httpMethod",
            Field::ResourcePath => "resourcePath",
            Field::Path => "path",
            Field::Protocol => "protocol",
            Field::Status => "status",
            Field::ResponseLength => "responseLength",
            Field::ResponseLatency => "responseLatency",
            Field::IntegrationLatency => "integrationLatency",
            Field::SourceIp => "identity.sourceIp",
            Field::UserAgent => "identity.userAgent",
            Field::ApiKeyId => "identity.apiKeyId",
            Field::Stage => "stage",
            Field::ErrorMessage => "error.message",
            Field::ErrorResponseType => "error.responseType",
            Field::CacheStatus => "cacheStatus",
        }
    }

    /// The fields tollgate exports as filter state for Envoy's own access loggers: the ones only
    /// tollgate knows. Every other variable has an Envoy command operator of its own
    /// (docs/OBSERVABILITY.md lists them).
    pub const EXPORTED: [Field; 7] = [
        Field::Stage,
        Field::ResourcePath,
        Field::ApiKeyId,
        Field::ErrorMessage,
        Field::ErrorResponseType,
        Field::IntegrationLatency,
        Field::CacheStatus,
    ];

    /// The position of an [`Field::EXPORTED`] field in that list.
    fn exported_index(self) -> Option<usize> {
        Field::EXPORTED.iter().position(|f| *f == self)
    }

    /// The property (`set_property` path) a field is exported under: `tollgate.` and the variable
    /// name. Envoy keeps it as filter state `wasm.tollgate.<variable>`, printed by
    /// `%FILTER_STATE(wasm.tollgate.<variable>:PLAIN)%`.
    pub fn property_name(self) -> &'static str {
        match self {
            Field::RequestId => "tollgate.requestId",
            Field::RequestTime => "tollgate.requestTime",
            Field::RequestTimeEpoch => "tollgate.requestTimeEpoch",
            Field::HttpMethod => "tollgate.httpMethod",
            Field::ResourcePath => "tollgate.resourcePath",
            Field::Path => "tollgate.path",
            Field::Protocol => "tollgate.protocol",
            Field::Status => "tollgate.status",
            Field::ResponseLength => "tollgate.responseLength",
            Field::ResponseLatency => "tollgate.responseLatency",
            Field::IntegrationLatency => "tollgate.integrationLatency",
            Field::SourceIp => "tollgate.identity.sourceIp",
            Field::UserAgent => "tollgate.identity.userAgent",
            Field::ApiKeyId => "tollgate.identity.apiKeyId",
            Field::Stage => "tollgate.stage",
            Field::ErrorMessage => "tollgate.error.message",
            Field::ErrorResponseType => "tollgate.error.responseType",
            Field::CacheStatus => "tollgate.cacheStatus",
        }
    }

    /// The field named `name` (without the "$context." prefix; case-sensitive, as in API Gateway).
    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.iter().copied().find(|f| f.name() == name)
    }

    /// Appends the field's value as text (None => nothing appended; returns false when absent).
    /// Text is appended as is, unescaped; numbers in decimal; `requestTime` in CLF form
    /// (`14/Nov/2023:22:13:20 +0000`).
    pub fn write_value(self, rec: &Record, out: &mut String) -> bool {
        match self.value(rec) {
            None => false,
            Some(Value::Text(s)) => {
                out.push_str(s);
                true
            }
            Some(Value::Number(n)) => {
                push_u64(n, out);
                true
            }
            Some(Value::Time(ms)) => {
                write_clf_time(ms, out);
                true
            }
        }
    }

    fn value<'a>(self, rec: &Record<'a>) -> Option<Value<'a>> {
        match self {
            Field::RequestId => rec.request_id.map(Value::Text),
            Field::RequestTime => rec.request_time_epoch_ms.map(Value::Time),
            Field::RequestTimeEpoch => rec.request_time_epoch_ms.map(Value::Number),
            Field::HttpMethod => rec.http_method.map(Value::Text),
            Field::ResourcePath => rec.resource_path.map(Value::Text),
            Field::Path => rec.path.map(Value::Text),
            Field::Protocol => rec.protocol.map(Value::Text),
            Field::Status => rec.status.map(|s| Value::Number(u64::from(s))),
            Field::ResponseLength => rec.response_length.map(Value::Number),
            Field::ResponseLatency => rec.response_latency_ms.map(Value::Number),
            Field::IntegrationLatency => rec.integration_latency_ms.map(Value::Number),
            Field::SourceIp => rec.source_ip.map(Value::Text),
            Field::UserAgent => rec.user_agent.map(Value::Text),
            Field::ApiKeyId => rec.api_key_id.map(Value::Text),
            Field::Stage => rec.stage.map(Value::Text),
            Field::ErrorMessage => rec.error_message.map(Value::Text),
            Field::ErrorResponseType => rec.error_response_type.map(Value::Text),
            Field::CacheStatus => rec.cache_status.map(Value::Text),
        }
    }
}

/// `$context.error.responseType` and `$context.error.message` for a 5xx that Envoy answered
/// itself because the upstream failed, from Envoy's `response.code_details`:
/// `INTEGRATION_TIMEOUT` ("Endpoint request timed out") for upstream timeouts (the route's
/// `timeout`, per-try timeouts, and the stream idle and max-duration timeouts, which the caller
/// only asks about for a 5xx: Envoy answers those 504 once the request was whole, 408 before),
/// `INTEGRATION_FAILURE` ("Internal server error") for connection failures, resets and no healthy
/// upstream. None for responses the upstream sent (`via_upstream`) and for anything else.
pub fn integration_error(code_details: &str) -> Option<(&'static str, &'static str)> {
    // Envoy 1.40 says `response_timeout` for the route's timeout (measured end to end); older
    // versions and some paths say `upstream_response_timeout`.
    if code_details.starts_with("response_timeout")
        || code_details.starts_with("upstream_response_timeout")
        || code_details.starts_with("upstream_per_try_timeout")
        || code_details.starts_with("upstream_per_try_idle_timeout")
        || code_details.starts_with("stream_idle_timeout")
        || code_details.starts_with("max_duration_timeout")
    {
        return Some(("INTEGRATION_TIMEOUT", "Endpoint request timed out"));
    }
    let failure = [
        "upstream_reset_before_response_started",
        "upstream_reset_after_response_started",
        "no_healthy_upstream",
        "upstream_max_stream_duration_reached",
        "maintenance_mode",
        "cluster_not_found",
    ];
    failure
        .iter()
        .any(|p| code_details.starts_with(p))
        .then_some(("INTEGRATION_FAILURE", "Internal server error"))
}

/// A response's status from its `:status` header value: three ASCII digits, 100 to 999 (None
/// for anything else, so a garbled value is never counted or logged as a status).
pub fn status_code(value: &[u8]) -> Option<u16> {
    match value {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
            Some(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => None,
    }
}

/// `$context.responseLength` from what the filter sees of the response headers, so that the
/// record need not ask Envoy for `response.size` (a property read costs Envoy several times what
/// a header read does): 0 for a response that ends with its headers (HEAD, 204, 304, empty
/// local replies), else its `Content-Length` (ASCII digits only). None when neither tells (a
/// chunked body, a garbled length): the caller then asks Envoy for the bytes it sent.
pub fn response_length(end_of_stream: bool, content_length: Option<&[u8]>) -> Option<u64> {
    if end_of_stream {
        return Some(0);
    }
    let digits = content_length?;
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| match b {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(b - b'0')),
        _ => None,
    })
}

/// `$context.path`: the request path without its query string (API Gateway's `path` has none;
/// query strings often carry tokens, so they never reach a log line).
pub fn path_without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The header line matching the `csv` format's columns (the variable names in [`Field::ALL`]
/// order). tollgate never writes it itself; it is here for documentation and log tooling.
pub const CSV_HEADER: &str = "requestId,requestTime,requestTimeEpoch,httpMethod,resourcePath,\
path,protocol,status,responseLength,responseLatency,integrationLatency,identity.sourceIp,\
identity.userAgent,identity.apiKeyId,stage,error.message,error.responseType,cacheStatus";

/// The fields exported as filter state (`filter_state` in the configuration): a subset of
/// [`Field::EXPORTED`]. The default exports them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exports(u8);

impl Exports {
    pub const ALL: Exports = Exports((1 << Field::EXPORTED.len()) - 1);
    pub const NONE: Exports = Exports(0);

    /// The set with `field` added (unchanged when `field` is not an exported one).
    pub fn with(self, field: Field) -> Exports {
        match field.exported_index() {
            Some(i) => Exports(self.0 | 1 << i),
            None => self,
        }
    }

    pub fn contains(self, field: Field) -> bool {
        field
            .exported_index()
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Default for Exports {
    fn default() -> Exports {
        Exports::ALL
    }
}

/// How access log lines are written (`access_log.format`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Json,
    Clf,
    Csv,
    Xml,
    Template(Template),
}

impl LogFormat {
    /// "json" | "clf" | "csv" | "xml" | a template string containing $context.* variables.
    /// Errors (path relative to the access_log section, i.e. "format") for unknown variables
    /// ("unknown variable $context.foo"), a template with no variable, an empty string, and a
    /// template with line breaks or other control characters (tab is allowed).
    pub fn parse(s: &str) -> Result<LogFormat, FieldError> {
        match s {
            "" => Err(FieldError::new("format", "must not be empty")),
            "json" => Ok(LogFormat::Json),
            "clf" => Ok(LogFormat::Clf),
            "csv" => Ok(LogFormat::Csv),
            "xml" => Ok(LogFormat::Xml),
            _ => {
                let template = Template::parse(s)?;
                if template.fields().next().is_none() {
                    return Err(FieldError::new(
                        "format",
                        "must be \"json\", \"clf\", \"csv\", \"xml\" or a template with at least \
                         one $context variable",
                    ));
                }
                Ok(LogFormat::Template(template))
            }
        }
    }

    /// Whether lines in this format show `field`: the filter asks Envoy only for the values
    /// its format prints (`json`, `csv` and `xml` print all of them).
    pub fn uses(&self, field: Field) -> bool {
        match self {
            LogFormat::Json | LogFormat::Csv | LogFormat::Xml => true,
            LogFormat::Clf => matches!(
                field,
                Field::SourceIp
                    | Field::RequestTime
                    | Field::HttpMethod
                    | Field::Path
                    | Field::Protocol
                    | Field::Status
                    | Field::ResponseLength
                    | Field::RequestId
            ),
            LogFormat::Template(t) => t.fields().any(|f| f == field),
        }
    }

    /// Appends one line (no trailing newline) for the record.
    pub fn format_into(&self, rec: &Record, out: &mut String) {
        match self {
            LogFormat::Json => format_json(rec, out),
            LogFormat::Clf => format_clf(rec, out),
            LogFormat::Csv => format_csv(rec, out),
            LogFormat::Xml => format_xml(rec, out),
            LogFormat::Template(t) => t.format_into(rec, out),
        }
    }
}

/// `{"name":` then `,"name":` for each field of [`Field::ALL`], in its order: one `push_str` per
/// key (names need no JSON escaping; a unit test checks the list against [`Field::name`]).
const JSON_KEYS: [&str; 18] = [
    "{\"requestId\":",
    ",\"requestTime\":",
    ",\"requestTimeEpoch\":",
    ",\"httpMethod\":",
    ",\"resourcePath\":",
    ",\"path\":",
    ",\"protocol\":",
    ",\"status\":",
    ",\"responseLength\":",
    ",\"responseLatency\":",
    ",\"integrationLatency\":",
    ",\"identity.sourceIp\":",
    ",\"identity.userAgent\":",
    ",\"identity.apiKeyId\":",
    ",\"stage\":",
    ",\"error.message\":",
    ",\"error.responseType\":",
    ",\"cacheStatus\":",
];

fn format_json(rec: &Record, out: &mut String) {
    out.reserve(512);
    for (field, key) in Field::ALL.iter().zip(JSON_KEYS) {
        out.push_str(key);
        match field.value(rec) {
            None => out.push_str("null"),
            Some(Value::Text(s)) => {
                out.push('"');
                json_escape_into(s, out);
                out.push('"');
            }
            Some(Value::Number(n)) => push_u64(n, out),
            Some(Value::Time(ms)) => {
                out.push('"');
                write_clf_time(ms, out); // digits, letters, '/', ':', ' ', '+': nothing to escape
                out.push('"');
            }
        }
    }
    out.push('}');
}

/// API Gateway's CLF:
/// `$context.identity.sourceIp - - [$context.requestTime] "$context.httpMethod $context.path
/// $context.protocol" $context.status $context.responseLength $context.requestId`.
///
/// API Gateway puts `$context.resourcePath` (the route template, `/pets/{id}`) in the request
/// line; tollgate logs the actual request path (`/pets/42`), which is what CLF means by the
/// request line and what log analysers expect. The template stays available as
/// `$context.resourcePath` in every other format.
///
/// Unknown or empty values are `-` (`[-]` for the time). The unquoted fields (source IP,
/// request id) have spaces, `"`, `\` and control characters written as `\xHH`; the quoted
/// request line has `"`, `\` and control characters written as `\xHH`, so no value can end a
/// field early or start a new line.
fn format_clf(rec: &Record, out: &mut String) {
    out.reserve(160);
    clf_token(rec.source_ip, out);
    out.push_str(" - - [");
    match rec.request_time_epoch_ms {
        Some(ms) => write_clf_time(ms, out),
        None => out.push('-'),
    }
    out.push_str("] \"");
    clf_quoted(rec.http_method, out);
    out.push(' ');
    clf_quoted(rec.path, out);
    out.push(' ');
    clf_quoted(rec.protocol, out);
    out.push_str("\" ");
    clf_number(rec.status.map(u64::from), out);
    out.push(' ');
    clf_number(rec.response_length, out);
    out.push(' ');
    clf_token(rec.request_id, out);
}

fn clf_token(value: Option<&str>, out: &mut String) {
    match value {
        Some(s) if !s.is_empty() => token_escape_into(s, out),
        _ => out.push('-'),
    }
}

fn clf_quoted(value: Option<&str>, out: &mut String) {
    match value {
        Some(s) if !s.is_empty() => quoted_escape_into(s, out),
        _ => out.push('-'),
    }
}

fn clf_number(value: Option<u64>, out: &mut String) {
    match value {
        Some(n) => push_u64(n, out),
        None => out.push('-'),
    }
}

/// All 18 fields in [`Field::ALL`] order (see [`CSV_HEADER`]), comma-separated, unknown values
/// empty. RFC 4180: a field containing a comma, a quote, CR or LF is quoted and its quotes are
/// doubled. One deviation so that a record stays one log line (the contract's "one log line per
/// request"): CR, LF and other control characters are written as `\xHH` rather than raw (HTTP
/// header values cannot carry CR or LF anyway).
fn format_csv(rec: &Record, out: &mut String) {
    out.reserve(256);
    for (i, field) in Field::ALL.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match field.value(rec) {
            None => {}
            Some(Value::Text(s)) => csv_field_into(s, out),
            Some(Value::Number(n)) => push_u64(n, out),
            Some(Value::Time(ms)) => write_clf_time(ms, out), // no comma, quote or line break
        }
    }
}

/// `<log><requestId>..</requestId>...</log>`, all 18 fields in [`Field::ALL`] order.
///
/// Element names are the variable names verbatim (`<identity.sourceIp>`): `.` is a legal XML
/// name character (not at the start, and every name starts with a letter), so the names are valid
/// XML 1.0 and match the JSON keys and template variables exactly. Unknown values are empty
/// elements (`<stage/>`). Text escapes `& < > " '`; tab, CR, LF, DEL and C1 controls become
/// character references (`&#xA;`) so the record stays one line; characters XML 1.0 forbids
/// (other C0 controls, U+FFFE, U+FFFF) become U+FFFD.
fn format_xml(rec: &Record, out: &mut String) {
    out.reserve(640);
    out.push_str("<log>");
    for field in Field::ALL {
        let name = field.name();
        out.push('<');
        out.push_str(name);
        match field.value(rec) {
            None => {
                out.push_str("/>");
                continue;
            }
            Some(Value::Text(s)) => {
                out.push('>');
                xml_escape_into(s, out);
            }
            Some(Value::Number(n)) => {
                out.push('>');
                push_u64(n, out);
            }
            Some(Value::Time(ms)) => {
                out.push('>');
                write_clf_time(ms, out);
            }
        }
        out.push_str("</");
        out.push_str(name);
        out.push('>');
    }
    out.push_str("</log>");
}

/// Writes one template variable: unknown or empty values are `-`; text through `escape`.
fn template_value_into(
    field: Field,
    rec: &Record,
    out: &mut String,
    escape: fn(&str, &mut String),
) {
    match field.value(rec) {
        None | Some(Value::Text("")) => out.push('-'),
        Some(Value::Text(s)) => escape(s, out),
        Some(Value::Number(n)) => push_u64(n, out),
        Some(Value::Time(ms)) => write_clf_time(ms, out),
    }
}
