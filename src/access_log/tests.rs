use super::*;
use crate::calendar::days_from_civil;

/// 2023-11-14 22:13:20.123 UTC
const T: u64 = 1_700_000_000_123;

fn full() -> Record<'static> {
    Record {
        request_id: Some("req-1"),
        request_time_epoch_ms: Some(T),
        http_method: Some("GET"),
        resource_path: Some("/pets/{id}"),
        path: Some("/pets/42"),
        protocol: Some("HTTP/1.1"),
        status: Some(429),
        response_length: Some(1234),
        response_latency_ms: Some(15),
        integration_latency_ms: Some(12),
        source_ip: Some("203.0.113.7"),
        user_agent: Some("curl/8.5.0"),
        api_key_id: Some("partner-a"),
        stage: Some("prod"),
        error_message: Some("Too Many Requests"),
        error_response_type: Some("THROTTLED"),
        cache_status: Some("miss"),
    }
}

fn fmt(format: &LogFormat, rec: &Record) -> String {
    let mut out = String::new();
    format.format_into(rec, &mut out);
    out
}

fn fmt_str(format: &str, rec: &Record) -> String {
    fmt(&LogFormat::parse(format).unwrap(), rec)
}

fn time(ms: u64) -> String {
    let mut out = String::new();
    write_clf_time(ms, &mut out);
    out
}

fn ms(y: i64, mo: u32, d: u32, h: u64, mi: u64, s: u64) -> u64 {
    let days = u64::try_from(days_from_civil(y, mo, d)).unwrap();
    ((days * 86_400) + h * 3600 + mi * 60 + s) * 1000
}

fn json(s: &str) -> String {
    let mut out = String::new();
    json_escape_into(s, &mut out);
    out
}

// ---- fields ----

#[test]
fn decimal_writes_any_u64_without_allocating() {
    for n in [0, 7, 10, 60, 12_345, 1_000_000, u64::MAX] {
        assert_eq!(decimal(n, &mut [0; 20]), n.to_string().as_bytes());
    }
}

#[test]
fn field_names_round_trip_and_are_distinct() {
    for f in Field::ALL {
        assert_eq!(Field::from_name(f.name()), Some(f));
    }
    let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 18);
    assert_eq!(CSV_HEADER, names.join(","));
    assert_eq!(Field::from_name("identity.sourceIp"), Some(Field::SourceIp));
    assert_eq!(
        Field::from_name("error.responseType"),
        Some(Field::ErrorResponseType)
    );
    assert_eq!(Field::from_name("sourceIp"), None);
    assert_eq!(Field::from_name("Status"), None);
    assert_eq!(Field::from_name(""), None);
}

#[test]
fn write_value_appends_raw_text() {
    let rec = full();
    let mut out = String::from(">");
    assert!(Field::RequestTime.write_value(&rec, &mut out));
    assert!(Field::Status.write_value(&rec, &mut out));
    assert!(Field::RequestTimeEpoch.write_value(&rec, &mut out));
    assert!(Field::ResourcePath.write_value(&rec, &mut out));
    assert_eq!(out, ">14/Nov/2023:22:13:20 +00004291700000000123/pets/{id}");

    let empty = Record::default();
    let mut out = String::new();
    for f in Field::ALL {
        assert!(!f.write_value(&empty, &mut out));
    }
    assert_eq!(out, "");

    let odd = Record {
        user_agent: Some("a\"b\n"),
        stage: Some(""),
        ..Record::default()
    };
    let mut out = String::new();
    assert!(Field::UserAgent.write_value(&odd, &mut out));
    assert!(Field::Stage.write_value(&odd, &mut out));
    assert_eq!(out, "a\"b\n");
}

// ---- parse ----

#[test]
fn parse_keywords_and_errors() {
    assert_eq!(LogFormat::parse("json").unwrap(), LogFormat::Json);
    assert_eq!(LogFormat::parse("clf").unwrap(), LogFormat::Clf);
    assert_eq!(LogFormat::parse("csv").unwrap(), LogFormat::Csv);
    assert_eq!(LogFormat::parse("xml").unwrap(), LogFormat::Xml);
    assert_eq!(LogFormat::default(), LogFormat::Json);

    let e = LogFormat::parse("").unwrap_err();
    assert_eq!(e.path, "format");
    assert_eq!(e.message, "must not be empty");
    assert_eq!(
        e.within("access_log").to_string(),
        "access_log.format: must not be empty"
    );

    for no_var in [
        "JSON",
        "plain text",
        " ",
        "$context",
        "$contextual",
        "$status",
    ] {
        let e = LogFormat::parse(no_var).unwrap_err();
        assert_eq!(e.path, "format", "{no_var}");
        assert_eq!(
            e.message,
            "must be \"json\", \"clf\", \"csv\", \"xml\" or a template with at least one \
             $context variable",
            "{no_var}"
        );
    }

    let e = LogFormat::parse("$context.foo").unwrap_err();
    assert_eq!(e.path, "format");
    assert_eq!(e.message, "unknown variable $context.foo");
    let e = LogFormat::parse("$context.status $context.identity.sourceIP x").unwrap_err();
    assert_eq!(e.message, "unknown variable $context.identity.sourceIP");
    let e = LogFormat::parse("$context.statusCode").unwrap_err();
    assert_eq!(e.message, "unknown variable $context.statusCode");
    let e = LogFormat::parse("[$context.error.messages]").unwrap_err();
    assert_eq!(e.message, "unknown variable $context.error.messages");
    let e = LogFormat::parse("$context.foo.bar.").unwrap_err();
    assert_eq!(e.message, "unknown variable $context.foo.bar");
    let e = LogFormat::parse("$context.status $context. x").unwrap_err();
    assert_eq!(
        e.message,
        "\"$context.\" must be followed by a variable name"
    );
    let e = LogFormat::parse("$context.path\n$context.status").unwrap_err();
    assert_eq!(
        e.message,
        "must not contain line breaks or control characters"
    );
    assert!(LogFormat::parse("$context.path\t$context.status").is_ok());
    // The Unicode line and paragraph separators break lines too.
    for sep in ['\u{2028}', '\u{2029}', '\u{85}'] {
        let e = LogFormat::parse(&format!("$context.status{sep}x")).unwrap_err();
        assert_eq!(
            e.message,
            "must not contain line breaks or control characters"
        );
    }
}

#[test]
fn template_segments() {
    use Segment::{Literal, Var};
    let seg = |s: &str| Template::parse(s).unwrap().segments().to_vec();
    assert_eq!(
        seg("$context.httpMethod$context.path"),
        vec![Var(Field::HttpMethod), Var(Field::Path)]
    );
    assert_eq!(
        seg("ip=$context.identity.sourceIp"),
        vec![Literal("ip=".into()), Var(Field::SourceIp)]
    );
    assert_eq!(
        seg("status $context.status."),
        vec![
            Literal("status ".into()),
            Var(Field::Status),
            Literal(".".into())
        ]
    );
    assert_eq!(
        seg("$context.status.foo"),
        vec![Var(Field::Status), Literal(".foo".into())]
    );
    assert_eq!(
        seg("$context.requestTime|$context.requestTimeEpoch"),
        vec![
            Var(Field::RequestTime),
            Literal("|".into()),
            Var(Field::RequestTimeEpoch)
        ]
    );
    assert_eq!(
        seg("$ $x $$context.stage $context"),
        vec![
            Literal("$ $x $".into()),
            Var(Field::Stage),
            Literal(" $context".into())
        ]
    );
    assert_eq!(
        seg("{\"ip\":\"$context.identity.sourceIp\"}"),
        vec![
            Literal("{\"ip\":\"".into()),
            Var(Field::SourceIp),
            Literal("\"}".into())
        ]
    );
    assert_eq!(
        seg("$context.pathé"),
        vec![Var(Field::Path), Literal("é".into())]
    );
    let t = Template::parse("$context.status $context.path $context.status").unwrap();
    assert_eq!(
        t.fields().collect::<Vec<_>>(),
        vec![Field::Status, Field::Path, Field::Status]
    );
    assert_eq!(Template::parse("no vars").unwrap().fields().count(), 0);
    assert_eq!(Template::parse("").unwrap().segments(), &[]);
}

#[test]
fn every_variable_parses_in_a_template() {
    for f in Field::ALL {
        let t = format!("<$context.{}>", f.name());
        let LogFormat::Template(t) = LogFormat::parse(&t).unwrap() else {
            panic!("not a template")
        };
        assert_eq!(t.fields().collect::<Vec<_>>(), vec![f]);
    }
}

// ---- json ----

#[test]
fn json_full_record() {
    assert_eq!(
        fmt(&LogFormat::Json, &full()),
        concat!(
            r#"{"requestId":"req-1","requestTime":"14/Nov/2023:22:13:20 +0000","#,
            r#""requestTimeEpoch":1700000000123,"httpMethod":"GET","resourcePath":"/pets/{id}","#,
            r#""path":"/pets/42","protocol":"HTTP/1.1","status":429,"responseLength":1234,"#,
            r#""responseLatency":15,"integrationLatency":12,"identity.sourceIp":"203.0.113.7","#,
            r#""identity.userAgent":"curl/8.5.0","identity.apiKeyId":"partner-a","stage":"prod","#,
            r#""error.message":"Too Many Requests","error.responseType":"THROTTLED","#,
            r#""cacheStatus":"miss"}"#
        )
    );
}

#[test]
fn json_empty_record() {
    assert_eq!(
        fmt(&LogFormat::Json, &Record::default()),
        concat!(
            r#"{"requestId":null,"requestTime":null,"requestTimeEpoch":null,"httpMethod":null,"#,
            r#""resourcePath":null,"path":null,"protocol":null,"status":null,"#,
            r#""responseLength":null,"responseLatency":null,"integrationLatency":null,"#,
            r#""identity.sourceIp":null,"identity.userAgent":null,"identity.apiKeyId":null,"#,
            r#""stage":null,"error.message":null,"error.responseType":null,"cacheStatus":null}"#
        )
    );
}

#[test]
fn json_escaping() {
    assert_eq!(json(""), "");
    assert_eq!(json("plain"), "plain");
    assert_eq!(json(r#"a"b\c"#), r#"a\"b\\c"#);
    assert_eq!(
        json("l1\nl2\r\t\u{1}\u{1f}"),
        r"l1\u000al2\u000d\u0009\u0001\u001f"
    );
    assert_eq!(json("\u{0}"), r"\u0000");
    assert_eq!(json("del\u{7f}"), r"del\u007f");
    assert_eq!(json("ls\u{2028}ps\u{2029}"), r"ls\u2028ps\u2029");
    assert_eq!(json("héllo ✓ 🐕 \u{a0}"), "héllo ✓ 🐕 \u{a0}");
    assert_eq!(json("nel\u{85}\u{9f}"), r"nel\u0085\u009f");
    assert_eq!(json("</script>"), "</script>");
    let mut out = String::from("x");
    json_escape_into("\"", &mut out);
    assert_eq!(out, "x\\\"");
}

#[test]
fn json_output_parses_back() {
    let nasty = "q\"b\\s/n\nr\rt\tc\u{1}d\u{7f}é✓🐕\u{2028}\u{85}\u{fffe}";
    let rec = Record {
        user_agent: Some(nasty),
        path: Some(""),
        status: Some(u16::MAX),
        response_length: Some(u64::MAX),
        request_time_epoch_ms: Some(0),
        ..full()
    };
    let line = fmt(&LogFormat::Json, &rec);
    assert!(!line.contains('\n') && !line.contains('\r'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 18);
    assert_eq!(obj["identity.userAgent"], nasty);
    assert_eq!(obj["path"], "");
    assert_eq!(obj["status"], 65535);
    assert_eq!(obj["responseLength"], u64::MAX);
    assert_eq!(obj["requestTime"], "01/Jan/1970:00:00:00 +0000");
    assert_eq!(obj["requestTimeEpoch"], 0);
    // Keys come out in Field::ALL order.
    let keys: Vec<&str> = line
        .trim_start_matches('{')
        .split(",\"")
        .map(|kv| kv.trim_start_matches('"').split('"').next().unwrap())
        .collect();
    let names: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(keys, names);
}

// ---- clf ----

#[test]
fn clf_full_record() {
    assert_eq!(
        fmt(&LogFormat::Clf, &full()),
        r#"203.0.113.7 - - [14/Nov/2023:22:13:20 +0000] "GET /pets/42 HTTP/1.1" 429 1234 req-1"#
    );
}

#[test]
fn clf_empty_record() {
    assert_eq!(
        fmt(&LogFormat::Clf, &Record::default()),
        r#"- - - [-] "- - -" - - -"#
    );
    let empty_strings = Record {
        source_ip: Some(""),
        http_method: Some(""),
        path: Some(""),
        protocol: Some(""),
        request_id: Some(""),
        ..Record::default()
    };
    assert_eq!(
        fmt(&LogFormat::Clf, &empty_strings),
        r#"- - - [-] "- - -" - - -"#
    );
}

#[test]
fn clf_cannot_be_forged() {
    let rec = Record {
        source_ip: Some("1.2.3.4 evil\"x\\"),
        path: Some("/a\" 200 0 x\n9.9.9.9 - - [01/Jan/1970:00:00:00 +0000] \"GET /\\"),
        http_method: Some("GE\tT"),
        request_id: Some("id with space\r\n"),
        ..full()
    };
    let line = fmt(&LogFormat::Clf, &rec);
    assert_eq!(
        line,
        concat!(
            r"1.2.3.4\x20evil\x22x\x5C - - [14/Nov/2023:22:13:20 +0000] ",
            r#""GE\x09T /a\x22 200 0 x\x0A9.9.9.9 - - [01/Jan/1970:00:00:00 +0000] \x22GET /\x5C "#,
            r#"HTTP/1.1" 429 1234 id\x20with\x20space\x0D\x0A"#
        )
    );
    assert_eq!(line.matches('"').count(), 2);
    // Non-ASCII passes through; C1 controls and line separators do not.
    let rec = Record {
        path: Some("/caf\u{e9}\u{85}\u{2028}"),
        ..Record::default()
    };
    assert_eq!(
        fmt(&LogFormat::Clf, &rec),
        "- - - [-] \"- /café\\x85\\u2028 -\" - - -"
    );
    // A token keeps no Unicode space (a reader splitting on whitespace would cut it) and no
    // bidirectional control (a viewer would reorder the line).
    let rec = Record {
        request_id: Some(
            "abc\u{a0}200\u{2003}9\u{3000}9\u{1680}9\u{202e}XYZ\u{2066}\u{feff}é\u{61c}ع",
        ),
        ..Record::default()
    };
    let line = fmt(&LogFormat::Clf, &rec);
    assert_eq!(
        line,
        "- - - [-] \"- - -\" - - abc\\xA0200\\u20039\\u30009\\u16809\\u202EXYZ\\u2066\\uFEFFé\\u061Cع"
    );
    assert_eq!(line.split_whitespace().count(), 10);
}

// ---- csv ----

#[test]
fn csv_full_record() {
    assert_eq!(
        fmt(&LogFormat::Csv, &full()),
        concat!(
            "req-1,14/Nov/2023:22:13:20 +0000,1700000000123,GET,/pets/{id},/pets/42,HTTP/1.1,",
            "429,1234,15,12,203.0.113.7,curl/8.5.0,partner-a,prod,Too Many Requests,THROTTLED,",
            "miss"
        )
    );
}

#[test]
fn csv_empty_record() {
    assert_eq!(fmt(&LogFormat::Csv, &Record::default()), ",".repeat(17));
}

#[test]
fn csv_quoting() {
    let rec = Record {
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64), \"quoted\""),
        error_message: Some("line1\r\nline2"),
        stage: Some("a\"b"),
        request_id: Some(" spaced "),
        path: Some("/tab\there\u{1}"),
        resource_path: Some("héllo"),
        ..Record::default()
    };
    assert_eq!(
        fmt(&LogFormat::Csv, &rec),
        concat!(
            " spaced ,,,,héllo,/tab\\x09here\\x01,,,,,,,",
            "\"Mozilla/5.0 (X11; Linux x86_64), \"\"quoted\"\"\",,",
            "\"a\"\"b\",\"line1\\x0D\\x0Aline2\",,"
        )
    );
    // A backslash is escaped too: `\x0A` in a record is always an escape, never a value's text,
    // and readers that take `\` as an escape character count the same fields.
    let rec = Record {
        user_agent: Some("x,\\"),
        stage: Some("lit\\x0Aeral"),
        ..Record::default()
    };
    assert_eq!(
        fmt(&LogFormat::Csv, &rec),
        ",,,,,,,,,,,,\"x,\\x5C\",,lit\\x5Cx0Aeral,,,"
    );
    let mut out = String::new();
    text::csv_field_into("", &mut out);
    text::csv_field_into(",", &mut out);
    text::csv_field_into("\"", &mut out);
    assert_eq!(out, "\",\"\"\"\"\"");
}

// ---- xml ----

#[test]
fn xml_full_record() {
    assert_eq!(
        fmt(&LogFormat::Xml, &full()),
        concat!(
            "<log><requestId>req-1</requestId>",
            "<requestTime>14/Nov/2023:22:13:20 +0000</requestTime>",
            "<requestTimeEpoch>1700000000123</requestTimeEpoch>",
            "<httpMethod>GET</httpMethod>",
            "<resourcePath>/pets/{id}</resourcePath>",
            "<path>/pets/42</path>",
            "<protocol>HTTP/1.1</protocol>",
            "<status>429</status>",
            "<responseLength>1234</responseLength>",
            "<responseLatency>15</responseLatency>",
            "<integrationLatency>12</integrationLatency>",
            "<identity.sourceIp>203.0.113.7</identity.sourceIp>",
            "<identity.userAgent>curl/8.5.0</identity.userAgent>",
            "<identity.apiKeyId>partner-a</identity.apiKeyId>",
            "<stage>prod</stage>",
            "<error.message>Too Many Requests</error.message>",
            "<error.responseType>THROTTLED</error.responseType>",
            "<cacheStatus>miss</cacheStatus></log>"
        )
    );
}

#[test]
fn xml_empty_record() {
    assert_eq!(
        fmt(&LogFormat::Xml, &Record::default()),
        concat!(
            "<log><requestId/><requestTime/><requestTimeEpoch/><httpMethod/><resourcePath/>",
            "<path/><protocol/><status/><responseLength/><responseLatency/>",
            "<integrationLatency/><identity.sourceIp/><identity.userAgent/>",
            "<identity.apiKeyId/><stage/><error.message/><error.responseType/>",
            "<cacheStatus/></log>"
        )
    );
}

#[test]
fn xml_escaping() {
    let rec = Record {
        user_agent: Some("<a href=\"x\">'&amp;'</a>"),
        error_message: Some("nul\u{0}bel\u{7}tab\tlf\ncr\rdel\u{7f}nel\u{85}x\u{fffe}é🐕"),
        stage: Some(""),
        ..Record::default()
    };
    let line = fmt(&LogFormat::Xml, &rec);
    assert!(line.contains(
        "<identity.userAgent>&lt;a href=&quot;x&quot;&gt;&apos;&amp;amp;&apos;&lt;/a&gt;\
         </identity.userAgent>"
    ));
    assert!(line.contains(
        "<error.message>nul\u{fffd}bel\u{fffd}tab&#x9;lf&#xA;cr&#xD;del&#x7F;nel&#x85;\
         x\u{fffd}é🐕</error.message>"
    ));
    assert!(line.contains("<stage></stage>"));
    assert!(!line.contains('\n'));
}

// ---- template ----

#[test]
fn template_full_and_empty_record() {
    let t = "$context.identity.sourceIp [$context.requestTime] \"$context.httpMethod \
             $context.resourcePath $context.protocol\" $context.status $context.responseLength \
             $context.requestId $context.responseLatency/$context.integrationLatency \
             key=$context.identity.apiKeyId stage=$context.stage err=$context.error.responseType \
             cache=$context.cacheStatus.";
    assert_eq!(
        fmt_str(t, &full()),
        "203.0.113.7 [14/Nov/2023:22:13:20 +0000] \"GET /pets/{id} HTTP/1.1\" 429 1234 req-1 \
         15/12 key=partner-a stage=prod err=THROTTLED cache=miss."
    );
    assert_eq!(
        fmt_str(t, &Record::default()),
        "- [-] \"- - -\" - - - -/- key=- stage=- err=- cache=-."
    );
}

#[test]
fn template_values() {
    let rec = Record {
        user_agent: Some("a \"b\" \\c\nd\t\u{1}é\u{2029}"),
        stage: Some(""),
        ..full()
    };
    assert_eq!(
        fmt_str(
            "$context.identity.userAgent|$context.stage|$context.requestTimeEpoch",
            &rec
        ),
        "a \"b\" \\c\\x0Ad\\x09\\x01é\\u2029|-|1700000000123"
    );
    assert_eq!(
        fmt_str("{\"ip\":\"$context.identity.sourceIp\"}", &full()),
        "{\"ip\":\"203.0.113.7\"}"
    );
}

#[test]
fn a_template_shaped_like_json_escapes_its_values_as_json() {
    // The API Gateway habit: a JSON record written as a template. A client's quote cannot end
    // the string and add a field of its own; every line parses.
    let rec = Record {
        user_agent: Some("x\",\"ua2\":\"forged \\ \u{85}\n"),
        request_id: Some("a\"b"),
        ..full()
    };
    let t = " {\"id\":\"$context.requestId\",\"ua\":\"$context.identity.userAgent\",\"s\":$context.status}";
    let line = fmt_str(t, &rec);
    assert_eq!(
        line,
        " {\"id\":\"a\\\"b\",\"ua\":\"x\\\",\\\"ua2\\\":\\\"forged \\\\ \\u0085\\u000a\",\"s\":429}"
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ua"], "x\",\"ua2\":\"forged \\ \u{85}\n");
    assert_eq!(v.as_object().unwrap().len(), 3);
    // Other templates keep their values raw (a quote is a quote).
    assert_eq!(
        fmt_str("ua=$context.identity.userAgent", &rec)
            .matches('"')
            .count(),
        4
    );
}

#[test]
fn format_into_appends() {
    let mut out = String::from("prefix ");
    LogFormat::Csv.format_into(&Record::default(), &mut out);
    LogFormat::parse("$context.status")
        .unwrap()
        .format_into(&full(), &mut out);
    assert_eq!(out, format!("prefix {}429", ",".repeat(17)));
}

// ---- time ----

#[test]
fn clf_time() {
    assert_eq!(time(0), "01/Jan/1970:00:00:00 +0000");
    assert_eq!(time(999), "01/Jan/1970:00:00:00 +0000");
    assert_eq!(time(T), "14/Nov/2023:22:13:20 +0000");
    // Leap day.
    assert_eq!(time(ms(2024, 2, 29, 0, 0, 0)), "29/Feb/2024:00:00:00 +0000");
    assert_eq!(
        time(ms(2024, 2, 29, 0, 0, 0) - 1),
        "28/Feb/2024:23:59:59 +0000"
    );
    assert_eq!(
        time(ms(2024, 3, 1, 0, 0, 0) - 1),
        "29/Feb/2024:23:59:59 +0000"
    );
    assert_eq!(
        time(ms(2024, 2, 28, 12, 0, 0) + 86_400_000),
        "29/Feb/2024:12:00:00 +0000"
    );
    assert_eq!(
        time(ms(2023, 2, 28, 12, 0, 0) + 86_400_000),
        "01/Mar/2023:12:00:00 +0000"
    );
    assert_eq!(
        time(ms(2100, 2, 28, 23, 59, 59) + 1000),
        "01/Mar/2100:00:00:00 +0000"
    );
    assert_eq!(
        time(ms(2000, 2, 28, 23, 59, 59) + 1000),
        "29/Feb/2000:00:00:00 +0000"
    );
    // Year end.
    assert_eq!(
        time(ms(2024, 1, 1, 0, 0, 0) - 1),
        "31/Dec/2023:23:59:59 +0000"
    );
    assert_eq!(time(ms(2024, 1, 1, 0, 0, 0)), "01/Jan/2024:00:00:00 +0000");
    assert_eq!(
        time(ms(2024, 12, 31, 23, 59, 59)),
        "31/Dec/2024:23:59:59 +0000"
    );
    assert_eq!(
        time(ms(2024, 12, 31, 23, 59, 59) + 1000),
        "01/Jan/2025:00:00:00 +0000"
    );
    assert_eq!(
        time(ms(1999, 12, 31, 23, 59, 59) + 999),
        "31/Dec/1999:23:59:59 +0000"
    );
    assert_eq!(
        time(ms(2038, 1, 19, 3, 14, 8)),
        "19/Jan/2038:03:14:08 +0000"
    );
    assert_eq!(
        time(ms(9999, 12, 31, 23, 59, 59)),
        "31/Dec/9999:23:59:59 +0000"
    );
    assert_eq!(
        time(ms(10000, 1, 1, 0, 0, 0)),
        "01/Jan/10000:00:00:00 +0000"
    );
    // Every month name, and no panic at the extreme.
    let months: Vec<String> = (1..=12)
        .map(|m| time(ms(2025, m, 15, 0, 0, 0))[3..6].to_string())
        .collect();
    assert_eq!(
        months,
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    );
    assert!(time(u64::MAX).ends_with(" +0000"));
}

#[test]
fn numbers() {
    let mut out = String::new();
    for n in [
        0,
        7,
        10,
        99,
        100,
        12_345,
        u64::from(u32::MAX),
        u64::MAX - 1,
        u64::MAX,
    ] {
        out.clear();
        text::push_u64(n, &mut out);
        assert_eq!(out, n.to_string());
    }
    out.clear();
    text::push_u64_padded(5, 4, &mut out);
    text::push_u64_padded(12_345, 2, &mut out);
    assert_eq!(out, "000512345");
}

#[test]
fn all_formats_stay_one_line_on_hostile_input() {
    let hostile = "\n\r\u{0}\u{1b}[31m\u{7f}\u{85}\u{2028}\u{2029}\"',<>&\\ é";
    let rec = Record {
        request_id: Some(hostile),
        http_method: Some(hostile),
        resource_path: Some(hostile),
        path: Some(hostile),
        protocol: Some(hostile),
        source_ip: Some(hostile),
        user_agent: Some(hostile),
        api_key_id: Some(hostile),
        stage: Some(hostile),
        error_message: Some(hostile),
        error_response_type: Some(hostile),
        cache_status: Some(hostile),
        ..full()
    };
    let all_vars: String = Field::ALL
        .iter()
        .map(|f| format!("$context.{} ", f.name()))
        .collect();
    for format in [
        LogFormat::Json,
        LogFormat::Clf,
        LogFormat::Csv,
        LogFormat::Xml,
        LogFormat::parse(&all_vars).unwrap(),
    ] {
        let line = fmt(&format, &rec);
        assert!(
            !line.chars().any(|c| c.is_control()),
            "{format:?}: {line:?}"
        );
    }
}

// ---- filter state export, integration errors, path ----

#[test]
fn exported_fields_have_distinct_tollgate_property_names() {
    let mut seen = std::collections::HashSet::new();
    for f in Field::ALL {
        let p = f.property_name();
        assert_eq!(p.strip_prefix("tollgate."), Some(f.name()), "{f:?}");
        assert!(seen.insert(p));
    }
    for f in Field::EXPORTED {
        assert!(Field::ALL.contains(&f));
    }
}

#[test]
fn integration_errors_come_only_from_envoy_made_upstream_failures() {
    assert_eq!(integration_error("via_upstream"), None);
    assert_eq!(integration_error("direct_response"), None);
    assert_eq!(integration_error("route_not_found"), None);
    assert_eq!(integration_error(""), None);
    // What Envoy 1.40 reports for a route timeout (tests/observability.rs).
    assert_eq!(
        integration_error("response_timeout"),
        Some(("INTEGRATION_TIMEOUT", "Endpoint request timed out"))
    );
    assert_eq!(
        integration_error("upstream_response_timeout"),
        Some(("INTEGRATION_TIMEOUT", "Endpoint request timed out"))
    );
    // The connection manager's or the route's idle timeout, and the route's max stream duration,
    // with a silent upstream (tests/observability.rs).
    for details in ["stream_idle_timeout", "max_duration_timeout"] {
        assert_eq!(
            integration_error(details),
            Some(("INTEGRATION_TIMEOUT", "Endpoint request timed out")),
            "{details}"
        );
    }
    assert_eq!(
        integration_error(
            "upstream_reset_before_response_started{remote_connection_failure,delayed_connect_error:_111}"
        ),
        Some(("INTEGRATION_FAILURE", "Internal server error"))
    );
    assert_eq!(
        integration_error("no_healthy_upstream"),
        Some(("INTEGRATION_FAILURE", "Internal server error"))
    );
}

#[test]
fn path_drops_query_and_fragment() {
    assert_eq!(path_without_query("/pets/1?api_key=s3cret&x=1"), "/pets/1");
    assert_eq!(path_without_query("/pets/1#frag"), "/pets/1");
    assert_eq!(path_without_query("/pets/1"), "/pets/1");
    assert_eq!(path_without_query("?x"), "");
    assert_eq!(path_without_query(""), "");
}

#[test]
fn response_length_comes_from_the_headers_when_they_tell() {
    // A response that ends with its headers has no body, whatever Content-Length says (HEAD).
    assert_eq!(response_length(true, Some(b"1234")), Some(0));
    assert_eq!(response_length(true, None), Some(0));
    assert_eq!(response_length(false, Some(b"0")), Some(0));
    assert_eq!(response_length(false, Some(b"5")), Some(5));
    assert_eq!(response_length(false, Some(b"0012")), Some(12));
    assert_eq!(
        response_length(false, Some(b"9999999999999999999")),
        Some(9_999_999_999_999_999_999)
    );
    // Nothing to go by: the caller asks Envoy.
    assert_eq!(response_length(false, None), None);
    for bad in [
        &b""[..],
        b" 5",
        b"5 ",
        b"-1",
        b"+5",
        b"5,5",
        b"0x10",
        b"18446744073709551616",
        b"99999999999999999999",
        b"\xff",
    ] {
        assert_eq!(response_length(false, Some(bad)), None, "{bad:?}");
    }
}

#[test]
fn a_format_uses_a_value_exactly_when_its_line_shows_it() {
    // The values the filter has to ask Envoy for, each in one record slot of its own.
    let clear = |f: Field| {
        let mut r = full();
        match f {
            Field::Protocol => r.protocol = None,
            Field::ResponseLength => r.response_length = None,
            Field::SourceIp => r.source_ip = None,
            Field::Status => r.status = None,
            _ => {} // not asked below
        }
        r
    };
    let formats = [
        "json",
        "clf",
        "csv",
        "xml",
        "$context.status $context.identity.sourceIp",
        "$context.protocol $context.responseLength",
        "$context.requestId",
    ];
    for spec in formats {
        let format = LogFormat::parse(spec).unwrap();
        let mut line = String::new();
        format.format_into(&full(), &mut line);
        for f in [
            Field::Protocol,
            Field::ResponseLength,
            Field::SourceIp,
            Field::Status,
        ] {
            let mut without = String::new();
            format.format_into(&clear(f), &mut without);
            assert_eq!(format.uses(f), line != without, "{spec}: {f:?}");
        }
    }
}

#[test]
fn status_codes_are_three_digits_from_100() {
    assert_eq!(status_code(b"200"), Some(200));
    assert_eq!(status_code(b"429"), Some(429));
    assert_eq!(status_code(b"100"), Some(100));
    assert_eq!(status_code(b"999"), Some(999));
    for bad in [
        &b""[..],
        b"20",
        b"2000",
        b"099",
        b"0",
        b" 200",
        b"200 ",
        b"2a0",
        b"-20",
        b"\xff\xff\xff",
    ] {
        assert_eq!(status_code(bad), None, "{bad:?}");
    }
}

#[test]
fn each_escapes_ascii_set_flags_what_its_predicate_does() {
    for (i, (needs, set)) in text::PREDICATES.into_iter().enumerate() {
        for b in 0u8..0x80 {
            assert_eq!(
                set.contains(b),
                needs(char::from(b)),
                "predicate {i}, {b:#04x}"
            );
        }
    }
}

#[test]
fn escapes_only_flag_ascii_or_characters_whose_lead_byte_is_decoded() {
    // escape_with decodes only characters starting with a DECODE_LEADS byte: a predicate that
    // flagged any other non-ASCII character would let it through unescaped.
    let mut buf = [0u8; 4];
    for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
        let lead = c.encode_utf8(&mut buf).as_bytes()[0];
        for (needs, _) in text::PREDICATES {
            assert!(
                !needs(c) || c.is_ascii() || text::decoded_lead(lead),
                "U+{:04X} is flagged but its lead byte {lead:#x} is never decoded",
                u32::from(c)
            );
        }
    }
}

#[test]
fn escapes_find_their_characters_among_multibyte_text() {
    let s = "é\u{85}x\u{2028}😀\"\u{2029}\\ü\u{fffe}\u{7f}";
    let mut out = String::new();
    json_escape_into(s, &mut out);
    assert_eq!(out, "é\\u0085x\\u2028😀\\\"\\u2029\\\\ü\u{fffe}\\u007f");
    let mut out = String::new();
    text::xml_escape_into(s, &mut out);
    assert_eq!(out, "é&#x85;x&#x2028;😀&quot;&#x2029;\\ü\u{fffd}&#x7F;");
    // Â, â and ï are letters (their UTF-8 starts with 0xC3): copied as they are.
    let mut out = String::new();
    json_escape_into("\u{c2}\u{e2}\u{ef}", &mut out);
    assert_eq!(out, "\u{c2}\u{e2}\u{ef}");
}
