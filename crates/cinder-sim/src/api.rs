//! The part of Cinder's API layer the simulated region needs, written from Cinder's Python
//! (`cinder/api/openstack/api_version_request.py`, `wsgi.py`, `cinder/api/common.py`) and not
//! shared with the proxy: the tests compare one against the other, so a parsing bug in either
//! shows up as a difference.

use std::fmt;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const MIN: Version = Version::new(3, 0);

    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// `APIVersionRequest.__init__`: `^([1-9]\d*)\.([1-9]\d*|0)$`.
    pub fn parse(text: &str) -> Option<Version> {
        let (major, minor) = text.split_once('.')?;
        let number = |s: &str, zero_ok: bool| -> Option<u32> {
            let digits = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let leading_zero = s.len() > 1 && s.starts_with('0');
            if !digits || leading_zero || (!zero_ok && s == "0") {
                return None;
            }
            s.parse().ok()
        };
        Some(Version::new(number(major, false)?, number(minor, true)?))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A Cinder fault: `{"<kind>": {"code": N, "message": "..."}}`.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl Fault {
    pub fn bad_request(message: impl Into<String>) -> Fault {
        Fault {
            status: StatusCode::BAD_REQUEST,
            kind: "badRequest",
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Fault {
        Fault {
            status: StatusCode::NOT_FOUND,
            kind: "itemNotFound",
            message: message.into(),
        }
    }

    /// The answer, with the version headers Cinder adds to faults raised inside the API.
    pub fn answer(&self, version: Option<Version>) -> Response {
        let body = json!({ self.kind: { "code": self.status.as_u16(), "message": self.message } });
        json_answer(self.status, body.to_string(), version)
    }
}

/// A JSON answer; with a version, the `OpenStack-API-Version` and `Vary` Cinder sends.
pub fn json_answer(status: StatusCode, body: String, version: Option<Version>) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(v) = version {
        let value = HeaderValue::try_from(format!("volume {v}")).expect("ascii");
        h.insert("openstack-api-version", value);
        h.insert(
            header::VARY,
            HeaderValue::from_static("OpenStack-API-Version"),
        );
    }
    r
}

/// `wsgi.Request.set_api_version_request`: the header's `volume` entry against `[3.0, max]`.
/// Cinder answers `volume` alone with a 500; the simulation says 400, as the proxy does.
pub fn negotiate(header: Option<&[u8]>, max: Version) -> Result<Version, Fault> {
    let Some(raw) = header else {
        return Ok(Version::MIN);
    };
    let malformed = || {
        Fault::bad_request(
            "The server could not comply with the request since it is either malformed or \
             otherwise incorrect.",
        )
    };
    let text = std::str::from_utf8(raw).map_err(|_| malformed())?;
    let entry = text
        .split(',')
        .map(str::trim)
        .find(|e| e.contains("volume"))
        .ok_or_else(malformed)?;
    let invalid = |s: &str| {
        Fault::bad_request(format!(
            "API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."
        ))
    };
    let words: Vec<&str> = entry.split_whitespace().collect();
    let [_, requested] = words[..] else {
        return Err(invalid(entry));
    };
    if requested == "latest" {
        return Ok(max);
    }
    let version = Version::parse(requested).ok_or_else(|| invalid(requested))?;
    if version < Version::MIN || version > max {
        return Err(Fault {
            status: StatusCode::NOT_ACCEPTABLE,
            kind: "computeFault",
            message: format!(
                "Version {version} is not supported by the API. Minimum is {} and maximum is {max}.",
                Version::MIN
            ),
        });
    }
    Ok(version)
}

/// webob's `request.params`: `&`-separated pairs, `+` as space, percent-decoded (invalid
/// UTF-8 replaced), in order, repeats kept.
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(pair), String::new()),
        })
        .collect()
}

/// `urllib.parse.urlencode` of pairs (`quote_plus`, safe `_.-~`).
pub fn urlencode(pairs: &[(String, String)]) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~')
        .remove(b' ');
    let quote = |s: &str| {
        percent_encoding::utf8_percent_encode(s, KEEP)
            .to_string()
            .replace(' ', "+")
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// oslo `strutils.bool_from_string(strict=True)`.
pub fn bool_from_string(s: &str) -> Option<bool> {
    const TRUE: [&str; 6] = ["1", "t", "true", "on", "y", "yes"];
    const FALSE: [&str; 6] = ["0", "f", "false", "off", "n", "no"];
    let s = s.trim().to_lowercase();
    if TRUE.contains(&s.as_str()) {
        Some(true)
    } else if FALSE.contains(&s.as_str()) {
        Some(false)
    } else {
        None
    }
}

/// Python's `int()` of a string: whitespace, a sign, digits with single `_` between them.
fn python_int(s: &str) -> Option<i128> {
    let s = s.trim();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let groups: Vec<&str> = digits.split('_').collect();
    if groups
        .iter()
        .any(|g| g.is_empty() || !g.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let mut n: i128 = 0;
    for c in groups.concat().chars() {
        n = n.saturating_mul(10).saturating_add(c.to_digit(10)? as i128);
    }
    Some(sign * n)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Asc,
    Desc,
}

/// A listing request's pagination, as `common.get_pagination_params` and
/// `common.get_sort_params` pop them off `request.params` (the first of a repeated key; the
/// rest stay behind as filters), and `with_count` (the last value, webob's `get`).
#[derive(Debug)]
pub struct Listing {
    pub limit: usize,
    pub offset: usize,
    pub marker: Option<String>,
    /// After Cinder's defaults: `created_at` and `id` appended with the first direction.
    pub sort: Vec<(String, Dir)>,
    pub with_count: bool,
    pub filters: Vec<(String, String)>,
}

impl Listing {
    /// `name_sort_since`: from this microversion a sort on `name` means `display_name`.
    pub fn parse(
        raw: Option<&str>,
        version: Version,
        max_limit: usize,
        name_sort_since: Version,
    ) -> Result<Listing, Fault> {
        let mut params = query_pairs(raw.unwrap_or(""));
        let mut pop = |key: &str| {
            let at = params.iter().position(|(k, _)| k == key)?;
            Some(params.remove(at).1)
        };
        let marker = pop("marker");
        let limit = match pop("limit") {
            None => max_limit,
            Some(v) => {
                let n = python_int(&v)
                    .ok_or_else(|| Fault::bad_request("limit param must be an integer"))?;
                if n < 0 {
                    return Err(Fault::bad_request("limit param must be positive"));
                }
                n.min(max_limit as i128) as usize
            }
        };
        let offset = match pop("offset") {
            None => 0,
            Some(v) => {
                let n = python_int(&v)
                    .ok_or_else(|| Fault::bad_request("offset must be an integer"))?;
                if n < 0 {
                    return Err(Fault::bad_request("offset must be >= 0"));
                }
                const DB_MAX_INT: i128 = 0x7FFF_FFFF;
                if n > DB_MAX_INT {
                    return Err(Fault::bad_request(format!(
                        "offset must be <= {DB_MAX_INT}"
                    )));
                }
                n as usize
            }
        };
        let (sort, sort_key, sort_dir) = (pop("sort"), pop("sort_key"), pop("sort_dir"));
        let mut sort = sort_keys(sort, sort_key, sort_dir)?;
        // api/v3/backups.py _convert_sort_name (BACKUP_SORT_NAME, 3.37), api/v3/snapshots.py
        // _items (SNAPSHOT_SORT, 3.30): the first `name`.
        if version >= name_sort_since {
            if let Some(key) = sort.iter_mut().find(|(k, _)| k == "name") {
                key.0 = "display_name".into();
            }
        }
        let first = sort[0].1;
        for default in ["created_at", "id"] {
            if sort.iter().all(|(k, _)| k != default) {
                sort.push((default.into(), first));
            }
        }
        let mut with_count = false;
        if version >= Version::new(3, 45) {
            if let Some(v) = params
                .iter()
                .rev()
                .find(|(k, _)| k == "with_count")
                .map(|p| p.1.clone())
            {
                with_count = bool_from_string(&v).ok_or_else(|| {
                    Fault::bad_request(format!("Value '{v}' for 'with_count' is not a boolean."))
                })?;
            }
            params.retain(|(k, _)| k != "with_count");
        }
        Ok(Listing {
            limit,
            offset,
            marker,
            sort,
            with_count,
            filters: params,
        })
    }
}

/// `common.get_sort_params`: `sort=k1[:d1],...` or the deprecated `sort_key`/`sort_dir`.
fn sort_keys(
    sort: Option<String>,
    sort_key: Option<String>,
    sort_dir: Option<String>,
) -> Result<Vec<(String, Dir)>, Fault> {
    let pairs: Vec<(String, String)> = match sort {
        Some(_) if sort_key.is_some() || sort_dir.is_some() => {
            return Err(Fault::bad_request(
                "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used \
                 with the 'sort' parameter.",
            ))
        }
        Some(sort) => sort
            .trim()
            .split(',')
            .map(|part| {
                let mut it = part.splitn(2, ':');
                let key = it.next().unwrap_or("").trim().to_string();
                let dir = it.next().map(str::trim).filter(|d| !d.is_empty());
                (key, dir.unwrap_or("desc").to_string())
            })
            .collect(),
        None => vec![(
            sort_key
                .unwrap_or_else(|| "created_at".into())
                .trim()
                .to_string(),
            sort_dir.unwrap_or_else(|| "desc".into()).trim().to_string(),
        )],
    };
    pairs
        .into_iter()
        .map(|(key, dir)| match dir.as_str() {
            "asc" => Ok((key, Dir::Asc)),
            "desc" => Ok((key, Dir::Desc)),
            _ => Err(Fault::bad_request(
                "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'.",
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_is_popped_like_webob() {
        let l = Listing::parse(
            Some("limit=2&limit=5&sort=size:asc&name=x"),
            Version::new(3, 45),
            1000,
            Version::new(3, 37),
        )
        .unwrap();
        assert_eq!(l.limit, 2);
        assert_eq!(
            l.filters,
            [("limit".into(), "5".into()), ("name".into(), "x".into())]
        );
        assert_eq!(
            l.sort,
            [
                ("size".into(), Dir::Asc),
                ("created_at".into(), Dir::Asc),
                ("id".into(), Dir::Asc)
            ]
        );
        assert!(Listing::parse(Some("limit=-1"), Version::MIN, 10, Version::MIN).is_err());
        assert_eq!(
            Listing::parse(Some("limit=1_0"), Version::MIN, 1000, Version::MIN)
                .unwrap()
                .limit,
            10
        );
        assert_eq!(
            Listing::parse(Some("limit=5000"), Version::MIN, 1000, Version::MIN)
                .unwrap()
                .limit,
            1000
        );
    }

    #[test]
    fn versions_and_encoding() {
        assert_eq!(Version::parse("3.45"), Some(Version::new(3, 45)));
        assert_eq!(Version::parse("3.01"), None);
        assert_eq!(Version::parse("0.1"), None);
        assert!(negotiate(Some(b"volume 3.99"), Version::new(3, 71)).is_err());
        assert_eq!(
            urlencode(&[
                ("sort".into(), "created_at:desc".into()),
                ("name~".into(), "a b".into())
            ]),
            "sort=created_at%3Adesc&name~=a+b"
        );
    }
}
