//! The listing query, parsed once into types, with Cinder's validation and messages
//! (`cinder/api/common.py` `get_pagination_params`, `get_sort_params`;
//! `api/contrib/backups.py` `_get_backups`).

use crate::cinder::resource::Resource;
use crate::cinder::query::{decode_query, push_pair};
use crate::error::RequestError;
use crate::listing::sort::SortSpec;
use crate::cinder::microversion::Version;

/// oslo `validate_integer` bound used for `offset` (constants.DB_MAX_INT).
const DB_MAX_INT: i128 = 0x7FFF_FFFF;

/// Parameters that the proxy owns; everything else is a filter for the regions.
const PAGINATION_KEYS: &[&str] = &["limit", "offset", "marker", "sort", "sort_key", "sort_dir"];

#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Every decoded parameter in the order given: the next link repeats them.
    pub params: Vec<(String, String)>,
    pub limit: usize,
    pub offset: u64,
    pub marker: Option<String>,
    pub sort: SortSpec,
    /// `with_count` at ≥ 3.45 and true.
    pub with_count: bool,
    /// Forwarded to every region as given (filters, and `with_count` below 3.45).
    pub filters: Vec<(String, String)>,
}

impl ListQuery {
    pub fn parse(
        raw: Option<&str>,
        version: Version,
        max_limit: usize,
        resource: &Resource,
    ) -> Result<ListQuery, RequestError> {
        let params = decode_query(raw.unwrap_or(""));
        for key in PAGINATION_KEYS {
            if params.iter().filter(|(k, _)| k == key).count() > 1 {
                // Cinder pops the first and leaves the rest as a filter, which then fails or
                // matches nothing; the proxy says so plainly.
                return Err(RequestError::bad_request(format!(
                    "Query parameter '{key}' may be given only once."
                )));
            }
        }
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };

        let limit = parse_limit(get("limit"), max_limit)?;
        let marker = get("marker").map(str::to_string);
        let offset = parse_offset(get("offset"))?;
        let sort = SortSpec::parse(
            get("sort"),
            get("sort_key"),
            get("sort_dir"),
            version,
            resource,
        )?;

        let count_applies = version >= Version::COUNT;
        let mut with_count = false;
        if count_applies {
            // webob's MultiDict.get: the last value.
            if let Some((_, v)) = params.iter().rev().find(|(k, _)| k == "with_count") {
                with_count = parse_bool(v).ok_or_else(|| {
                    RequestError::bad_request(format!(
                        "Value '{v}' for 'with_count' is not a boolean."
                    ))
                })?;
            }
        }
        let filters = params
            .iter()
            .filter(|(k, _)| !PAGINATION_KEYS.contains(&k.as_str()))
            .filter(|(k, _)| !(count_applies && k == "with_count"))
            .cloned()
            .collect();
        Ok(ListQuery {
            params,
            limit,
            offset,
            marker,
            sort,
            with_count,
            filters,
        })
    }

    /// The query as a cache key: every parameter that shapes the answer, defaults filled,
    /// filters sorted by name (repeats kept in order: the last one wins upstream) and
    /// re-encoded, so equivalent spellings share an entry.
    pub fn canonical(&self) -> String {
        let mut filters: Vec<&(String, String)> = self.filters.iter().collect();
        filters.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = format!(
            "limit={}&offset={}&with_count={}&sort={}",
            self.limit,
            self.offset,
            self.with_count,
            self.sort.to_param()
        );
        if let Some(m) = &self.marker {
            push_pair(&mut out, "marker", m);
        }
        for (k, v) in filters {
            push_pair(&mut out, k, v);
        }
        out
    }

    /// The query string of the next link: the client's parameters in order, `marker` removed
    /// and appended with the new value, encoded like Python's `urllib.parse.urlencode`.
    pub fn next_query(&self, marker: &str) -> String {
        let mut out = String::new();
        for (k, v) in self.params.iter().filter(|(k, _)| k != "marker") {
            push_pair(&mut out, k, v);
        }
        push_pair(&mut out, "marker", marker);
        out
    }
}

fn parse_limit(raw: Option<&str>, max_limit: usize) -> Result<usize, RequestError> {
    let Some(raw) = raw else { return Ok(max_limit) };
    let n =
        py_int(raw).ok_or_else(|| RequestError::bad_request("limit param must be an integer"))?;
    if n < 0 {
        return Err(RequestError::bad_request("limit param must be positive"));
    }
    // A limit above osapi_max_limit is capped, silently (common.py _get_limit_param).
    Ok(n.min(max_limit as i128) as usize)
}

fn parse_offset(raw: Option<&str>) -> Result<u64, RequestError> {
    let Some(raw) = raw else { return Ok(0) };
    let n = py_int(raw).ok_or_else(|| RequestError::bad_request("offset must be an integer"))?;
    if n < 0 {
        return Err(RequestError::bad_request("offset must be >= 0"));
    }
    if n > DB_MAX_INT {
        return Err(RequestError::bad_request(format!(
            "offset must be <= {DB_MAX_INT}"
        )));
    }
    Ok(n as u64)
}

/// Python's `int(str)` for base 10: surrounding whitespace, a sign, digits with single
/// underscores between them. Saturates instead of growing without bound.
pub(crate) fn py_int(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut n: i128 = 0;
    for b in digits.bytes() {
        match b {
            b'_' => continue,
            b'0'..=b'9' => n = n.saturating_mul(10).saturating_add((b - b'0') as i128),
            _ => return None,
        }
    }
    Some(if neg { -n } else { n })
}

/// oslo `strutils.bool_from_string(strict=True)`.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::cinder::resource::BACKUPS;

    fn q(raw: &str) -> Result<ListQuery, String> {
        ListQuery::parse(Some(raw), Version::new(3, 45), 1000, &BACKUPS).map_err(|e| e.to_string())
    }

    #[test]
    fn limit_and_offset_like_cinder() {
        assert_eq!(q("").unwrap().limit, 1000);
        assert_eq!(q("limit=5000").unwrap().limit, 1000);
        assert_eq!(q("limit=01").unwrap().limit, 1);
        assert_eq!(q("limit=%201_0%20").unwrap().limit, 10);
        assert_eq!(q("limit=-1").unwrap_err(), "limit param must be positive");
        assert_eq!(
            q("limit=abc").unwrap_err(),
            "limit param must be an integer"
        );
        assert_eq!(q("limit=").unwrap_err(), "limit param must be an integer");
        assert_eq!(q("offset=abc").unwrap_err(), "offset must be an integer");
        assert_eq!(q("offset=-1").unwrap_err(), "offset must be >= 0");
        assert_eq!(
            q("offset=2147483648").unwrap_err(),
            "offset must be <= 2147483647"
        );
        assert_eq!(q("offset=7").unwrap().offset, 7);
        assert_eq!(
            q("limit=99999999999999999999999999999999999999999")
                .unwrap()
                .limit,
            1000
        );
    }

    #[test]
    fn with_count_and_filters() {
        let lq = q("name=a&with_count=true&status=error&limit=2").unwrap();
        assert!(lq.with_count);
        assert_eq!(
            lq.filters,
            vec![
                ("name".into(), "a".into()),
                ("status".into(), "error".into())
            ]
        );
        assert_eq!(
            q("with_count=abc").unwrap_err(),
            "Value 'abc' for 'with_count' is not a boolean."
        );
        // Below 3.45 it is an ordinary filter, for the regions to judge.
        let old =
            ListQuery::parse(Some("with_count=true"), Version::new(3, 44), 1000, &BACKUPS).unwrap();
        assert!(!old.with_count);
        assert_eq!(old.filters, vec![("with_count".into(), "true".into())]);
    }

    #[test]
    fn next_query_is_python_urlencode() {
        let lq = q("marker=x&sort=created_at:desc&name~=a%20b*&limit=2").unwrap();
        assert_eq!(
            lq.next_query("m"),
            "sort=created_at%3Adesc&name~=a+b%2A&limit=2&marker=m"
        );
    }

    #[test]
    fn equivalent_queries_share_a_canonical_form() {
        let c = |raw: &str| q(raw).unwrap().canonical();
        assert_eq!(c(""), c("limit=1000"));
        assert_eq!(c("status=a&name=b"), c("name=b&status=a"));
        assert_eq!(c("name=a%20b"), c("name=a+b"));
        assert_eq!(c("sort=size"), c("sort=size:desc"));
        assert_eq!(c("sort_key=size&sort_dir=asc"), c("sort=size:asc"));
        assert_eq!(c("with_count=true"), c("with_count=yes"));
        assert_ne!(c("status=a&status=b"), c("status=b&status=a"));
        assert_ne!(c("limit=5"), c("limit=6"));
        assert_ne!(c("marker=x"), c(""));
    }

    #[test]
    fn duplicate_pagination_keys_are_rejected() {
        assert!(q("limit=1&limit=2")
            .unwrap_err()
            .contains("'limit' may be given only once"));
        assert_eq!(q("status=a&status=b").unwrap().filters.len(), 2);
    }
}
