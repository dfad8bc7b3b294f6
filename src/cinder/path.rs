//! A path sent to a region is built from segments, each percent-encoded here, so that what a
//! client put in an id can never leave its segment (README, "Security").

/// Whether `s` can be sent as one path segment. Empty and dot segments cannot: every URL
/// library and HTTP server on the way would remove or resolve them (`%2E%2E` included, per
/// the WHATWG URL standard), so the request would reach another route. No Cinder object has
/// such an id.
pub(crate) fn is_path_segment(s: &str) -> bool {
    !matches!(s, "" | "." | "..")
}

/// Percent-encode one path segment (everything but RFC 3986 unreserved characters), so a `/`,
/// `?` or `%` in an id stays inside its segment.
pub(crate) fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("ab-12"), "ab-12");
        assert_eq!(encode_segment("a/b?c"), "a%2Fb%3Fc");
        assert_eq!(encode_segment("%64etail"), "%2564etail");
        assert!(!is_path_segment("..") && !is_path_segment(".") && !is_path_segment(""));
        assert!(is_path_segment("detail") && is_path_segment("..."));
    }
}
