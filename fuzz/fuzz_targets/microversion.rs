//! The `OpenStack-API-Version` header: any bytes are a version within bounds or a 400/406,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vbs_proxy::cinder::microversion::{negotiate, Version};

fuzz_target!(|data: &[u8]| {
    let max = Version::new(3, 71);
    if let Ok(version) = negotiate(Some(data), max) {
        assert!(version >= Version::MIN && version <= max, "{version}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(v) = Version::parse(text) {
            assert_eq!(Version::parse(&v.to_string()), Some(v));
        }
    }
});
