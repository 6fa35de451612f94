//! Sessions that run a GC plan on Ballista: what every process of a cluster must agree on.
//!
//! The scheduler plans and the executors run stages of plans that name blobgc's functions, read
//! the job's tables and write next to its plan. So every process builds its sessions here: the
//! same functions, the same config extension (the job's S3 options, sent with every task), and
//! object stores made from those options, not from whatever the process was started with.

use crate::functions;
use crate::registry::{JobOptions, runtime_env};
use crate::store::S3Options;
use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::sync::Arc;

/// The largest gRPC message a cluster process takes: Ballista's default. No filter travels in
/// one (shards are stored by the tasks that build them), so results and shuffle fetches stay
/// far below it.
pub const GRPC_MAX_MESSAGE_BYTES: u32 = 16 << 20;

/// What a map task's shuffle writer holds before it spills to the executor's disk. Ballista's
/// default, 256 MiB a task, was most of an executor's peak (~420 MB at 10M listed blobs); at
/// 32 MiB the executors peaked at 210-310 MB and the run took no longer.
const SHUFFLE_BUFFER_BYTES: usize = 32 << 20;

/// Joins are never broadcast. The probe routes the listing by shard with a join on a table of
/// shards ([`crate::plan`]'s `by_shard`); Ballista's adaptive planner found that table small and
/// broadcast it, so the listing was never shuffled and every task probed every shard, loading
/// the whole filter into every executor.
const BROADCAST_JOIN_BYTES: usize = 0;

/// The session config of every cluster process: Ballista's, with the job options known, so the
/// keys a client sets are applied on the executors.
pub fn session_config() -> SessionConfig {
    let config = SessionConfig::new_with_ballista()
        .with_option_extension(JobOptions::default())
        .set_usize(
            ballista_core::config::BALLISTA_SHUFFLE_SORT_BASED_MEMORY_LIMIT_PER_TASK_BYTES,
            SHUFFLE_BUFFER_BYTES,
        )
        .set_usize(
            ballista_core::config::BALLISTA_BROADCAST_JOIN_THRESHOLD_BYTES,
            BROADCAST_JOIN_BYTES,
        );
    crate::session::tuned(config)
}

/// A session state of `config` whose stores are made with the job's options in it.
fn state_with_job_stores(
    config: SessionConfig,
) -> datafusion::common::Result<datafusion::execution::SessionState> {
    let runtime = runtime_env(&config)?;
    Ok(SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build())
}

/// The scheduler's sessions: they plan with blobgc's functions.
pub fn session_state(
    config: SessionConfig,
) -> datafusion::common::Result<datafusion::execution::SessionState> {
    let ctx = SessionContext::new_with_state(state_with_job_stores(config)?);
    register(&ctx);
    Ok(ctx.state())
}

/// blobgc's scalar functions on a cluster: the plan's, and the sweep's, which deletes batches
/// where it runs.
fn scalar_functions() -> Vec<ScalarUDF> {
    let mut all = functions::scalar_functions();
    all.push(crate::sweep::sweep_batches());
    all
}

/// Registers blobgc's functions on a cluster session.
fn register(ctx: &SessionContext) {
    functions::register(ctx);
    ctx.register_udf(crate::sweep::sweep_batches());
}

/// Ballista's functions and blobgc's, for executors.
pub fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for udf in scalar_functions() {
        registry
            .scalar_functions
            .insert(udf.name().to_string(), Arc::new(udf));
    }
    for udaf in functions::aggregate_functions() {
        registry
            .aggregate_functions
            .insert(udaf.name().to_string(), Arc::new(udaf));
    }
    registry
}

/// A client session on the cluster at `url` (`df://host:port`), with `partitions` partitions per
/// stage and the job's S3 options sent along.
pub async fn remote(
    url: &str,
    partitions: usize,
    s3: &S3Options,
) -> crate::error::Result<SessionContext> {
    let mut config = session_config().with_target_partitions(partitions.max(1));
    *config
        .options_mut()
        .extensions
        .get_mut::<JobOptions>()
        .ok_or_else(|| crate::error::Error::runtime("job options missing from the session"))? =
        JobOptions(s3.clone());
    let ctx = SessionContext::remote_with_state(url, state_with_job_stores(config)?)
        .await
        .map_err(|e| crate::error::Error::usage(format!("--scheduler {url}: {e}")))?;
    // Connecting replaces the session's functions with Ballista's.
    register(&ctx);
    Ok(ctx)
}
