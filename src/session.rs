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
    let config = SessionConfig::new()
        .with_target_partitions(partitions.max(1))
        .with_option_extension(JobOptions(s3.clone()));
    let state = SessionStateBuilder::new()
        .with_runtime_env(runtime_env(&config)?)
        .with_config(config)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    functions::register(&ctx);
    Ok(ctx)
}
