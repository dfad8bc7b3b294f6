//! Paths are what they look like (README, Security): the proxy normalises nothing silently. A path
//! with an empty segment (`//`), a dot segment (`..`, `%2e%2E`, ...) or an encoded separator
//! (`%2F`, `%5C`) in a segment is refused before routing: URL libraries and servers on the
//! way would resolve or decode them, and the request would reach another route than the one
//! the proxy judged (`/v3/%2e%2e/backups/detail` is `/backups/detail` to the region).
//!
//! What goes upstream is rebuilt from decoded segments, each percent-encoded again
//! ([`crate::cinder::path::encode_segment`]), so every spelling of a project is one project.

use super::error::ApiError;
use crate::cinder::path::encode_segment;

fn not_found() -> ApiError {
    ApiError::NotFound("The resource could not be found.".into())
}

/// A segment as the client meant it; `None` when it cannot stand as one segment.
fn decoded(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    // Borrowed unless the segment has escapes: checking a plain path copies nothing.
    let text = percent_encoding::percent_decode_str(raw).decode_utf8().ok()?;
    let plain = !matches!(&*text, "." | "..")
        && !text.contains(['/', '\\', '\0'])
        && !raw.contains('\\');
    plain.then_some(text)
}

/// Refuse what cannot be taken at face value. A trailing `/` is allowed (`/v3/`).
pub fn check(path: &str) -> Result<(), ApiError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(not_found());
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(());
    }
    for raw in rest.split('/') {
        if raw.is_empty() || decoded(raw).is_none() {
            return Err(not_found());
        }
    }
    Ok(())
}

/// The decoded segments of a checked path.
pub fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    check(path)?;
    let rest = path.trim_start_matches('/');
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(|s| decoded(s).map(String::from).ok_or_else(not_found))
        .collect()
}

/// The path to send upstream for a pass-through request: `/v3/{project}/...` only, rebuilt
/// from encoded segments (a trailing `/` kept).
pub fn upstream_path(path: &str) -> Result<String, ApiError> {
    let segments = segments(path)?;
    if segments.len() < 3 || segments[0] != "v3" {
        return Err(not_found());
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(&encode_segment(s));
    }
    if path.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_empty_and_encoded_separators_are_refused() {
        for bad in [
            "/v3/../",
            "/v3/..",
            "/v3/%2e%2e/backups/detail",
            "/v3/%2E./backups/detail",
            "/v3/./p/backups",
            "/v3//p/backups/detail",
            "/v3/p%2Fbackups/detail",
            "/v3/p%2fbackups/detail",
            "/v3/p/backups/a%5Cb",
            "/v3/p/backups/a\\b",
            "/v3/p/backups/%00",
            "/v3/p/backups/%ff",
            "v3/p",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/v3",
            "/v3/",
            "/v3/p/backups/detail",
            "/v3/a%20b/backups/...",
            "/v3/p/volumes/x/",
        ] {
            assert!(check(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn pass_through_paths_stay_under_a_project_and_are_re_encoded() {
        assert_eq!(
            upstream_path("/v3/p/volumes/detail").unwrap(),
            "/v3/p/volumes/detail"
        );
        assert_eq!(
            upstream_path("/v3/%70/volumes/a%3Ab/").unwrap(),
            "/v3/p/volumes/a%3Ab/"
        );
        for outside in ["/v3/p", "/v3/p/", "/v3", "/v2/p/volumes", "/healthcheck"] {
            assert!(upstream_path(outside).is_err(), "{outside}");
        }
    }
}
