//! Rendering a page as Cinder does: the envelope, the items with their hrefs rewritten, and
//! Cinder's rule for when a next link is given.

use crate::cinder::item::Item;
use super::links::Rewriter;
use super::request::ListQuery;
use crate::cinder::resource::Resource;

/// Which view of the collection: Cinder's detail view, or the summary (`GET .../backups`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Detail,
    /// `GET .../backups`: `id`, `name`, `links` only.
    Summary,
}

/// `common.py _get_collection_links`: a link when the page is non-empty and `limit` is at
/// most the page length — or the total count when with_count is on (`count or len(items)`).
pub(crate) fn next_link(query: &ListQuery, len: usize, count: Option<u64>) -> bool {
    let item_count = match count {
        Some(c) if c > 0 => c,
        _ => len as u64,
    };
    len > 0 && query.limit as u64 <= item_count
}

/// `{"<collection>": [...], "<collection>_links": [...], "count": N}`, in Cinder's key order,
/// items copied from the regions' bytes with hrefs rewritten. With a next link, the body is
/// split where its href goes: the href repeats each client's own parameters.
pub fn render(
    resource: &Resource,
    items: &[(usize, Item)],
    view: View,
    rewriter: &Rewriter<'_>,
    next: bool,
    count: Option<u64>,
) -> (Vec<u8>, Vec<u8>) {
    let size: usize = items.iter().map(|(_, i)| i.raw().len() + 16).sum();
    let mut out = Vec::with_capacity(size + 256);
    let collection = resource.collection;
    out.extend_from_slice(format!("{{\"{collection}\": [").as_bytes());
    for (n, (_, item)) in items.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        match view {
            View::Detail => rewriter.write_json(item.raw(), &mut out),
            View::Summary => write_summary(resource, item, rewriter, &mut out),
        }
    }
    out.push(b']');
    let mut tail = Vec::with_capacity(64);
    if next {
        let links = format!(", \"{collection}_links\": [{{\"rel\": \"next\", \"href\": ");
        out.extend_from_slice(links.as_bytes());
        tail.extend_from_slice(b"}]");
    }
    if let Some(count) = count {
        tail.extend_from_slice(format!(", \"count\": {count}").as_bytes());
    }
    tail.push(b'}');
    if !next {
        out.append(&mut tail);
    }
    (out, tail)
}

/// The summary view (`api/views/backups.py summary`): the resource's summary fields, in
/// order, as the detail item has them (`links` rewritten; `[]` or `null` when absent).
fn write_summary(resource: &Resource, item: &Item, rewriter: &Rewriter<'_>, out: &mut Vec<u8>) {
    type Fields<'a> =
        std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue>;
    let fields: Fields<'_> = serde_json::from_slice(item.raw()).unwrap_or_default();
    out.push(b'{');
    for (n, name) in resource.summary_fields.iter().enumerate() {
        if n > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(format!("\"{name}\": ").as_bytes());
        let value = fields.get(*name).map(|r| r.get());
        match *name {
            "links" => rewriter.write_json(value.unwrap_or("[]").as_bytes(), out),
            _ => out.extend_from_slice(value.unwrap_or("null").as_bytes()),
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cinder::resource::BACKUPS;
    use crate::cinder::microversion::Version;

    #[test]
    fn next_link_rule_is_cinders() {
        let q =
            |raw: &str| ListQuery::parse(Some(raw), Version::new(3, 45), 1000, &BACKUPS).unwrap();
        assert!(next_link(&q("limit=2"), 2, None));
        assert!(!next_link(&q("limit=3"), 2, None));
        assert!(!next_link(&q("limit=0"), 0, None));
        // with_count quirk: a short page still links when count >= limit.
        assert!(next_link(&q("limit=5&with_count=true"), 2, Some(12)));
        assert!(!next_link(&q("limit=5&with_count=true"), 0, Some(12)));
        // count 0 falls back to the page length (`item_count or len(items)`).
        assert!(!next_link(&q("limit=5&with_count=true"), 2, Some(0)));
        // no limit: only a page of max_limit links.
        assert!(next_link(&q(""), 1000, None));
        assert!(!next_link(&q(""), 999, None));
    }
}
