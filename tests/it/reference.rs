//! What one Cinder holding the union answers: filter, ORDER BY (NULLs first ascending),
//! rows strictly after the marker in that order, OFFSET, LIMIT, and the next-link rule of
//! `common.py _get_collection_links`. Written apart from both the proxy's merge and the
//! simulated region; its marker semantics are the exact ones (no NULL coalescing).

use std::cmp::Ordering;

use cinder_sim::Backup;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Val<'a> {
    Null,
    Int(i64),
    Str(&'a str),
}

pub fn value<'a>(b: &'a Backup, column: &str) -> Val<'a> {
    let opt = |s: &'a Option<String>| s.as_deref().map_or(Val::Null, Val::Str);
    match column {
        "id" => Val::Str(&b.id),
        "created_at" => Val::Str(&b.created_at),
        "updated_at" => opt(&b.updated_at),
        "display_name" => opt(&b.display_name),
        "display_description" => opt(&b.display_description),
        "status" => Val::Str(&b.status),
        "size" => Val::Int(b.size),
        "object_count" => b.object_count.map_or(Val::Null, Val::Int),
        "volume_id" => Val::Str(&b.volume_id),
        other => panic!("reference does not model column {other}"),
    }
}

pub struct RefQuery<'a> {
    pub project: &'a str,
    pub status: Option<&'a str>,
    /// (column, ascending)
    pub keys: Vec<(&'a str, bool)>,
    pub case_insensitive: bool,
    pub limit: usize,
    pub offset: usize,
    pub with_count: bool,
}

fn cmp_val(a: Val<'_>, b: Val<'_>, ci: bool) -> Ordering {
    match (a, b) {
        (Val::Null, Val::Null) => Ordering::Equal,
        (Val::Null, _) => Ordering::Less,
        (_, Val::Null) => Ordering::Greater,
        (Val::Int(x), Val::Int(y)) => x.cmp(&y),
        (Val::Str(x), Val::Str(y)) if ci => x.to_lowercase().cmp(&y.to_lowercase()),
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        _ => panic!("mixed types"),
    }
}

impl RefQuery<'_> {
    /// The full key list after Cinder appends created_at and id with the first direction.
    fn full_keys(&self) -> Vec<(&str, bool)> {
        let mut keys = self.keys.clone();
        let first = keys[0].1;
        for d in ["created_at", "id"] {
            if !keys.iter().any(|(k, _)| *k == d) {
                keys.push((d, first));
            }
        }
        keys
    }

    pub fn cmp(&self, a: &Backup, b: &Backup) -> Ordering {
        for (k, asc) in self.full_keys() {
            // Timestamps never take the collation; ids and names do.
            let ci = self.case_insensitive && !k.ends_with("_at");
            let o = cmp_val(value(a, k), value(b, k), ci);
            let o = if asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// The matching rows, in order.
    pub fn all<'b>(&self, union: &'b [Backup]) -> Vec<&'b Backup> {
        let mut rows: Vec<&Backup> = union
            .iter()
            .filter(|b| !b.deleted && b.project_id == self.project)
            .filter(|b| self.status.is_none_or(|s| b.status == s))
            .collect();
        rows.sort_by(|a, b| self.cmp(a, b));
        rows
    }

    /// One page after `marker`: (ids, count, has next link).
    pub fn page(
        &self,
        union: &[Backup],
        marker: Option<&Backup>,
    ) -> (Vec<String>, Option<usize>, bool) {
        let all = self.all(union);
        let count = self.with_count.then_some(all.len());
        let page: Vec<String> = all
            .iter()
            .filter(|b| marker.is_none_or(|m| self.cmp(b, m) == Ordering::Greater))
            .skip(self.offset)
            .take(self.limit)
            .map(|b| b.id.clone())
            .collect();
        let item_count = match count {
            Some(c) if c > 0 => c,
            _ => page.len(),
        };
        let next = !page.is_empty() && self.limit <= item_count;
        (page, count, next)
    }
}
