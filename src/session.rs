//! The DataFusion session of a job in this process: blobgc's functions registered, and the
//! job's store registry (its object stores made from the job's own options), as on every
//! process of a cluster.

use crate::error::Result;
use crate::functions;
use crate::registry::{JobOptions, runtime_env};
use crate::store::S3Options;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

/// A session with blobgc's functions, using `partitions` parallel partitions, whose stores are
/// made with the job's options `s3`.
pub fn local(partitions: usize, s3: &S3Options) -> Result<SessionContext> {
    let config = tuned(
        SessionConfig::new()
            .with_target_partitions(partitions.max(1))
            .with_option_extension(JobOptions(s3.clone())),
    );
    let state = SessionStateBuilder::new()
        .with_runtime_env(runtime_env(&config)?)
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    functions::register(&ctx);
    Ok(ctx)
}

/// `config` with what blobgc's plans need of the planner, on every session that runs them:
/// - the partial phase of an aggregate passes its rows on as states after the first batch: the
///   filter's aggregate reduces nothing before its shuffle, its states are the fingerprints
///   themselves, and a map task then holds a batch, not its share of every shard;
/// - joins hash-partition both sides, even a small one: the listing is routed to its shards
///   by a join with the table of shards, which must not be broadcast instead.
pub fn tuned(mut config: SessionConfig) -> SessionConfig {
    let options = config.options_mut();
    options
        .execution
        .skip_partial_aggregation_probe_ratio_threshold = 0.0;
    options
        .execution
        .skip_partial_aggregation_probe_rows_threshold = 0;
    options.optimizer.hash_join_single_partition_threshold = 0;
    options.optimizer.hash_join_single_partition_threshold_rows = 0;
    config
}
