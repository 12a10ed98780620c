//! Host conformance tests: one module per behaviour, each driving a scenario folder under
//! `tests/scenarios/` with real guest components (built once by the harness).

mod harness;

mod admission;
mod composition;
mod concurrency;
mod cron;
mod key_value;
mod limits;
mod linearizability;
mod outbound;
mod outbound_pg;
mod outbound_redis;
mod routing;
mod variables;
