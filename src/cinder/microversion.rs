//! `OpenStack-API-Version: volume X.Y` parsing and negotiation, as
//! `cinder/api/openstack/wsgi.py` (`set_api_version_request`) and
//! `api_version_request.py` do it.

use std::fmt;

use crate::error::RequestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const MIN: Version = Version::new(3, 0);
    /// `with_count` (SUPPORT_COUNT_INFO).
    pub(crate) const COUNT: Version = Version::new(3, 45);

    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// `^([1-9]\d*)\.([1-9]\d*|0)$`, Cinder's APIVersionRequest format.
    pub fn parse(s: &str) -> Option<Version> {
        let (major, minor) = s.split_once('.')?;
        let canonical = |p: &str| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'))
        };
        if !canonical(major) || major == "0" || !canonical(minor) {
            return None;
        }
        Some(Version::new(major.parse().ok()?, minor.parse().ok()?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Resolve the request header against `[3.0, max]`.
///
/// Cinder answers `volume` alone or `volume 3.0 extra` with a 500 (an unhandled ValueError);
/// a caller's mistake is never a 500 here, so those get the invalid-format 400 instead.
pub fn negotiate(header: Option<&[u8]>, max: Version) -> Result<Version, RequestError> {
    let Some(raw) = header else {
        return Ok(Version::MIN);
    };
    let comply = || {
        RequestError::bad_request(
            "The server could not comply with the request since it is either malformed or \
             otherwise incorrect.",
        )
    };
    let value = std::str::from_utf8(raw).map_err(|_| comply())?;
    // First comma-separated entry that mentions "volume" (case-sensitive, like Cinder).
    let entry = value
        .split(',')
        .find(|e| e.contains("volume"))
        .ok_or_else(comply)?;
    let mut words = entry.split_whitespace();
    let (_service, requested) = match (words.next(), words.next(), words.next()) {
        (Some(s), Some(v), None) => (s, v),
        _ => {
            return Err(RequestError::bad_request(format!(
                "API Version String {} is of invalid format. Must be of format \
                 MajorNum.MinorNum.",
                entry.trim()
            )))
        }
    };
    if requested == "latest" {
        return Ok(max);
    }
    let version = Version::parse(requested).ok_or_else(|| {
        RequestError::bad_request(format!(
            "API Version String {requested} is of invalid format. Must be of format \
             MajorNum.MinorNum."
        ))
    })?;
    if version < Version::MIN || version > max {
        return Err(RequestError::NotAcceptable(format!(
            "Version {version} is not supported by the API. Minimum is {} and maximum is {max}.",
            Version::MIN
        )));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Version = Version::new(3, 71);

    /// The status each error maps to (http/error.rs), and its message.
    fn neg(h: &str) -> Result<Version, (u16, String)> {
        negotiate(Some(h.as_bytes()), MAX).map_err(|e| match e {
            RequestError::BadRequest(m) => (400, m),
            RequestError::NotAcceptable(m) => (406, m),
            other => panic!("not a version error: {other}"),
        })
    }

    #[test]
    fn parses_like_cinder() {
        assert_eq!(negotiate(None, MAX).unwrap(), Version::MIN);
        assert_eq!(neg("volume 3.45").unwrap(), Version::new(3, 45));
        assert_eq!(neg("volume latest").unwrap(), MAX);
        assert_eq!(
            neg("compute 2.1, volume 3.45").unwrap(),
            Version::new(3, 45)
        );
        assert_eq!(neg("volume 3.0").unwrap(), Version::MIN);
    }

    #[test]
    fn rejects_like_cinder() {
        let (s, b) = neg("volume 3.99").unwrap_err();
        assert_eq!(s, 406);
        assert!(b.contains(
            "Version 3.99 is not supported by the API. Minimum is 3.0 and maximum is 3.71."
        ));
        assert_eq!(neg("volume 2.0").unwrap_err().0, 406);
        let (s, b) = neg("volume abc").unwrap_err();
        assert_eq!(s, 400);
        assert!(
            b.contains("API Version String abc is of invalid format."),
            "{b}"
        );
        assert_eq!(neg("volume 3").unwrap_err().0, 400);
        assert_eq!(neg("volume 3.01").unwrap_err().0, 400);
        let (s, b) = neg("VOLUME 3.45").unwrap_err();
        assert_eq!(s, 400);
        assert!(b.contains("could not comply"), "{b}");
        assert!(neg("").unwrap_err().1.contains("could not comply"));
        assert!(neg("compute 2.1")
            .unwrap_err()
            .1
            .contains("could not comply"));
        // Cinder: 500; the proxy: 400, a caller's mistake.
        assert_eq!(neg("volume").unwrap_err().0, 400);
        assert_eq!(neg("volume 3.0 extra").unwrap_err().0, 400);
    }
}
