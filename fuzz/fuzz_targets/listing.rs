//! A region's listing answer, read in one pass (or two, when an item's extent cannot be told
//! in one): for any bytes a region sends, the read never panics, and every item it returns is
//! a whole JSON object of the answer: read again on its own, it is one item with the same
//! bytes, id and sort values. (serde_json's own value parser is no judge here: it refuses a
//! lone surrogate escape such as `"\udbad"`, which the JSON grammar admits and a region's
//! bytes are passed on with.)
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use vbs_proxy::cinder::item::parse_list;
use vbs_proxy::cinder::resource::BACKUPS;

const FIELDS: [&str; 3] = ["name", "size", "id"];

fuzz_target!(|data: &[u8]| {
    let Ok(page) = parse_list(Bytes::copy_from_slice(data), &FIELDS, &BACKUPS) else {
        return;
    };
    for item in &page.items {
        let raw = item.raw();
        assert!(raw.starts_with(b"{") && raw.ends_with(b"}"), "an object's bytes");
        let mut alone = b"{\"backups\": [".to_vec();
        alone.extend_from_slice(raw);
        alone.extend_from_slice(b"]}");
        let again = parse_list(Bytes::from(alone), &FIELDS, &BACKUPS).expect("an item read alone");
        assert_eq!(again.items.len(), 1);
        assert_eq!(again.items[0].raw(), raw);
        assert_eq!(again.items[0].id(), item.id());
        assert_eq!(again.items[0].values(), item.values());
    }
});
