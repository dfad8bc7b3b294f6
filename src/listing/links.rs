//! Href rewriting (docs/api.md): an href that starts with a configured region URL is moved onto
//! the proxy's public base, keeping the path after the region base. Others are left alone.
//!
//! Items are rewritten as bytes, while they are copied out: the region's JSON is not parsed
//! again. Only string values of `"href"` keys are touched; a name or description that merely
//! contains a region URL is left as it is (inside a JSON string, a quote is escaped, so
//! `"href":` cannot occur there).

pub struct Rewriter<'a> {
    region_bases: &'a [String],
    /// The public base as it goes inside a JSON string: escaped by the JSON encoder, never
    /// pasted in as it came (it may come from a header).
    public_base_json: String,
    /// Built once per answer, not once per item.
    href_key: memchr::memmem::Finder<'static>,
}

impl<'a> Rewriter<'a> {
    pub fn new(region_bases: &'a [String], public_base: &'a str) -> Rewriter<'a> {
        let quoted = serde_json::to_string(public_base).expect("a string serialises");
        Rewriter {
            region_bases,
            public_base_json: quoted[1..quoted.len() - 1].to_string(),
            href_key: memchr::memmem::Finder::new(Self::HREF_KEY),
        }
    }

    const HREF_KEY: &'static [u8] = b"\"href\"";

    /// The region base that `value` (an href) starts with, if any.
    fn region_prefix(&self, value: &[u8]) -> Option<usize> {
        self.region_bases.iter().find_map(|base| {
            let rest = value.strip_prefix(base.as_bytes())?;
            matches!(rest.first(), None | Some(b'/' | b'?' | b'"')).then_some(base.len())
        })
    }

    /// One href, rewritten through [`Rewriter::write_json`] (tests).
    #[cfg(test)]
    fn rewrite(&self, href: &str) -> Option<String> {
        self.region_prefix(href.as_bytes())?;
        let mut out = Vec::new();
        self.write_json(serde_json::json!({ "href": href }).to_string().as_bytes(), &mut out);
        let rewritten: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        Some(rewritten["href"].as_str().expect("a string").to_string())
    }

    /// Append `raw` (JSON) to `out`, with every `"href": "<region base>...` rewritten.
    pub fn write_json(&self, raw: &[u8], out: &mut Vec<u8>) {
        let mut copied = 0;
        let mut at = 0;
        while let Some(found) = self.href_key.find(&raw[at..]) {
            let mut i = at + found + Self::HREF_KEY.len();
            at = i;
            let skip_ws = |mut i: usize| {
                while raw.get(i).is_some_and(u8::is_ascii_whitespace) {
                    i += 1;
                }
                i
            };
            i = skip_ws(i);
            if raw.get(i) != Some(&b':') {
                continue;
            }
            i = skip_ws(i + 1);
            if raw.get(i) != Some(&b'"') {
                continue;
            }
            let value = i + 1;
            if let Some(len) = self.region_prefix(&raw[value..]) {
                out.extend_from_slice(&raw[copied..value]);
                out.extend_from_slice(self.public_base_json.as_bytes());
                copied = value + len;
                at = copied;
            }
        }
        out.extend_from_slice(&raw[copied..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw<'a>(bases: &'a [String]) -> Rewriter<'a> {
        Rewriter::new(bases, "https://proxy.example/api")
    }

    #[test]
    fn the_public_base_is_json_escaped() {
        let bases = vec!["http://127.0.0.1:9001".to_string()];
        let raw = br#"{"links": [{"rel": "self", "href": "http://127.0.0.1:9001/v3/p"}]}"#;
        let mut out = Vec::new();
        Rewriter::new(&bases, "http://a\"b\\").write_json(raw, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["links"][0]["href"], "http://a\"b\\/v3/p");
    }

    #[test]
    fn rewrites_region_prefixes_only() {
        let bases = vec![
            "http://127.0.0.1:9001".to_string(),
            "http://r2:80/volume".to_string(),
        ];
        let rw = rw(&bases);
        assert_eq!(
            rw.rewrite("http://127.0.0.1:9001/v3/p/backups/x")
                .as_deref(),
            Some("https://proxy.example/api/v3/p/backups/x")
        );
        assert_eq!(
            rw.rewrite("http://r2:80/volume/p/backups/x").as_deref(),
            Some("https://proxy.example/api/p/backups/x")
        );
        assert_eq!(rw.rewrite("http://127.0.0.1:90010/v3/"), None);
        assert_eq!(rw.rewrite("https://docs.openstack.org/"), None);
    }

    #[test]
    fn rewrites_hrefs_in_json_bytes() {
        let bases = vec!["http://127.0.0.1:9001".to_string()];
        let raw = br#"{"name": "see http://127.0.0.1:9001/v3/x", "desc": "\"href\": \"http://127.0.0.1:9001/a\"",
            "links": [{"rel": "self", "href": "http://127.0.0.1:9001/v3/p/backups/x"},
                      {"rel":"bookmark","href":"http://127.0.0.1:9001/p/backups/x"},
                      {"rel": "describedby", "href" : "https://docs.openstack.org/"}]}"#;
        let mut out = Vec::new();
        rw(&bases).write_json(raw, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], "see http://127.0.0.1:9001/v3/x");
        assert_eq!(v["desc"], "\"href\": \"http://127.0.0.1:9001/a\"");
        assert_eq!(
            v["links"][0]["href"],
            "https://proxy.example/api/v3/p/backups/x"
        );
        assert_eq!(
            v["links"][1]["href"],
            "https://proxy.example/api/p/backups/x"
        );
        assert_eq!(v["links"][2]["href"], "https://docs.openstack.org/");
    }
}
