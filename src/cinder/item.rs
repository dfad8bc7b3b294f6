//! An item (a backup, a snapshot) as the merge sees it: the region's JSON bytes, untouched,
//! plus the few values the current sort compares on. Items are parsed once per region answer
//! (only the sort fields are decoded; the rest is skipped), shared by reference count, and
//! written back out as the region wrote them, with hrefs rewritten on the way.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cinder::resource::Resource;

/// An item's sort values, the first two without an allocation of their own.
type SmallValues = smallvec::SmallVec<[SortValue; 2]>;

/// One sort value, as the database would compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortValue {
    Null,
    Int(i64),
    /// Shared: an item's id is also a sort key on every default sort.
    Text(Arc<str>),
}

#[derive(Debug)]
struct Inner {
    /// The whole answer the item came from; `range` is this item's JSON object in it.
    body: Bytes,
    range: Range<usize>,
    id: Arc<str>,
    /// In the order of the field list it was parsed with (the sort keys); two inline, the
    /// default sort's.
    values: SmallValues,
}

/// A backup from a region; cloning is a reference-count increment.
#[derive(Debug, Clone)]
pub struct Item(Arc<Inner>);

impl Item {
    pub fn id(&self) -> &str {
        &self.0.id
    }

    pub fn values(&self) -> &[SortValue] {
        &self.0.values
    }

    /// The item's JSON object exactly as the region sent it.
    pub fn raw(&self) -> &[u8] {
        &self.0.body[self.0.range.clone()]
    }

    /// Parse one JSON object (`raw`, a sub-slice of `body`), decoding only `fields`.
    fn parse(body: &Bytes, raw: &RawValue, fields: &[&str]) -> Result<Item, String> {
        let text = raw.get();
        let start = text.as_ptr() as usize - body.as_ptr() as usize;
        let range = start..start + text.len();
        let mut values: SmallValues = smallvec::smallvec![SortValue::Null; fields.len()];
        let mut id = None;
        let mut de = serde_json::Deserializer::from_str(text);
        de.deserialize_map(Picker {
            fields,
            values: &mut values,
            id: &mut id,
        })
        .map_err(|e| format!("an item is not a JSON object: {e}"))?;
        let id = id.ok_or_else(|| "an item without a string `id`".to_string())?;
        Ok(Item(Arc::new(Inner {
            body: body.clone(),
            range,
            id,
            values,
        })))
    }

    /// An item built from a JSON object of its own (the comparator's tests).
    #[cfg(test)]
    pub(crate) fn from_json(json: &[u8], fields: &[&str]) -> Result<Item, String> {
        let body = Bytes::copy_from_slice(json);
        let raw: &RawValue = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Item::parse(&body, raw, fields)
    }
}

/// Visits an item's keys, decoding `id` and the wanted fields, skipping everything else.
struct Picker<'f, 'v> {
    fields: &'f [&'f str],
    values: &'v mut [SortValue],
    id: &'v mut Option<Arc<str>>,
}

impl<'de> Visitor<'de> for Picker<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an item object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let keys = KeySeed {
            fields: self.fields,
        };
        while let Some((slot, is_id)) = map.next_key_seed(keys)? {
            if slot.is_none() && !is_id {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value_seed(ValueSeed)?;
            match (slot, value) {
                (None, SortValue::Text(id)) => *self.id = Some(id),
                (None, _) => {}
                (Some(i), value) => {
                    if let (true, SortValue::Text(id)) = (is_id, &value) {
                        *self.id = Some(id.clone());
                    }
                    self.values[i] = value;
                }
            }
        }
        Ok(())
    }
}

/// An item's key, judged where the parser holds it (never copied: a `String` or a
/// `Cow<str>` key, which serde always makes owned, cost an allocation per key of every row):
/// the slot of the wanted field it is, if any, and whether it is the id.
#[derive(Clone, Copy)]
struct KeySeed<'f> {
    fields: &'f [&'f str],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (Option<usize>, bool);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (Option<usize>, bool);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok((self.fields.iter().position(|f| *f == key), key == "id"))
    }
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = SortValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SortValue, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = SortValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sortable value")
    }
    fn visit_unit<E>(self) -> Result<SortValue, E> {
        Ok(SortValue::Null)
    }
    fn visit_none<E>(self) -> Result<SortValue, E> {
        Ok(SortValue::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<SortValue, E> {
        Ok(SortValue::Int(v as i64))
    }
    fn visit_i64<E>(self, v: i64) -> Result<SortValue, E> {
        Ok(SortValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<SortValue, E> {
        Ok(SortValue::Int(v.min(i64::MAX as u64) as i64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<SortValue, E> {
        Ok(SortValue::Int(v as i64))
    }
    fn visit_str<E>(self, v: &str) -> Result<SortValue, E> {
        Ok(SortValue::Text(v.into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SortValue, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(SortValue::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<SortValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(SortValue::Null)
    }
}

/// A region's listing answer: `{"backups": [...], "backups_links": [...], "count": N}`.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub items: Vec<Item>,
    pub has_next: bool,
    pub count: Option<u64>,
}

impl ListPage {
    /// Bytes held: the region's answers the items point into, plus per-item bookkeeping.
    pub(crate) fn weight(&self) -> usize {
        let mut bodies: Vec<(*const u8, usize)> = self
            .items
            .iter()
            .map(|i| (i.0.body.as_ptr(), i.0.body.len()))
            .collect();
        bodies.sort_unstable();
        bodies.dedup();
        // Each item also owns its id and the text of its sort values.
        let owned: usize = self
            .items
            .iter()
            .map(|i| {
                let text = i.0.values.iter().map(|v| match v {
                    SortValue::Text(t) => t.len(),
                    _ => 0,
                });
                i.0.id.len() + text.sum::<usize>()
            })
            .sum();
        bodies.iter().map(|(_, len)| len).sum::<usize>() + owned + self.items.len() * 96 + 128
    }
}

/// A listing or show answer's top level: its keys, values left as they are. (The
/// collection's name is the resource's, so it is looked up, not a field.)
type Envelope<'a> = std::collections::BTreeMap<std::borrow::Cow<'a, str>, &'a RawValue>;

#[derive(Deserialize)]
struct Link<'a> {
    #[serde(borrow)]
    rel: Option<std::borrow::Cow<'a, str>>,
}

/// Parse a listing answer (`{"<collection>": [...], "<collection>_links": [...], "count": N}`),
/// decoding only `fields` of each item: in one pass over the region's bytes, each item's
/// keys read where they lie and its values passed over as raw slices (which also give the
/// item's extent), the wanted ones then decoded from their own few bytes. An answer whose
/// items' extent cannot be told that way (an item without keys, or whose first key is
/// escaped) is read in two passes instead: the array split into raw items, then each item
/// for its fields. Scanning the regions' JSON is most of a real miss's CPU
/// (docs/performance.md, "A cheaper miss").
pub fn parse_list(body: Bytes, fields: &[&str], resource: &Resource) -> Result<ListPage, String> {
    let collection = resource.collection;
    let links = format!("{collection}_links");
    // JSON is UTF-8 (RFC 8259, section 8.1): checked once over the whole answer, so the
    // parser need not check each key and value again (a byte parser checks every string it
    // lends and every raw value: 6 % of a real miss in perf).
    let text = std::str::from_utf8(&body).map_err(|e| format!("not a listing: {e}"))?;
    let read = |mode: ItemsMode| {
        let mut de = serde_json::Deserializer::from_str(text);
        let top = de
            .deserialize_map(ListingVisitor {
                collection,
                links: &links,
                items: ItemsSeed {
                    body: &body,
                    fields,
                    mode,
                },
            })
            .map_err(|e| format!("not a listing: {e}"))?;
        de.end().map_err(|e| format!("not a listing: {e}"))?;
        Ok::<_, String>(top)
    };
    let top = match read(ItemsMode::OnePass) {
        Err(e) if e.contains(NO_EXTENT) => read(ItemsMode::TwoPasses)?,
        other => other?,
    };
    let items = top
        .items
        .ok_or_else(|| format!("no `{collection}` array"))?;
    Ok(ListPage {
        items,
        has_next: top.has_next,
        count: top.count,
    })
}

/// What a one-pass read says when it cannot tell an item's extent (then it reads again in
/// two passes).
const NO_EXTENT: &str = "an item's extent is not known";

#[derive(Clone, Copy, PartialEq)]
enum ItemsMode {
    OnePass,
    TwoPasses,
}

/// A listing's top level: its items, whether a `next` link was given, the count.
struct Listing {
    items: Option<Vec<Item>>,
    has_next: bool,
    count: Option<u64>,
}

struct ListingVisitor<'k> {
    collection: &'k str,
    links: &'k str,
    items: ItemsSeed<'k>,
}

/// The collection's array, read into items.
#[derive(Clone, Copy)]
struct ItemsSeed<'k> {
    body: &'k Bytes,
    fields: &'k [&'k str],
    mode: ItemsMode,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<Item>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Item>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<Item>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Item>, A::Error> {
        use serde::de::Error;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        match self.mode {
            ItemsMode::OnePass => {
                let seed = ItemSeed {
                    body: self.body,
                    fields: self.fields,
                };
                while let Some(item) = seq.next_element_seed(seed)? {
                    items.push(item);
                }
            }
            ItemsMode::TwoPasses => {
                while let Some(raw) = seq.next_element::<&RawValue>()? {
                    items.push(Item::parse(self.body, raw, self.fields).map_err(A::Error::custom)?);
                }
            }
        }
        Ok(items)
    }
}

/// One item read in one pass: its keys where they lie in the region's bytes, every value
/// passed over as a raw slice (the wanted ones then decoded from it), and its extent from the
/// first key and the last value.
#[derive(Clone, Copy)]
struct ItemSeed<'k> {
    body: &'k Bytes,
    fields: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = Item;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
    type Value = Item;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an item object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        use serde::de::Error;
        let body: &[u8] = self.body;
        let offset = |s: &str| (s.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
        let mut values: SmallValues = smallvec::smallvec![SortValue::Null; self.fields.len()];
        let (mut id, mut start, mut end) = (None, None, None);
        let keys = PlacedKeySeed {
            fields: self.fields,
        };
        while let Some((slot, is_id, key)) = map.next_key_seed(keys)? {
            if start.is_none() {
                // The object's `{`: only blanks lie between it and the first key's quote.
                let quote = key.map(offset).ok_or_else(|| A::Error::custom(NO_EXTENT))?;
                let blanks = body[..quote.saturating_sub(1)]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
                let brace = quote.checked_sub(2 + blanks).filter(|&b| body[b] == b'{');
                start = Some(brace.ok_or_else(|| A::Error::custom(NO_EXTENT))?);
            }
            let raw: &'de RawValue = map.next_value()?;
            let text = raw.get();
            end = Some(offset(text) + text.len());
            if slot.is_none() && !is_id {
                continue;
            }
            let value = ValueSeed
                .deserialize(&mut serde_json::Deserializer::from_str(text))
                .map_err(A::Error::custom)?;
            match (slot, value) {
                (None, SortValue::Text(text)) => id = Some(text),
                (None, _) => {}
                (Some(i), value) => {
                    if let (true, SortValue::Text(text)) = (is_id, &value) {
                        id = Some(text.clone());
                    }
                    values[i] = value;
                }
            }
        }
        // The object's `}`: only blanks lie between it and the last value.
        let end = end.ok_or_else(|| A::Error::custom(NO_EXTENT))?;
        let blanks = body[end..].iter().take_while(|b| b.is_ascii_whitespace()).count();
        let close = Some(end + blanks).filter(|&c| body.get(c) == Some(&b'}'));
        let close = close.ok_or_else(|| A::Error::custom(NO_EXTENT))?;
        let id = id.ok_or_else(|| A::Error::custom("an item without a string `id`"))?;
        Ok(Item(Arc::new(Inner {
            body: self.body.clone(),
            range: start.unwrap_or(close)..close + 1,
            id,
            values,
        })))
    }
}

/// A key as [`KeySeed`] judges it, and the key itself when the parser lends it from the
/// region's bytes (an unescaped key): where it lies.
#[derive(Clone, Copy)]
struct PlacedKeySeed<'f> {
    fields: &'f [&'f str],
}

impl<'de> DeserializeSeed<'de> for PlacedKeySeed<'_> {
    type Value = (Option<usize>, bool, Option<&'de str>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PlacedKeySeed<'_> {
    type Value = (Option<usize>, bool, Option<&'de str>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok((self.fields.iter().position(|f| *f == key), key == "id", Some(key)))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok((self.fields.iter().position(|f| *f == key), key == "id", None))
    }
}

impl<'de> Visitor<'de> for ListingVisitor<'_> {
    type Value = Listing;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Listing, A::Error> {
        let mut listing = Listing {
            items: None,
            has_next: false,
            count: None,
        };
        // A key given twice counts as its last value (as a map would keep it).
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == self.collection {
                listing.items = Some(map.next_value_seed(self.items)?);
            } else if key == self.links {
                let links: Vec<Link<'de>> = map.next_value()?;
                listing.has_next = links.iter().any(|l| l.rel.as_deref() == Some("next"));
            } else if key == "count" {
                listing.count = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(listing)
    }
}

/// Parse `{"<member>": {...}}`.
pub(crate) fn parse_show(body: Bytes, fields: &[&str], resource: &Resource) -> Result<Item, String> {
    let parsed: Envelope<'_> =
        serde_json::from_slice(&body).map_err(|e| format!("not a {}: {e}", resource.member))?;
    let raw = parsed
        .get(resource.member)
        .ok_or_else(|| format!("not a {}", resource.member))?;
    Item::parse(&body, raw, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cinder::resource::BACKUPS;

    fn parse_show_backup(body: Bytes, fields: &[&str]) -> Result<Item, String> {
        parse_show(body, fields, &BACKUPS)
    }

    #[test]
    fn parses_only_what_is_asked_and_keeps_the_bytes() {
        let body = Bytes::from_static(
            br#"{"backups": [{"id": "a", "name": null, "size": 3, "links": [{"href": "x"}], "created_at": "t1"},
                             {"name": "caf\u00e9", "id": "b", "size": 1, "metadata": {"k": "v"}}],
                 "backups_links": [{"rel": "next", "href": "n"}], "count": 9}"#,
        );
        let page = parse_list(body, &["name", "size", "created_at"], &BACKUPS).unwrap();
        assert_eq!(page.count, Some(9));
        assert!(page.has_next);
        let a = &page.items[0];
        assert_eq!(a.id(), "a");
        assert_eq!(
            a.values(),
            &[
                SortValue::Null,
                SortValue::Int(3),
                SortValue::Text("t1".into())
            ]
        );
        assert!(a.raw().starts_with(b"{\"id\": \"a\"") && a.raw().ends_with(b"\"t1\"}"));
        let b = &page.items[1];
        assert_eq!(b.values()[0], SortValue::Text("café".into()));
        assert_eq!(b.values()[2], SortValue::Null);
    }

    /// The one-pass read and the two-pass read agree on every item: its bytes, id and values
    /// (blanks anywhere JSON allows them, nested values, escapes in values, an escaped key
    /// after the first).
    #[test]
    fn one_pass_and_two_passes_read_the_same_items() {
        let body = Bytes::from_static(
            br#"{ "count" : 3 , "backups" : [ {"id":"a","name":"x\"y","links":[{"href":"h","rel":"self"}],"size":2}
              ,{  "size" : null , "metadata" : {"k": [1, {"z": "\u00e9"}]} , "n\u0061me" : "b\n" , "id" : "b"  }
              , {"id": "c", "created_at": "2024-01-01T00:00:00.000000", "size": 1.5} ] ,
              "backups_links": [] }"#,
        );
        let fields = ["name", "size", "id"];
        let one = parse_list(body.clone(), &fields, &BACKUPS).unwrap();
        let two = {
            let mut de = serde_json::Deserializer::from_slice(&body);
            let top = de
                .deserialize_map(ListingVisitor {
                    collection: "backups",
                    links: "backups_links",
                    items: ItemsSeed {
                        body: &body,
                        fields: &fields,
                        mode: ItemsMode::TwoPasses,
                    },
                })
                .unwrap();
            top.items.unwrap()
        };
        assert_eq!(one.items.len(), 3);
        assert_eq!(one.count, Some(3));
        for (a, b) in one.items.iter().zip(&two) {
            assert_eq!(a.raw(), b.raw());
            assert_eq!(a.id(), b.id());
            assert_eq!(a.values(), b.values());
        }
        assert_eq!(one.items[1].values()[0], SortValue::Text("b\n".into()));
        assert!(one.items[1].raw().starts_with(b"{  \"size\"") && one.items[1].raw().ends_with(b"\"b\"  }"));
    }

    #[test]
    fn keys_are_read_as_written_escaped_or_not_and_the_id_may_be_a_sort_field() {
        // `"i\u0064"` is `"id"` and `"n\u0061me"` is `"name"`: a key the parser must
        // unescape is judged like any other.
        let body = Bytes::from_static(
            br#"{"backups": [{"i\u0064": "a", "n\u0061me": "x"}, {"id": "b", "name": "y"}]}"#,
        );
        let page = parse_list(body, &["name", "id"], &BACKUPS).unwrap();
        let ids: Vec<&str> = page.items.iter().map(Item::id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            page.items[0].values(),
            &[SortValue::Text("x".into()), SortValue::Text("a".into())]
        );
    }

    #[test]
    fn rejects_what_is_not_a_listing() {
        assert!(parse_list(Bytes::from_static(b"{\"volumes\": []}"), &[], &BACKUPS).is_err());
        assert!(parse_list(
            Bytes::from_static(b"{\"backups\": [{\"name\": \"x\"}]}"),
            &[],
            &BACKUPS
        )
        .is_err());
        assert!(parse_list(Bytes::from_static(b"{\"backups\": [1]}"), &[], &BACKUPS).is_err());
        assert!(parse_list(
            Bytes::from_static(b"{\"backups\": [{\"id\": 1}"),
            &[],
            &BACKUPS
        )
        .is_err());
        assert!(parse_list(Bytes::from_static(b"[]"), &[], &BACKUPS).is_err());
        let show = parse_show_backup(
            Bytes::from_static(b"{\"backup\": {\"id\": \"z\", \"size\": 2}}"),
            &["size"],
        )
        .unwrap();
        assert_eq!(show.values(), &[SortValue::Int(2)]);
    }
}
