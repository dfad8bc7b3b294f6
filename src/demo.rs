//! `vbs-proxy demo`: three simulated regions with a few hundred realistic backups, the proxy
//! in front of them, and curl commands to paste. Needs no configuration file.

use std::collections::BTreeMap;
use std::process::ExitCode;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use cinder_sim::{Backup, SimConfig, SimRegion, Snapshot, Volume};

/// Projects in the demo data (Cinder's default project_id_regex is `[0-9a-f\-]+`).
pub const PROJECTS: [&str; 3] = [
    "4f3c1e2d9a8b47c6b5a4d3e2f1a0b9c8",
    "0a1b2c3d4e5f40718293a4b5c6d7e8f9",
    "c0ffee00c0ffee00c0ffee00c0ffee00",
];

const STATUSES: [&str; 6] = [
    "available",
    "error",
    "creating",
    "deleting",
    "restoring",
    "error_deleting",
];
const NAMES: [&str; 8] = [
    "nightly",
    "Nightly-Upper",
    "weekly-db",
    "pre-upgrade",
    "broken-archive",
    "Manual",
    "",
    "logs",
];

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.gen())
        .into_uuid()
        .to_string()
}

/// `count` backups for one region: every status, ties in `created_at`, NULL and empty and
/// mixed-case names, several projects, a few soft-deleted rows.
pub fn sample_backups(region: usize, count: usize, seed: u64) -> Vec<Backup> {
    let mut rng = StdRng::seed_from_u64(seed ^ (region as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut minute = 0u32;
    (0..count)
        .map(|i| {
            // Every fifth backup shares its timestamp with the one before: ties for `id`.
            if i % 5 != 4 {
                minute += rng.gen_range(1..90);
            }
            let created = format!(
                "2024-{:02}-{:02}T{:02}:{:02}:00.000000",
                1 + (minute / 40_000) % 12,
                1 + (minute / 1440) % 28,
                (minute / 60) % 24,
                minute % 60
            );
            let name = match rng.gen_range(0..10) {
                0 => None,
                _ => Some(
                    format!("{}-r{region}-{i}", NAMES[rng.gen_range(0..NAMES.len())])
                        .trim_start_matches('-')
                        .to_string(),
                ),
            };
            let status = STATUSES[i % STATUSES.len()];
            Backup {
                id: uuid(&mut rng),
                project_id: PROJECTS[if i % 7 == 6 { 1 + i % 2 } else { 0 }].to_string(),
                user_id: "demo-user".into(),
                status: status.into(),
                size: rng.gen_range(1..200),
                object_count: if status == "creating" {
                    None
                } else {
                    Some(rng.gen_range(0..50))
                },
                availability_zone: Some(format!("az-{}", region + 1)),
                container: Some("volumebackups".into()),
                created_at: created.clone(),
                updated_at: Some(created.clone()),
                display_name: name,
                display_description: (i % 3 == 0).then(|| format!("backup {i} of region {region}")),
                fail_reason: (status == "error").then(|| "Backup driver error".into()),
                volume_id: uuid(&mut rng),
                parent_id: (i % 4 == 1).then(|| uuid(&mut rng)),
                num_dependent_backups: (i % 9 == 0) as i64,
                snapshot_id: None,
                data_timestamp: created,
                metadata: BTreeMap::from([(
                    "tier".to_string(),
                    ["gold", "silver"][i % 2].to_string(),
                )]),
                deleted: i % 31 == 30,
            }
        })
        .collect()
}

/// The volumes `backups` were made of (one per volume id, in the backup's project), and a
/// snapshot of every third backup's volume: what a dashboard lists beside the backups.
pub fn volumes_and_snapshots(backups: &[Backup], seed: u64) -> (Vec<Volume>, Vec<Snapshot>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let live = backups.iter().filter(|b| !b.deleted);
    let volumes = live
        .clone()
        .map(|b| Volume {
            display_name: Some(format!("vol-{}", &b.volume_id[..8])),
            availability_zone: b.availability_zone.clone(),
            created_at: b.created_at.clone(),
            size: b.size,
            ..Volume::held(&b.volume_id, &b.project_id)
        })
        .collect();
    let snapshots = live
        .step_by(3)
        .enumerate()
        .map(|(i, b)| Snapshot {
            id: uuid(&mut rng),
            project_id: b.project_id.clone(),
            user_id: b.user_id.clone(),
            volume_id: b.volume_id.clone(),
            status: ["available", "creating", "error"][i % 3].into(),
            progress: Some("100%".into()),
            volume_size: b.size,
            display_name: Some(format!("snap-{i}")),
            created_at: b.created_at.clone(),
            updated_at: b.updated_at.clone(),
            use_quota: true,
            ..Snapshot::default()
        })
        .collect();
    (volumes, snapshots)
}

pub async fn run(port: u16) -> ExitCode {
    let sizes = [140usize, 100, 60];
    let mut toml = String::new();
    // What the demo's token sees: its project's rows that are not soft-deleted.
    let mut visible = [0usize; 3];
    for (i, n) in sizes.iter().enumerate() {
        // Region b caps pages at 50, as a region with a small osapi_max_limit would.
        let config = SimConfig {
            osapi_max_limit: if i == 1 { 50 } else { 1000 },
            ..SimConfig::default()
        };
        let backups = sample_backups(i, *n, 2024);
        let (volumes, snapshots) = volumes_and_snapshots(&backups, 2024 + i as u64);
        visible[0] += backups
            .iter()
            .filter(|b| b.project_id == PROJECTS[0] && !b.deleted)
            .count();
        visible[1] += snapshots
            .iter()
            .filter(|s| s.project_id == PROJECTS[0])
            .count();
        visible[2] += volumes
            .iter()
            .filter(|v| v.project_id == PROJECTS[0])
            .count();
        let region = SimRegion::new(config, backups);
        *region.volumes.write().expect("not poisoned") = volumes;
        *region.snapshots.write().expect("not poisoned") = snapshots;
        let url = match region.spawn().await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("demo: cannot start a simulated region: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = ["region-a", "region-b", "region-c"][i];
        toml.push_str(&format!(
            "[[regions]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
        println!("simulated {name}: {url} ({n} backups with their volumes and some snapshots)");
    }
    toml.push_str(&format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"));
    // Quiet, so the commands below stay readable; RUST_LOG=info shows every request.
    toml.push_str("[log]\nlevel = \"warn\"\n");
    let config = Config::from_toml(&toml).expect("the demo configuration is valid");
    let telemetry = crate::telemetry::init(&config);
    let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "demo: cannot listen on {}: {e} (try --port 0)",
                config.server.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("bound");
    let p = PROJECTS[0];
    let b = format!("http://{addr}/v3/{p}");
    let t = format!("-H 'X-Auth-Token: demo:{p}'");
    let shutdown = crate::app::shutdown_signal();
    let [backups, snapshots, volumes] = visible;
    println!(
        "\nvbs-proxy is serving three regions on http://{addr}. The token below is project {p}'s: \
         it sees {backups} backups, {snapshots} snapshots and {volumes} volumes of the {} backups \
         (the others belong to two other projects, or are soft-deleted, which Cinder does not \
         list). Try:\n",
        sizes.iter().sum::<usize>()
    );
    println!("  curl -s {t} '{b}/backups/detail?limit=3' | python3 -m json.tool");
    println!("  curl -s {t} '{b}/backups/detail?limit=1' | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"backups\"][0][\"id\"])'   # then: curl -s {t} '{b}/backups/<id>'");
    println!("  curl -s {t} '{b}/snapshots/detail?limit=3&sort=created_at:desc'");
    println!("  curl -s {t} '{b}/volumes/detail?limit=3'");
    println!("  curl -s {t} -H 'OpenStack-API-Version: volume 3.45' '{b}/backups/detail?with_count=true&limit=2&sort=size:asc'");
    println!("  curl -s {t} -H 'OpenStack-API-Version: volume 3.37' '{b}/native/backups/detail?sort=name:asc&limit=5&status=available'");
    println!("  curl -s {t} '{b}/backups?limit=5&offset=10'");
    println!("  curl -s {t} '{b}/backups/detail?limit=-1'");
    println!("  curl -s http://{addr}/");
    println!(
        "\nFollow a backups_links next href to walk every page. Logs are at warn \
         (RUST_LOG=info shows every request). Ctrl-C stops."
    );
    let state = crate::AppState::new(config);
    let served = crate::serve(state, listener, shutdown, None).await;
    telemetry.shutdown();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
