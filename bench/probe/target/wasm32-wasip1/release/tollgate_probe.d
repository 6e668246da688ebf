/work/main/bench/probe/target/wasm32-wasip1/release/tollgate_probe.wasm: /work/main/bench/probe/src/lib.rs
