//! The listing query parser: any query string, at any microversion, is a query or a 400,
//! never a panic; and the next link made from a query parses back to that query, marker
//! replaced (a client following it asks for the same listing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vbs_proxy::listing::request::ListQuery;
use vbs_proxy::cinder::resource::BACKUPS;
use vbs_proxy::cinder::microversion::Version;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for version in [Version::new(3, 0), Version::new(3, 37), Version::new(3, 71)] {
        let Ok(query) = ListQuery::parse(Some(raw), version, 1000, &BACKUPS) else {
            continue;
        };
        let _ = query.canonical();
        let next = query.next_query("vbs1.x.y");
        let followed = ListQuery::parse(Some(&next), version, 1000, &BACKUPS)
            .unwrap_or_else(|e| panic!("the next link {next:?} does not parse: {e}"));
        assert_eq!(followed.marker.as_deref(), Some("vbs1.x.y"));
        assert_eq!(followed.next_query("vbs1.x.y"), next);
        let mut unmarked = followed;
        unmarked.marker = query.marker.clone();
        assert_eq!(unmarked.canonical(), query.canonical());
    }
});
