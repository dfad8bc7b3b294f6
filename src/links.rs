//! Href rewriting (SPEC §4): an href that starts with a configured region URL is moved onto
//! the proxy's public base, keeping the path after the region base. Others are left alone.

use serde_json::{Map, Value};

pub struct Rewriter<'a> {
    pub region_bases: &'a [String],
    pub public_base: &'a str,
}

impl Rewriter<'_> {
    pub fn rewrite(&self, href: &str) -> Option<String> {
        self.region_bases.iter().find_map(|base| {
            let rest = href.strip_prefix(base.as_str())?;
            (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
                .then(|| format!("{}{rest}", self.public_base))
        })
    }

    /// Rewrite every `href` in `value`, at any depth (items, `links`, version documents).
    pub fn rewrite_value(&self, value: &mut Value) {
        match value {
            Value::Object(map) => self.rewrite_map(map),
            Value::Array(items) => items.iter_mut().for_each(|v| self.rewrite_value(v)),
            _ => {}
        }
    }

    pub fn rewrite_map(&self, map: &mut Map<String, Value>) {
        for (key, value) in map.iter_mut() {
            match value {
                Value::String(href) if key == "href" => {
                    if let Some(new) = self.rewrite(href) {
                        *href = new;
                    }
                }
                Value::Object(_) | Value::Array(_) => self.rewrite_value(value),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_region_prefixes_only() {
        let bases = vec![
            "http://127.0.0.1:9001".to_string(),
            "http://r2:80/volume".to_string(),
        ];
        let rw = Rewriter {
            region_bases: &bases,
            public_base: "https://proxy.example/api",
        };
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
        let mut v = json!({"links": [{"rel": "self", "href": "http://127.0.0.1:9001/v3/p/backups/x"},
                                     {"rel": "describedby", "href": "https://docs.openstack.org/"}]});
        rw.rewrite_value(&mut v);
        assert_eq!(
            v["links"][0]["href"],
            "https://proxy.example/api/v3/p/backups/x"
        );
        assert_eq!(v["links"][1]["href"], "https://docs.openstack.org/");
    }
}
