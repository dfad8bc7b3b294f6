//! Where a request that is not an aggregated listing goes: the proxy is one Cinder base URL,
//! so a call on an item must reach the region that holds it (docs/api.md, "Routing").
//!
//! - A member path of a listed resource, and anything below it
//!   (`/v3/{project}/backups/{id}`, `.../{id}/restore`, `.../{id}/action`, `.../metadata`),
//!   any method: the region holding `{id}`, from the id → region map when a listing or show
//!   placed it, else found by asking every region at once for the item (each under its own
//!   guard). Every region's 404: Cinder's 404. A region that could not be asked: 503 naming
//!   it; never a guess.
//! - Anything else (the collection, its actions, other resources): the primary region.
//!
//! What a path names is read here and in the `Resource` descriptors only.

pub mod combined;

use crate::cache::{Caches, ItemKey};
use crate::cinder::resource::{
    names_collection, Resource, BACKUPS, NATIVE_ALIAS, RESOURCES, SNAPSHOTS, VOLUMES,
};
use crate::error::RequestError;
use crate::regions::{CallContext, Regions};

/// What a request's path names, for routing.
#[derive(Debug)]
pub enum Destination {
    /// An item of a listed resource, or something below it: the region that holds `id`.
    Member {
        resource: &'static Resource,
        /// `/v3/{project}` (its segment encoded), or `/v3` on the project-less routes.
        scope: String,
        id: String,
        /// A POST below the item whose body names other items, which must be in the same
        /// region (a restore into an existing volume).
        action: Option<&'static Action>,
    },
    /// A new item made from others (`POST /v3/{project}/backups` of a volume): the region
    /// that holds its sources.
    Create {
        creation: &'static Creation,
        scope: String,
    },
    /// The primary region.
    Primary,
}

/// What a creation request's body names as its sources (`cinder/api/v3/backups.py create`,
/// `snapshots.py create`, `volumes.py create`).
#[derive(Debug)]
pub struct Creation {
    pub collection: &'static str,
    /// The body's envelope: `{"backup": {...}}`.
    pub envelope: &'static str,
    /// Fields naming a source and what they name, in the order they are looked up.
    pub sources: &'static [(&'static str, &'static Resource)],
    /// Without sources, its `availability_zone` says where it goes (a new volume).
    pub by_zone: bool,
}

/// A POST below an item whose body names other items the region holding the item must also
/// hold (`cinder/api/contrib/backups.py restore`: the volume to restore into).
#[derive(Debug)]
pub struct Action {
    pub collection: &'static str,
    /// The path segment after the id: `restore`.
    pub name: &'static str,
    pub envelope: &'static str,
    pub sources: &'static [(&'static str, &'static Resource)],
}

pub static ACTIONS: [Action; 1] = [Action {
    collection: "backups",
    name: "restore",
    envelope: "restore",
    sources: &[("volume_id", &VOLUMES)],
}];

/// The creations that have sources. A volume made from none goes to the primary region.
pub static CREATIONS: [Creation; 3] = [
    Creation {
        collection: "backups",
        envelope: "backup",
        sources: &[
            ("volume_id", &VOLUMES),
            ("snapshot_id", &SNAPSHOTS),
        ],
        by_zone: false,
    },
    Creation {
        collection: "snapshots",
        envelope: "snapshot",
        sources: &[("volume_id", &VOLUMES)],
        by_zone: false,
    },
    Creation {
        collection: "volumes",
        envelope: "volume",
        sources: &[
            ("source_volid", &VOLUMES),
            ("snapshot_id", &SNAPSHOTS),
            ("backup_id", &BACKUPS),
            ("source_replica", &VOLUMES),
        ],
        by_zone: true,
    },
];

impl PartialEq for Destination {
    fn eq(&self, other: &Destination) -> bool {
        match (self, other) {
            (Destination::Primary, Destination::Primary) => true,
            (
                Destination::Member {
                    resource,
                    scope,
                    id,
                    action,
                },
                Destination::Member {
                    resource: r,
                    scope: s,
                    id: i,
                    action: a,
                },
            ) => {
                std::ptr::eq(*resource, *r)
                    && scope == s
                    && id == i
                    && action.map(|x| x as *const Action) == a.map(|x| x as *const Action)
            }
            (
                Destination::Create { creation, scope },
                Destination::Create {
                    creation: c,
                    scope: s,
                },
            ) => std::ptr::eq(*creation, *c) && scope == s,
            _ => false,
        }
    }
}

/// Where the request with these decoded path segments (`["v3", project, "backups", id, ...]`)
/// goes (`creating`: it is a POST). The VBS alias `native` before the collection is no
/// segment of its own.
pub fn destination(segments: &[String], creating: bool) -> Destination {
    let mut rest: Vec<&str> = segments.iter().map(String::as_str).collect();
    if rest.first() != Some(&"v3") {
        return Destination::Primary;
    }
    rest.remove(0);
    let collection = |s: &str| RESOURCES.iter().copied().find(|r| r.collection == s);
    let project = match rest.first() {
        Some(s) if names_collection(s) => None,
        Some(_) => Some(rest.remove(0)),
        None => return Destination::Primary,
    };
    if rest.first() == Some(&NATIVE_ALIAS) {
        rest.remove(0);
    }
    let scope_of = |project: Option<&str>| match project {
        Some(p) => format!("/v3/{}", crate::cinder::path::encode_segment(p)),
        None => "/v3".to_string(),
    };
    if let ([name], true) = (rest.as_slice(), creating) {
        if let Some(creation) = CREATIONS.iter().find(|c| c.collection == *name) {
            let scope = scope_of(project);
            return Destination::Create { creation, scope };
        }
    }
    let (Some(resource), Some(id)) = (rest.first().and_then(|c| collection(c)), rest.get(1))
    else {
        return Destination::Primary;
    };
    if resource.collection_paths.contains(id) {
        return Destination::Primary;
    }
    let scope = scope_of(project);
    let action = match (&rest[2..], creating) {
        ([name], true) => ACTIONS
            .iter()
            .find(|a| a.collection == resource.collection && a.name == *name),
        _ => None,
    };
    Destination::Member {
        resource,
        scope,
        id: id.to_string(),
        action,
    }
}

/// How long the fleet keeps an owner found by asking the regions (an item does not move
/// between regions; the bound is for the store's memory, and for ids deleted elsewhere).
const OWNER_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The region holding `id` (see [`destination`]): remembered here (placed by a listing or a
/// show, or found before), else in fleet mode remembered by another replica, else found by
/// asking every region, and then remembered for the fleet too.
pub async fn owner(
    regions: &Regions,
    caches: &Caches,
    resource: &Resource,
    scope: &str,
    id: &str,
    ctx: &CallContext,
) -> Result<usize, RequestError> {
    if regions.len() == 1 {
        return Ok(0);
    }
    // An item does not move between regions.
    let item = ItemKey::of(resource.collection, id);
    if let Some(region) = caches.holders.get(&item).filter(|&r| r < regions.len()) {
        return Ok(region);
    }
    let fleet = caches.shared.as_ref().map(|shared| &shared.fleet);
    if let Some(fleet) = fleet {
        // By name: replicas may list the regions in another order.
        let remembered = fleet.get(&fleet.key("owner", &item.fleet_name())).await;
        let named = remembered.and_then(|name| regions.iter().position(|r| r.name.as_bytes() == name));
        if let Some(region) = named {
            caches.holders.insert(item, region);
            return Ok(region);
        }
    }
    let (region, _) =
        crate::listing::source::find_item(resource, regions, caches, scope, id, &[], ctx).await?;
    if let Some(fleet) = fleet {
        let name = regions.name(region).as_bytes();
        fleet.put(&fleet.key("owner", &item.fleet_name()), name, OWNER_KEEP).await;
    }
    Ok(region)
}

/// Where a creation goes: the region holding the sources its body names (each looked up as
/// an owner is), the primary when it names none. Sources in two regions: a 400 naming both,
/// and no region asked to act.
pub async fn place(
    regions: &Regions,
    caches: &Caches,
    creation: &Creation,
    scope: &str,
    body: &[u8],
    ctx: &CallContext,
) -> Result<Option<usize>, RequestError> {
    if regions.len() == 1 {
        return Ok(None);
    }
    // A body Cinder would refuse is the region's to refuse: it goes to the primary.
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    let placed = co_locate(regions, caches, creation.envelope, creation.sources, scope, &body, None, ctx).await?;
    if placed.is_some() {
        return Ok(placed);
    }
    match body[creation.envelope]["availability_zone"].as_str() {
        Some(zone) if creation.by_zone => Ok(zone_holder(regions, caches, scope, zone, ctx).await),
        _ => Ok(None),
    }
}

/// An action on an item of region `owner` (`field` `id`, as the message names it) whose body
/// names other items: they must be in that region too, else a 400 naming both and no region
/// asked to act.
#[allow(clippy::too_many_arguments)] // the request's parts, as `place` takes them
pub async fn check_action(
    regions: &Regions,
    caches: &Caches,
    action: &Action,
    scope: &str,
    body: &[u8],
    owner: (usize, &str, &str),
    ctx: &CallContext,
) -> Result<(), RequestError> {
    // A body Cinder would refuse is the owner's to refuse.
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(());
    };
    let (region, field, id) = owner;
    let first = Some((region, field, id.to_string()));
    co_locate(regions, caches, action.envelope, action.sources, scope, &body, first, ctx).await?;
    Ok(())
}

/// The one region holding every item `sources` names in `body[envelope]` (and `first`, when
/// given), or `None` when it names none; items in two regions are a 400 naming both.
#[allow(clippy::too_many_arguments)]
async fn co_locate(
    regions: &Regions,
    caches: &Caches,
    envelope: &str,
    sources: &[(&str, &'static Resource)],
    scope: &str,
    body: &serde_json::Value,
    first: Option<(usize, &str, String)>,
    ctx: &CallContext,
) -> Result<Option<usize>, RequestError> {
    let mut placed = first;
    for (field, resource) in sources {
        let Some(id) = body[envelope][*field].as_str() else {
            continue;
        };
        let region = owner(regions, caches, resource, scope, id, ctx).await?;
        match &placed {
            Some((other, other_field, other_id)) if *other != region => {
                return Err(RequestError::bad_request(format!(
                    "Invalid input received: the {envelope}'s items are in two regions: \
                     {other_field} {other_id} in {}, {field} {id} in {}.",
                    regions.name(*other),
                    regions.name(region)
                )))
            }
            Some(_) => {}
            None => placed = Some((region, field, id.to_string())),
        }
    }
    Ok(placed.map(|(region, _, _)| region))
}

/// The first region (in configuration order) whose available zones include `zone`; `None`
/// when none does or none could say (the primary region then gives Cinder's own answer).
async fn zone_holder(
    regions: &Regions,
    caches: &Caches,
    scope: &str,
    zone: &str,
    ctx: &CallContext,
) -> Option<usize> {
    let asked = regions.iter().enumerate().map(|(i, region)| async move {
        if let Some(zones) = caches.zones.get(&i) {
            return Some(zones);
        }
        let path = combined::Combined::Zones.path();
        let answer = region.get_json(scope, path, &[], ctx).await.ok()?;
        let zones: std::sync::Arc<[String]> = combined::available_zones(&answer)?.into();
        caches.zones.insert(i, zones.clone());
        Some(zones)
    });
    let zones = futures::future::join_all(asked).await;
    zones
        .iter()
        .position(|z| z.as_ref().is_some_and(|z| z.iter().any(|name| name == zone)))
}

/// A deleted item's owner is forgotten, here and in the fleet.
pub async fn forget_owner(caches: &Caches, item: &ItemKey) {
    caches.holders.invalidate(item);
    if let Some(shared) = &caches.shared {
        shared.fleet.forget(&shared.fleet.key("owner", &item.fleet_name())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(path: &str) -> Destination {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(str::to_string)
            .collect();
        destination(&segments, false)
    }

    fn member(scope: &str, collection: &str, id: &str) -> Destination {
        let resource = RESOURCES
            .iter()
            .copied()
            .find(|r| r.collection == collection)
            .unwrap();
        Destination::Member {
            resource,
            scope: scope.into(),
            id: id.into(),
            action: None,
        }
    }

    #[test]
    fn members_and_what_is_below_them_go_to_their_owner() {
        let b = |scope| member(scope, "backups", "b1");
        assert_eq!(of("/v3/p/backups/b1"), b("/v3/p"));
        assert_eq!(of("/v3/p/backups/b1/restore"), b("/v3/p"));
        assert_eq!(of("/v3/p/backups/b1/export_record"), b("/v3/p"));
        assert_eq!(of("/v3/p/native/backups/b1/action"), b("/v3/p"));
        assert_eq!(of("/v3/backups/b1/restore"), b("/v3"));
        assert_eq!(of("/v3/p/snapshots/s1/metadata/k"), member("/v3/p", "snapshots", "s1"));
        assert_eq!(of("/v3/a b/backups/b1"), b("/v3/a%20b"));
    }

    #[test]
    fn a_restore_names_the_action_whose_items_must_be_co_located() {
        let segments: Vec<String> = ["v3", "p", "backups", "b1", "restore"]
            .map(str::to_string)
            .to_vec();
        let Destination::Member { action, .. } = destination(&segments, true) else {
            panic!("a member");
        };
        assert_eq!(action.map(|a| a.name), Some("restore"));
        // Not a POST, or not that action: nothing to check.
        let Destination::Member { action, .. } = destination(&segments, false) else {
            panic!("a member");
        };
        assert!(action.is_none());
    }

    #[test]
    fn creations_with_sources_are_placed_and_other_posts_are_not() {
        let creating = |path: &str| {
            let segments: Vec<String> = path
                .trim_start_matches('/')
                .split('/')
                .map(str::to_string)
                .collect();
            destination(&segments, true)
        };
        for (path, collection, scope) in [
            ("/v3/p/backups", "backups", "/v3/p"),
            ("/v3/p/snapshots", "snapshots", "/v3/p"),
            ("/v3/p/volumes", "volumes", "/v3/p"),
            ("/v3/backups", "backups", "/v3"),
        ] {
            match creating(path) {
                Destination::Create { creation, scope: s } => {
                    assert_eq!((creation.collection, s.as_str()), (collection, scope));
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(creating("/v3/p/backups/import_record"), Destination::Primary);
        assert_eq!(creating("/v3/p/types"), Destination::Primary);
        assert_eq!(of("/v3/p/backups"), Destination::Primary, "a GET");
    }

    #[test]
    fn collections_their_actions_and_other_resources_go_to_the_primary() {
        for path in [
            "/v3/p/backups",
            "/v3/p/backups/detail",
            "/v3/p/backups/import_record",
            "/v3/p/snapshots/detail",
            "/v3/p/types/t1",
            "/v3/p/os-availability-zone",
            "/v3/p",
            "/v3",
            "/v2/p/backups/b1",
        ] {
            assert_eq!(of(path), Destination::Primary, "{path}");
        }
    }
}
