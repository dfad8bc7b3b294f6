//! The cursor decoder: any marker is a cursor or an error, never a panic; and whatever
//! positions a cursor carries come back as they went in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vbs_proxy::listing::cursor::{Cursor, CursorKey, Position};

fuzz_target!(|data: &[u8]| {
    let key = CursorKey::new(b"fuzzing-cursor-secret");
    let binding = b"/v3/p\n3.0\ncreated_at:desc,id:desc\n";
    if let Ok(text) = std::str::from_utf8(data) {
        for regions in [1, 3] {
            let _ = Cursor::decode(text, &key, binding, regions);
        }
    }
    // Round trip: positions made from the input.
    let positions: Vec<Position> = data
        .chunks(9)
        .map(|c| Position {
            marker: (c.first().copied().unwrap_or(0) % 2 == 0)
                .then(|| String::from_utf8_lossy(&c[1.min(c.len())..]).into_owned()),
            skip: c.iter().map(|&b| b as u64).sum(),
        })
        .collect();
    let cursor = Cursor { positions };
    let encoded = cursor.encode(&key, binding);
    let decoded = Cursor::decode(&encoded, &key, binding, cursor.positions.len())
        .expect("a cursor of ours decodes");
    assert_eq!(decoded, cursor);
    assert!(Cursor::decode(&encoded, &key, b"another query", cursor.positions.len()).is_err());
});
