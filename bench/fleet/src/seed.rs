//! Seeding a fleet: machines and volumes in the simulator, records and due entries in Redis.

use base64::Engine;
use kiloclaw_core::due::{DueIndex, MINUTE_MS};
use kiloclaw_core::ids::{app_name_from_user_id, sandbox_id_from_user_id};
use kiloclaw_core::kv::KeyValue;
use kiloclaw_core::lifecycle::FULL_CHECK_INTERVAL_MS;
use kiloclaw_core::record::{AppSetup, InstanceRecord, InstanceState, SCHEMA_VERSION};
use kiloclaw_core::redis_store::RedisKeyValue;
use kiloclaw_core::store::record_key;
use kiloclaw_core::testing::SeededRng;
use kiloclaw_flysim::{FleetSeed, SeedInstance, SeedState, SimAdmin};

use crate::redis_conn::PipeConn;

/// Instances seeded per simulator batch and commands per Redis pipeline.
const CHUNK: usize = 10_000;

/// How the fleet looks.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// 40 % running (due uniformly over the next 5 minutes), 60 % stopped (over the next 30), full checks
    /// spread over the past full-check interval: the steady state.
    Mixed,
    /// Every instance running, all due in the first minute, each due a full check (two Fly reads).
    Burst,
}

/// What was seeded.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub running: usize,
    pub stopped: usize,
}

/// Uniform in `0..span_ms` from the core's seeded generator (splitmix64), so runs seed the same fleet.
fn below(rng: &mut SeededRng, span_ms: i64) -> i64 {
    let drawn = rng.below(span_ms.max(1).unsigned_abs());
    i64::try_from(drawn).unwrap_or(0)
}

/// Whether user `index` of a mixed fleet runs (two in five).
pub fn is_running(shape: Shape, index: usize) -> bool {
    match shape {
        Shape::Mixed => index % 5 < 2,
        Shape::Burst => true,
    }
}

/// Seeds `count` users. `first_minute` is the first minute that holds due entries (the first tick walks
/// it); `seed_now_ms` is the simulated time of the seeding (before that minute).
pub fn seed(
    admin: &SimAdmin,
    redis: &mut redis::Connection,
    prefix: &str,
    count: usize,
    shape: Shape,
    first_minute: i64,
    seed_now_ms: i64,
) -> anyhow::Result<Seeded> {
    let mut rng = SeededRng(0x5EED_F1EE_7000 ^ count as u64);
    let pipe = PipeConn::default();
    let kv = RedisKeyValue::new(&pipe, prefix);
    let due = DueIndex::new(&kv);
    let base = first_minute * MINUTE_MS;
    let (mut running, mut stopped) = (0, 0);
    for start in (0..count).step_by(CHUNK) {
        let end = (start + CHUNK).min(count);
        let instances: Vec<SeedInstance> = (start..end)
            .map(|i| {
                let user_id = format!("bench-user-{i:06}");
                SeedInstance {
                    app: app_name_from_user_id(&user_id, false),
                    user_id,
                    state: if is_running(shape, i) {
                        SeedState::Started
                    } else {
                        SeedState::Stopped
                    },
                    image: None,
                    metadata_key: None,
                }
            })
            .collect();
        let seeded = admin
            .seed_fleet(&FleetSeed {
                org_slug: crate::ORG.to_owned(),
                region: Some(crate::REGION.to_owned()),
                instances,
            })
            .map_err(|e| anyhow::anyhow!("seeding the simulator: {e:?}"))?;
        for (offset, machine) in seeded.into_iter().enumerate() {
            let index = start + offset;
            let user_id = machine.user_id.clone();
            let is_running = is_running(shape, index);
            let (next_check, last_full) = match shape {
                Shape::Mixed if is_running => (
                    base + below(&mut rng, 5 * MINUTE_MS),
                    Some(seed_now_ms - below(&mut rng, FULL_CHECK_INTERVAL_MS)),
                ),
                Shape::Mixed => (
                    base + below(&mut rng, 30 * MINUTE_MS),
                    Some(seed_now_ms - below(&mut rng, FULL_CHECK_INTERVAL_MS)),
                ),
                // Last fully checked two intervals ago: every check is a full one (two Fly reads).
                Shape::Burst => (
                    base + below(&mut rng, MINUTE_MS),
                    Some(seed_now_ms - 2 * FULL_CHECK_INTERVAL_MS),
                ),
            };
            let mut env_key = [0u8; 32];
            for chunk in env_key.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let record = InstanceRecord {
                schema_version: SCHEMA_VERSION,
                version: 7,
                sandbox_id: sandbox_id_from_user_id(&user_id)?,
                user_id: user_id.clone(),
                status: Some(if is_running {
                    InstanceState::Running
                } else {
                    InstanceState::Stopped
                }),
                provisioned_at: Some(seed_now_ms - 30 * 24 * 60 * MINUTE_MS),
                last_started_at: Some(seed_now_ms - 2 * 24 * 60 * MINUTE_MS),
                last_stopped_at: (!is_running).then_some(seed_now_ms - 24 * 60 * MINUTE_MS),
                fly_app_name: Some(machine.app.clone()),
                fly_machine_id: Some(machine.machine_id.clone()),
                fly_volume_id: Some(machine.volume_id.clone()),
                fly_region: Some(crate::REGION.to_owned()),
                next_check_at_ms: Some(next_check),
                last_full_check_at: last_full,
                app_setup: AppSetup {
                    created: true,
                    ipv6_allocated: true,
                    ipv4_allocated: true,
                    env_key: Some(base64::engine::general_purpose::STANDARD.encode(env_key)),
                    env_key_secrets_version: Some(1),
                },
                ..InstanceRecord::empty()
            };
            // What the store does for a new record (the creation election, the sweep registration, the
            // record), then what a provision's session does (the due entry before the record names it).
            kv.increment(&format!("instance-create/1/{user_id}"), 1)?;
            due.register(&user_id)?;
            due.schedule(&user_id, next_check, seed_now_ms)?;
            kv.set(&record_key(&user_id), &record.encode())?;
            if is_running {
                running += 1;
            } else {
                stopped += 1;
            }
            if pipe.pending() >= CHUNK {
                pipe.flush(redis)?;
            }
        }
    }
    pipe.flush(redis)?;
    Ok(Seeded { running, stopped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_stays_in_range_and_the_mix_is_two_in_five() {
        let mut rng = SeededRng(1);
        assert!((0..1_000).all(|_| (0..300).contains(&below(&mut rng, 300))));
        let running = (0..1_000).filter(|i| is_running(Shape::Mixed, *i)).count();
        assert_eq!(running, 400);
    }
}
