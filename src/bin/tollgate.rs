//! `tollgate`: the native companion of the plugin, using the same configuration code.
//!
//! - `tollgate check CONFIG.json` validates a plugin configuration exactly as the plugin's
//!   `on_configure` does: it prints the first problem found, with its field path (exit status 1),
//!   or, for a valid configuration, its warnings and a summary.
//! - `tollgate hash-key` reads an API key from standard input and prints the `sha256` value to
//!   put in the configuration (so the key never appears on a command line or in shell history).

use std::io::Read;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  tollgate check CONFIG.json   validate a plugin configuration (- reads stdin)\n  tollgate hash-key            read an API key on stdin, print its sha256 for the config"
    );
    ExitCode::from(2)
}

fn read_input(path: &str) -> std::io::Result<Vec<u8>> {
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

fn check(path: &str) -> ExitCode {
    let bytes = match read_input(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tollgate: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match tollgate::config::Config::from_json(&bytes) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            println!(
                "{path}: ok (stage {:?}, {} route(s), {} usage plan(s), {} key(s))",
                cfg.stage,
                cfg.routes.len(),
                cfg.plans.len(),
                cfg.api_keys.as_ref().map_or(0, |k| k.keys().len())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{path}: invalid configuration: {e}");
            ExitCode::from(1)
        }
    }
}

fn hash_key() -> ExitCode {
    let mut buf = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut buf) {
        eprintln!("tollgate: cannot read stdin: {e}");
        return ExitCode::from(2);
    }
    // A trailing newline from `echo` or a terminal is not part of the key.
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    if buf.is_empty() {
        eprintln!("tollgate: empty key");
        return ExitCode::from(2);
    }
    // The digest of such a key would load and never match a request.
    if !tollgate::keys::presentable(&buf) {
        eprintln!(
            "tollgate: the key starts or ends with whitespace or holds a control character: no request could present it (Envoy trims header values)"
        );
        return ExitCode::from(2);
    }
    let d = tollgate::keys::sha256(&buf);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    println!("{hex}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["check", path] => check(path),
        ["hash-key"] => hash_key(),
        _ => usage(),
    }
}
