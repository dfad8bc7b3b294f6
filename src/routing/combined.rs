//! Answers that are not listings but still speak for every region: one Cinder holding all
//! regions' rows would count all their volumes and know all their zones. Each region's whole
//! answer is read (`listing::source::every_region_json`) and combined here.

use serde_json::{json, Map, Value};

/// A route whose answer combines every region's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combined {
    /// `GET /v3/{p}/os-availability-zone` (`api/contrib/availability_zones.py`).
    Zones,
    /// `GET /v3/{p}/volumes/summary` (`api/v3/volumes.py summary`, 3.12).
    VolumeSummary,
}

/// Where they are served. `os-availability-zone` only under a project: without one, its
/// name would be read as a project's (`http::scope`), so it is passed through.
pub const ROUTES: [(&str, Combined); 3] = [
    ("/v3/{project_id}/os-availability-zone", Combined::Zones),
    ("/v3/{project_id}/volumes/summary", Combined::VolumeSummary),
    ("/v3/volumes/summary", Combined::VolumeSummary),
];

impl Combined {
    /// The path under the scope each region is asked.
    pub fn path(self) -> &'static str {
        match self {
            Combined::Zones => "os-availability-zone",
            Combined::VolumeSummary => "volumes/summary",
        }
    }

    /// The one answer from every region's, or why they cannot be combined.
    pub fn combine(self, answers: &[Value]) -> Result<Value, String> {
        match self {
            Combined::Zones => zones(answers),
            Combined::VolumeSummary => volume_summary(answers),
        }
    }
}

/// The names of the zones a region's `os-availability-zone` answer says are available.
pub fn available_zones(answer: &Value) -> Option<Vec<String>> {
    let info = answer["availabilityZoneInfo"].as_array()?;
    let available = info
        .iter()
        .filter(|z| z["zoneState"]["available"].as_bool() == Some(true))
        .filter_map(|z| z["zoneName"].as_str().map(str::to_string));
    Some(available.collect())
}

/// Every zone once, by name, in the order the regions list them (regions in configuration
/// order); available when any region says it is.
fn zones(answers: &[Value]) -> Result<Value, String> {
    let mut out: Vec<Value> = Vec::new();
    for answer in answers {
        let info = answer["availabilityZoneInfo"]
            .as_array()
            .ok_or("an answer without availabilityZoneInfo")?;
        for zone in info {
            let name = zone["zoneName"].as_str().ok_or("a zone without a name")?;
            let available = zone["zoneState"]["available"].as_bool() == Some(true);
            match out.iter_mut().find(|z| z["zoneName"] == name) {
                Some(seen) if available => seen["zoneState"]["available"] = json!(true),
                Some(_) => {}
                None => out.push(zone.clone()),
            }
        }
    }
    Ok(json!({ "availabilityZoneInfo": out }))
}

/// Counts and sizes summed; from 3.36 the distinct metadata values of each key, merged
/// (Cinder's own order of them is the database's, unspecified: here first seen first).
fn volume_summary(answers: &[Value]) -> Result<Value, String> {
    let (mut count, mut size) = (0u64, 0u64);
    let mut metadata: Option<Map<String, Value>> = None;
    for answer in answers {
        let summary = &answer["volume-summary"];
        count += summary["total_count"].as_u64().ok_or("no total_count")?;
        size += summary["total_size"].as_u64().ok_or("no total_size")?;
        if let Some(theirs) = summary.get("metadata").and_then(Value::as_object) {
            let ours = metadata.get_or_insert_with(Map::new);
            for (key, values) in theirs {
                let merged = ours.entry(key.clone()).or_insert_with(|| json!([]));
                let merged = merged.as_array_mut().ok_or("metadata values not a list")?;
                for value in values.as_array().ok_or("metadata values not a list")? {
                    if !merged.contains(value) {
                        merged.push(value.clone());
                    }
                }
            }
        }
    }
    let mut summary = json!({"total_count": count, "total_size": size});
    if let Some(metadata) = metadata {
        summary["metadata"] = Value::Object(metadata);
    }
    Ok(json!({ "volume-summary": summary }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_listed_once_and_available_if_anywhere() {
        let zone = |name: &str, up: bool| json!({"zoneName": name, "zoneState": {"available": up}});
        let answers = [
            json!({"availabilityZoneInfo": [zone("nova", false), zone("az1", true)]}),
            json!({"availabilityZoneInfo": [zone("nova", true), zone("az2", true)]}),
        ];
        let combined = Combined::Zones.combine(&answers).unwrap();
        assert_eq!(
            combined,
            json!({"availabilityZoneInfo": [zone("nova", true), zone("az1", true), zone("az2", true)]})
        );
        assert!(Combined::Zones.combine(&[json!({})]).is_err());
    }

    #[test]
    fn volume_summaries_add_up_and_merge_metadata() {
        let answers = [
            json!({"volume-summary": {"total_count": 2, "total_size": 6, "metadata": {"tier": ["gold"]}}}),
            json!({"volume-summary": {"total_count": 3, "total_size": 4, "metadata": {"tier": ["silver", "gold"], "k": ["v"]}}}),
        ];
        let combined = Combined::VolumeSummary.combine(&answers).unwrap();
        assert_eq!(
            combined,
            json!({"volume-summary": {"total_count": 5, "total_size": 10,
                "metadata": {"tier": ["gold", "silver"], "k": ["v"]}}})
        );
        // Below 3.36 no region shows metadata, and neither does the sum.
        let old = [json!({"volume-summary": {"total_count": 1, "total_size": 1}})];
        let combined = Combined::VolumeSummary.combine(&old).unwrap();
        assert!(combined["volume-summary"].get("metadata").is_none());
    }
}
