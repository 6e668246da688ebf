//! The configuration parser: JSON text and binary protobuf `Struct`, through the public
//! `Config::from_json` only. Any input must give `Ok` or a field error, never a panic; a config
//! that loads must answer route lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::config::Config;

fuzz_target!(|data: &[u8]| {
    match Config::from_json(data) {
        Ok(cfg) => {
            for (method, path) in [
                (&b"GET"[..], &b"/"[..]),
                (b"HEAD", b"/a/b/c"),
                (b"OPTIONS", b"//x/../y;z?q"),
            ] {
                let route = cfg.table.find(method, path);
                let _ = cfg.route(route);
                assert!(route.is_none_or(|i| i < cfg.routes.len()));
            }
            assert_eq!(cfg.table.len(), cfg.routes.len());
        }
        Err(e) => {
            // The message is one log line.
            let line = e.to_string();
            assert!(!line.contains('\n'), "{line:?}");
        }
    }
});
