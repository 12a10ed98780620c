//! In-memory fakes of the boundary traits that behave like the real backends, for this crate's tests and
//! (with the `testing` feature) for other crates' tests.
//!
//! - [`MemoryKv`]: a key-value bucket with real CAS semantics (including insert-if-absent), counters, and
//!   injectable conflicts, concurrent writers and failures.
//! - [`FakeFly`]: the Fly Machines API as a state machine (apps, machines, volumes, secrets, IPs), with
//!   region capacity, 404s for missing resources and injectable per-call errors.
//! - [`FakeClock`] / [`SeqRandom`]: time that advances only when someone sleeps; predictable randomness.
//! - [`NodeEnvelopes`]: RSA envelopes made by Node's `crypto`, as Next.js makes them.
//! - [`check_key_value_contract`]: the key-value semantics the store protocol needs, for any backend.
//! - [`NativeRedis`]: the Redis store adapter over a native client, against the real server.
//! - [`SeededRng`], [`parse_seed`], [`fresh_seed`]: workloads that replay from a printed seed.
//! - [`Stall`]: holds one call of [`MemoryKv`] or [`FakeFly`] until the test lets it go (a caller stuck
//!   between two steps while others run).

mod clock;
mod contract;
mod envelopes;
mod fly;
mod kv;
mod redis;
mod rng;
mod stall;

pub use clock::{FakeClock, SeqRandom};
pub use contract::check_key_value_contract;
pub use envelopes::{BadEnvelope, GoodEnvelope, NodeEnvelopes};
pub use fly::{FakeFly, FlyCall, StallPoint};
pub use kv::{KvOp, MemoryKv};
pub use redis::{LOCAL_REDIS_URL, NativeRedis, local_redis_store_variables, native_command};
pub use rng::{SeededRng, fresh_seed, parse_seed};
pub use stall::Stall;
