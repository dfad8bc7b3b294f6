//! The link rewriter: for any JSON a region sends and any public base (it may come from a
//! header), what it writes is still JSON, and only `href`s change.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vbs_proxy::listing::links::Rewriter;

fuzz_target!(|data: &[u8]| {
    // The first line is the public base; the rest is the region's JSON.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let Ok(public_base) = std::str::from_utf8(&data[..split]) else {
        return;
    };
    let raw = data.get(split + 1..).unwrap_or_default();
    let bases = vec!["http://127.0.0.1:9001".to_string(), "http://r".to_string()];
    let mut out = Vec::new();
    Rewriter::new(&bases, public_base).write_json(raw, &mut out);
    if serde_json::from_slice::<serde_json::Value>(raw).is_ok() {
        let rewritten: serde_json::Value =
            serde_json::from_slice(&out).expect("valid JSON stays valid JSON");
        let _ = rewritten;
    }
});
