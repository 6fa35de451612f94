//! Sessions that run a GC plan on Ballista: what every process of a cluster must agree on.
//!
//! The scheduler plans and the executors run stages of plans that name blobgc's functions, read
//! the job's tables and write next to its plan. So every process builds its sessions here: the
//! same functions, the same config extension (the job's S3 options, sent with every task), and
//! object stores made from those options, not from whatever the process was started with.

use crate::functions;
use crate::store::{S3Options, store_for};
use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::common::config::ConfigExtension;
use datafusion::common::config::ConfigOptions;
use datafusion::common::{exec_datafusion_err, extensions_options};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use std::sync::Arc;
use url::Url;

/// Results, shuffle fetches and partial filters travel as single gRPC messages: a partial filter
/// is as large as the filter is before folding (26 MB at 10M blobs), above gRPC's 4-16 MiB
/// defaults.
pub const GRPC_MAX_MESSAGE_BYTES: u32 = 1 << 30;

extensions_options! {
    /// The job's object-store options, sent with every task (`blobgc.*` keys), so executors
    /// reach the job's stores as the client does.
    pub struct JobOptions {
        pub s3_endpoint: Option<String>, default = None
        pub s3_region: Option<String>, default = None
        pub s3_allow_http: Option<bool>, default = None
        pub s3_virtual_hosted_style: Option<bool>, default = None
        pub s3_max_retries: Option<usize>, default = None
        pub s3_retry_timeout_seconds: Option<u64>, default = None
        pub s3_access_key_id: Option<String>, default = None
        pub s3_secret_access_key: Option<String>, default = None
    }
}

impl ConfigExtension for JobOptions {
    const PREFIX: &'static str = "blobgc";
}

impl From<&S3Options> for JobOptions {
    fn from(s: &S3Options) -> Self {
        JobOptions {
            s3_endpoint: s.endpoint.clone(),
            s3_region: s.region.clone(),
            s3_allow_http: s.allow_http,
            s3_virtual_hosted_style: s.virtual_hosted_style,
            s3_max_retries: s.max_retries,
            s3_retry_timeout_seconds: s.retry_timeout_seconds,
            s3_access_key_id: s.access_key_id.clone(),
            s3_secret_access_key: s.secret_access_key.clone(),
        }
    }
}

impl From<&JobOptions> for S3Options {
    fn from(j: &JobOptions) -> Self {
        S3Options {
            endpoint: j.s3_endpoint.clone(),
            region: j.s3_region.clone(),
            allow_http: j.s3_allow_http,
            virtual_hosted_style: j.s3_virtual_hosted_style,
            max_retries: j.s3_max_retries,
            retry_timeout_seconds: j.s3_retry_timeout_seconds,
            access_key_id: j.s3_access_key_id.clone(),
            secret_access_key: j.s3_secret_access_key.clone(),
        }
    }
}

/// The S3 options of the job a function runs for: the ones sent with the task on a cluster,
/// else this process's own.
pub fn job_s3(options: &ConfigOptions) -> S3Options {
    options
        .extensions
        .get::<JobOptions>()
        .map(S3Options::from)
        .unwrap_or_else(crate::store::configured_s3)
}

/// The session config of every cluster process: Ballista's, with the job options known, so the
/// keys a client sets are applied on the executors.
pub fn session_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_option_extension(JobOptions::default())
        .with_ballista_grpc_client_max_message_size(GRPC_MAX_MESSAGE_BYTES as usize)
}

/// A runtime whose object stores are made with the job's options from `config`.
pub fn runtime_env(config: &SessionConfig) -> datafusion::common::Result<Arc<RuntimeEnv>> {
    let s3 = job_s3(config.options());
    Ok(Arc::new(
        RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(JobStores { s3 }))
            .build()?,
    ))
}

/// The scheduler's sessions: they plan with blobgc's functions.
pub fn session_state(
    config: SessionConfig,
) -> datafusion::common::Result<datafusion::execution::SessionState> {
    let runtime = runtime_env(&config)?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    functions::register(&ctx);
    Ok(ctx.state())
}

/// Ballista's functions and blobgc's, for executors.
pub fn function_registry() -> BallistaFunctionRegistry {
    let mut registry = BallistaFunctionRegistry::default();
    for udf in functions::scalar_functions() {
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
        JobOptions::from(s3);
    let runtime = runtime_env(&config)?;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    let ctx = SessionContext::remote_with_state(url, state)
        .await
        .map_err(|e| crate::error::Error::usage(format!("--scheduler {url}: {e}")))?;
    // Connecting replaces the session's functions with Ballista's.
    functions::register(&ctx);
    Ok(ctx)
}

/// Object stores made on demand, with one job's options.
#[derive(Debug)]
struct JobStores {
    s3: S3Options,
}

impl ObjectStoreRegistry for JobStores {
    fn register_store(
        &self,
        _url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        // Stores are made from URLs and the job's options only, so every process agrees.
        None
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        store_for(url, &self.s3).map_err(|e| exec_datafusion_err!("{e}"))
    }
}
