//! Sort keys: parsing as Cinder does (`api/common.py` `get_sort_params`, `db/api.py`
//! `process_sort_params`, `common/sqlalchemyutils.py` `paginate_query`), and the comparator
//! that merges regions in the order their databases produce.

use std::cmp::Ordering;

use crate::config::Collation;
use crate::error::RequestError;
use crate::cinder::item::{Item, SortValue};
use crate::cinder::microversion::Version;

use crate::cinder::resource::Resource;
pub(crate) use crate::cinder::resource::{Column, ColumnType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    Asc,
    Desc,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }
}

pub const INVALID_SORT_KEY: &str = "Invalid input received: Invalid sort key";

/// The full sort order, after Cinder appended `created_at` and `id`: what every region is
/// asked for and what the merge compares on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortSpec {
    /// (column as Cinder names it after `name` → `display_name`, direction)
    pub keys: Vec<(String, Dir)>,
}

impl SortSpec {
    /// `sort`, `sort_key`, `sort_dir` as given (first occurrence each).
    pub fn parse(
        sort: Option<&str>,
        sort_key: Option<&str>,
        sort_dir: Option<&str>,
        version: Version,
        resource: &Resource,
    ) -> Result<SortSpec, RequestError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(sort) = sort {
            if sort_key.is_some() || sort_dir.is_some() {
                return Err(RequestError::bad_request(
                    "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be \
                     used with the 'sort' parameter.",
                ));
            }
            for part in sort.trim().split(',') {
                let (key, dir) = part.split_once(':').unwrap_or((part, ""));
                let dir = if dir.is_empty() { "desc" } else { dir };
                pairs.push((key.trim().to_string(), dir.trim().to_string()));
            }
        } else {
            pairs.push((
                sort_key.unwrap_or("created_at").trim().to_string(),
                sort_dir.unwrap_or("desc").trim().to_string(),
            ));
        }
        // api/v3/backups.py _convert_sort_name, api/v3/snapshots.py _items: the first
        // `name` only, from the resource's microversion on.
        if resource
            .name_sort_since
            .is_some_and(|since| version >= since)
        {
            if let Some(p) = pairs.iter_mut().find(|(k, _)| k == "name") {
                p.0 = "display_name".to_string();
            }
        }
        let mut keys = Vec::with_capacity(pairs.len() + 2);
        for (key, dir) in pairs {
            let dir =
                match dir.as_str() {
                    "asc" => Dir::Asc,
                    "desc" => Dir::Desc,
                    _ => return Err(RequestError::bad_request(
                        "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'.",
                    )),
                };
            keys.push((key, dir));
        }
        // process_sort_params: defaults appended with the first key's direction.
        let first = keys[0].1;
        for default in ["created_at", "id"] {
            if !keys.iter().any(|(k, _)| k == default) {
                keys.push((default.to_string(), first));
            }
        }
        Ok(SortSpec { keys })
    }

    /// Check every key is a column the proxy can merge on at `version`. Cinder checks keys
    /// last, after the marker lookup, so callers do the same.
    pub fn resolve(
        &self,
        resource: &Resource,
        version: Version,
    ) -> Result<Vec<(Column, Dir)>, RequestError> {
        let unmergeable = |key: &str, why: String| {
            RequestError::bad_request(format!(
                "Invalid input received: sort key {key} is not supported by vbs-proxy{why}: \
                 the {} view does not show it, so regions cannot be merged on it",
                resource.member
            ))
        };
        self.keys
            .iter()
            .map(
                |(key, dir)| match resource.columns.iter().find(|c| c.name == key) {
                    Some(c) => match c.since {
                        Some(since) if version < since => {
                            Err(unmergeable(key, format!(" below microversion {since}")))
                        }
                        _ => Ok((*c, *dir)),
                    },
                    None if resource.hidden_columns.contains(&key.as_str()) => {
                        Err(unmergeable(key, String::new()))
                    }
                    None => Err(RequestError::bad_request(INVALID_SORT_KEY)),
                },
            )
            .collect()
    }

    /// `k1:d1,k2:d2,...` for the regions.
    pub fn to_param(&self) -> String {
        let mut s = String::new();
        for (i, (k, d)) in self.keys.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(k);
            s.push(':');
            s.push_str(d.as_str());
        }
        s
    }
}

/// Compares backups as the regions' database orders them: NULLs first ascending (sqlite,
/// MySQL), strings by the configured collation, numbers numerically. Items must have been
/// parsed with [`Comparator::fields`].
#[derive(Debug, Clone)]
pub struct Comparator {
    pub keys: Vec<(Column, Dir)>,
    pub collation: Collation,
}

impl Comparator {
    /// The detail-view fields to decode from each item, in key order.
    #[cfg(any(test, feature = "internals"))]
    pub fn fields(&self) -> Vec<&'static str> {
        self.keys.iter().map(|(c, _)| c.field).collect()
    }

    pub fn compare(&self, a: &Item, b: &Item) -> Ordering {
        for ((col, dir), (x, y)) in self.keys.iter().zip(a.values().iter().zip(b.values())) {
            let ord = compare_values(x, y, col.kind, self.collation);
            let ord = if *dir == Dir::Desc {
                ord.reverse()
            } else {
                ord
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    /// Whether Cinder's marker filter handles `item` correctly as a marker. `paginate_query`
    /// replaces NULL with the column default (`''`, 0, 1900-01-01) on both sides of its
    /// comparisons while ORDER BY keeps NULLs apart, so a marker whose value is NULL or that
    /// default loses or repeats rows (docs/cinder-behaviour.md, "Walks over nullable sort
    /// keys"). Such items are never sent as a marker; the proxy counts past them with `offset`
    /// instead.
    pub(crate) fn safe_marker(&self, item: &Item) -> bool {
        self.keys
            .iter()
            .zip(item.values())
            .all(|((col, _), v)| match v {
                // `false` is the boolean's default, `"none"` NULL.
                _ if col.kind == ColumnType::Flag => matches!(flag(v), SortValue::Int(1)),
                SortValue::Null => false,
                SortValue::Int(n) => *n != 0,
                SortValue::Text(s) => match col.kind {
                    ColumnType::Time => !s.starts_with("1900-01-01T00:00:00"),
                    _ => !s.is_empty(),
                },
            })
    }
}

pub(crate) fn compare_values(
    a: &SortValue,
    b: &SortValue,
    kind: ColumnType,
    collation: Collation,
) -> Ordering {
    if kind == ColumnType::Flag {
        return compare_values(&flag(a), &flag(b), ColumnType::Int, collation);
    }
    match (a, b) {
        (SortValue::Null, SortValue::Null) => Ordering::Equal,
        (SortValue::Null, _) => Ordering::Less,
        (_, SortValue::Null) => Ordering::Greater,
        (SortValue::Int(x), SortValue::Int(y)) => x.cmp(y),
        (SortValue::Text(x), SortValue::Text(y)) => match (kind, collation) {
            (ColumnType::Text, Collation::CaseInsensitive) => cmp_case_insensitive(x, y),
            _ => x.as_bytes().cmp(y.as_bytes()),
        },
        // Mixed types do not come from one column; numbers first, for totality.
        (SortValue::Int(_), SortValue::Text(_)) => Ordering::Less,
        (SortValue::Text(_), SortValue::Int(_)) => Ordering::Greater,
    }
}

/// A [`ColumnType::Flag`] value as the database holds it: `"true"` 1, `"false"` 0, anything
/// else (`"none"`) NULL.
fn flag(v: &SortValue) -> SortValue {
    match v {
        SortValue::Text(s) if &**s == "true" => SortValue::Int(1),
        SortValue::Text(s) if &**s == "false" => SortValue::Int(0),
        SortValue::Int(n) => SortValue::Int(*n),
        _ => SortValue::Null,
    }
}

fn cmp_case_insensitive(x: &str, y: &str) -> Ordering {
    if x.is_ascii() && y.is_ascii() {
        let xs = x.bytes().map(|b| b.to_ascii_lowercase());
        return xs.cmp(y.bytes().map(|b| b.to_ascii_lowercase()));
    }
    let lower = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<Vec<_>>();
    lower(x).cmp(&lower(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cinder::resource::BACKUPS;

    fn parse(
        sort: Option<&str>,
        key: Option<&str>,
        dir: Option<&str>,
        v: Version,
    ) -> Result<String, String> {
        SortSpec::parse(sort, key, dir, v, &BACKUPS)
            .map(|s| s.to_param())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_appended_with_first_direction() {
        let v = Version::MIN;
        assert_eq!(
            parse(None, None, None, v).unwrap(),
            "created_at:desc,id:desc"
        );
        assert_eq!(
            parse(Some("size:asc"), None, None, v).unwrap(),
            "size:asc,created_at:asc,id:asc"
        );
        assert_eq!(
            parse(Some("size"), None, None, v).unwrap(),
            "size:desc,created_at:desc,id:desc"
        );
        assert_eq!(
            parse(None, Some("status"), Some("asc"), v).unwrap(),
            "status:asc,created_at:asc,id:asc"
        );
        assert_eq!(
            parse(Some("id:asc,created_at"), None, None, v).unwrap(),
            "id:asc,created_at:desc"
        );
    }

    #[test]
    fn name_maps_to_display_name_from_3_37() {
        let s =
            SortSpec::parse(Some("name:asc"), None, None, Version::new(3, 37), &BACKUPS).unwrap();
        assert_eq!(s.keys[0].0, "display_name");
        assert!(s.resolve(&BACKUPS, Version::new(3, 0)).is_ok());
        let s =
            SortSpec::parse(Some("name:asc"), None, None, Version::new(3, 36), &BACKUPS).unwrap();
        assert_eq!(
            s.resolve(&BACKUPS, Version::new(3, 0))
                .unwrap_err()
                .to_string(),
            INVALID_SORT_KEY
        );
    }

    #[test]
    fn errors_match_cinder() {
        let e = parse(Some("size"), Some("size"), None, Version::MIN).unwrap_err();
        assert!(e.contains("deprecated and cannot be used"), "{e}");
        let e = parse(Some("size:up"), None, None, Version::MIN).unwrap_err();
        assert!(e.contains("Unknown sort direction"), "{e}");
        let e = parse(None, None, Some("up"), Version::MIN).unwrap_err();
        assert!(e.contains("Unknown sort direction"), "{e}");
        let bogus = SortSpec::parse(Some("bogus:asc"), None, None, Version::MIN, &BACKUPS).unwrap();
        assert_eq!(
            bogus
                .resolve(&BACKUPS, Version::new(3, 0))
                .unwrap_err()
                .to_string(),
            INVALID_SORT_KEY
        );
        let host = SortSpec::parse(Some("host"), None, None, Version::MIN, &BACKUPS).unwrap();
        assert!(host
            .resolve(&BACKUPS, Version::new(3, 0))
            .unwrap_err()
            .to_string()
            .contains("not supported by vbs-proxy"));
    }

    #[test]
    fn nulls_first_and_collations() {
        let t = ColumnType::Text;
        let s = |v: &str| SortValue::Text(v.into());
        let (bin, ci) = (Collation::Binary, Collation::CaseInsensitive);
        assert_eq!(
            compare_values(&SortValue::Null, &s(""), t, bin),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&s("Nightly"), &s("broken"), t, bin),
            Ordering::Less
        );
        assert_eq!(
            compare_values(&s("Nightly"), &s("broken"), t, ci),
            Ordering::Greater
        );
        assert_eq!(compare_values(&s("ABC"), &s("abc"), t, ci), Ordering::Equal);
        assert_eq!(compare_values(&s("Éa"), &s("éb"), t, ci), Ordering::Less);
        let (ten, nine) = (SortValue::Int(10), SortValue::Int(9));
        assert_eq!(
            compare_values(&ten, &nine, ColumnType::Int, bin),
            Ordering::Greater
        );
    }

    #[test]
    fn unsafe_markers_are_null_or_default_values() {
        let spec =
            SortSpec::parse(Some("name:asc"), None, None, Version::new(3, 37), &BACKUPS).unwrap();
        let cmp = Comparator {
            keys: spec.resolve(&BACKUPS, Version::new(3, 0)).unwrap(),
            collation: Collation::Binary,
        };
        let item = |name: &str| {
            let json = format!(
                r#"{{"id": "x", "name": {name}, "created_at": "2024-01-01T00:00:00.000000"}}"#
            );
            Item::from_json(json.as_bytes(), &cmp.fields()).unwrap()
        };
        assert!(cmp.safe_marker(&item("\"a\"")));
        assert!(!cmp.safe_marker(&item("\"\"")));
        assert!(!cmp.safe_marker(&item("null")));
    }

    /// A volume's `bootable` is shown as a string but ordered as the boolean column: NULL
    /// ("none") first, then false, then true; and only `true` is a safe marker value.
    #[test]
    fn a_flag_orders_as_its_boolean() {
        let s = |v: &str| SortValue::Text(v.into());
        let bin = Collation::Binary;
        let flag = ColumnType::Flag;
        assert_eq!(compare_values(&s("none"), &s("false"), flag, bin), Ordering::Less);
        assert_eq!(compare_values(&s("false"), &s("true"), flag, bin), Ordering::Less);
        assert_eq!(compare_values(&s("true"), &s("true"), flag, bin), Ordering::Equal);
        // As text, "none" would fall between the two.
        assert_eq!(compare_values(&s("none"), &s("false"), ColumnType::Text, bin), Ordering::Greater);

        use crate::cinder::resource::VOLUMES;
        let spec = SortSpec::parse(Some("bootable:asc"), None, None, Version::MIN, &VOLUMES).unwrap();
        let cmp = Comparator {
            keys: spec.resolve(&VOLUMES, Version::new(3, 0)).unwrap(),
            collation: bin,
        };
        let item = |bootable: &str| {
            let json = format!(
                r#"{{"id": "x", "bootable": "{bootable}", "created_at": "2024-01-01T00:00:00.000000"}}"#
            );
            Item::from_json(json.as_bytes(), &cmp.fields()).unwrap()
        };
        assert!(cmp.safe_marker(&item("true")));
        assert!(!cmp.safe_marker(&item("false")));
        assert!(!cmp.safe_marker(&item("none")));
    }

    /// Volumes map `name` to `display_name` at every microversion.
    #[test]
    fn a_volume_name_sort_is_display_name_at_every_version() {
        use crate::cinder::resource::VOLUMES;
        let spec = SortSpec::parse(Some("name:asc"), None, None, Version::MIN, &VOLUMES).unwrap();
        assert_eq!(spec.keys[0].0, "display_name");
        let below = SortSpec::parse(Some("volume_type_id"), None, None, Version::MIN, &VOLUMES);
        let e = below.unwrap().resolve(&VOLUMES, Version::new(3, 62)).unwrap_err();
        assert!(e.to_string().contains("below microversion 3.63"), "{e}");
    }
}
