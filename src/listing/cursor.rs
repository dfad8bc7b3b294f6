//! Opaque, signed pagination cursors: the proxy's own `marker` in next links.
//!
//! A cursor holds, per region, where the walk stands in that region: after backup `marker`
//! (or at the start) and then `skip` more rows. It is bound to the query it came from (the
//! HMAC covers a digest of project, microversion, filters, sort and regions), so a cursor
//! replayed on another query, or edited, is refused with a 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const PREFIX: &str = "vbs1.";
const MAC_LEN: usize = 16;

/// Where a walk stands in one region.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The last row passed whose sort values Cinder's marker filter handles exactly.
    pub marker: Option<String>,
    /// Rows passed after `marker` (rows that are unsafe as markers).
    pub skip: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub positions: Vec<Position>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("the marker is not a cursor this proxy issued for this query")]
    Invalid,
}

#[derive(Clone)]
pub struct CursorKey(Vec<u8>);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    pub fn new(secret: &[u8]) -> CursorKey {
        CursorKey(secret.to_vec())
    }

    pub(crate) fn random() -> CursorKey {
        CursorKey(rand::random::<[u8; 32]>().to_vec())
    }

    fn mac(&self, binding: &[u8], payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(&(binding.len() as u64).to_be_bytes());
        mac.update(binding);
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

/// A proxy cursor, as opposed to a plain backup id given by a client.
pub(crate) fn is_cursor(marker: &str) -> bool {
    marker.starts_with(PREFIX)
}

impl Cursor {
    pub fn encode(&self, key: &CursorKey, binding: &[u8]) -> String {
        let payload = serde_json::to_vec(&self.positions).expect("positions serialise");
        let mac = key.mac(binding, &payload);
        format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    pub fn decode(
        s: &str,
        key: &CursorKey,
        binding: &[u8],
        regions: usize,
    ) -> Result<Cursor, CursorError> {
        let rest = s.strip_prefix(PREFIX).ok_or(CursorError::Invalid)?;
        let (payload, mac) = rest.split_once('.').ok_or(CursorError::Invalid)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| CursorError::Invalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| CursorError::Invalid)?;
        // Constant-time comparison through the hmac crate.
        let mut check = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
        check.update(&(binding.len() as u64).to_be_bytes());
        check.update(binding);
        check.update(&payload);
        check
            .verify_truncated_left(&mac)
            .map_err(|_| CursorError::Invalid)?;
        if mac.len() != MAC_LEN {
            return Err(CursorError::Invalid);
        }
        let positions: Vec<Position> =
            serde_json::from_slice(&payload).map_err(|_| CursorError::Invalid)?;
        if positions.len() != regions {
            return Err(CursorError::Invalid);
        }
        Ok(Cursor { positions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        Cursor {
            positions: vec![
                Position {
                    marker: Some("b-1".into()),
                    skip: 0,
                },
                Position {
                    marker: None,
                    skip: 3,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let key = CursorKey::new(b"0123456789abcdef");
        let s = sample().encode(&key, b"q1");
        assert!(is_cursor(&s));
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
        assert_eq!(Cursor::decode(&s, &key, b"q1", 2).unwrap(), sample());
    }

    #[test]
    fn tampered_foreign_or_rebound_cursors_fail() {
        let key = CursorKey::new(b"0123456789abcdef");
        let s = sample().encode(&key, b"q1");
        assert_eq!(
            Cursor::decode(&s, &key, b"q2", 2),
            Err(CursorError::Invalid)
        );
        assert_eq!(
            Cursor::decode(&s, &CursorKey::random(), b"q1", 2),
            Err(CursorError::Invalid)
        );
        assert_eq!(
            Cursor::decode(&s, &key, b"q1", 3),
            Err(CursorError::Invalid)
        );
        let mut bytes = s.clone().into_bytes();
        let i = PREFIX.len() + 3;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(
            Cursor::decode(&tampered, &key, b"q1", 2),
            Err(CursorError::Invalid)
        );
        assert_eq!(
            Cursor::decode("vbs1.x", &key, b"q1", 2),
            Err(CursorError::Invalid)
        );
        let short_mac = &s[..s.len() - 4];
        assert_eq!(
            Cursor::decode(short_mac, &key, b"q1", 2),
            Err(CursorError::Invalid)
        );
    }
}
