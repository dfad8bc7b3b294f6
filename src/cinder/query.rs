//! A query string as Cinder's stack reads and writes it: webob's form decoding on the way in,
//! `urllib.parse.urlencode` on the way out (the regions' queries, the next links, the keys).

/// `application/x-www-form-urlencoded` decoding as webob does it (`+` is a space, invalid
/// UTF-8 replaced); empty values kept, bare keys get an empty value.
pub(crate) fn decode_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// One `k=v` pair as `urllib.parse.urlencode` writes it (`quote_plus`, safe = `_.-~`).
pub(crate) fn push_pair(out: &mut String, k: &str, v: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    quote_plus(out, k);
    out.push('=');
    quote_plus(out, v);
}

pub fn quote_plus(out: &mut String, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[(b >> 4) as usize] as char);
                out.push(HEX[(b & 15) as usize] as char);
            }
        }
    }
}
