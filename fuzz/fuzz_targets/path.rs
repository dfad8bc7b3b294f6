//! Request paths: what the proxy accepts and forwards stays under `/v3/{project}/` with no
//! empty or dot segment, whatever the client sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vbs_proxy::http::path;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let _ = path::check(raw);
    if let Ok(upstream) = path::upstream_path(raw) {
        assert!(upstream.starts_with("/v3/"), "{upstream}");
        let inner = upstream.trim_end_matches('/');
        for segment in inner.split('/').skip(1) {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{upstream}"
            );
            assert!(!segment.contains('%') || !segment.to_ascii_lowercase().contains("%2f"));
        }
        assert!(inner.split('/').count() >= 4, "{upstream}");
    }
});
