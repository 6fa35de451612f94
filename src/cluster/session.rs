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
use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::{config_datafusion_err, config_err, exec_datafusion_err};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use std::any::Any;
use std::sync::Arc;
use url::Url;

/// Results, shuffle fetches and partial filters travel as single gRPC messages: a partial filter
/// is as large as the filter is before folding (26 MB at 10M blobs), above gRPC's 4-16 MiB
/// defaults.
pub const GRPC_MAX_MESSAGE_BYTES: u32 = 1 << 30;

/// The job's object-store options, sent with every task as `blobgc.s3.*` keys, so executors
/// reach the job's stores as the client does. (Written out rather than with DataFusion's
/// `extensions_options!`, whose entries lack the prefix: they would not be applied remotely.)
#[derive(Debug, Clone, Default)]
pub struct JobOptions(pub S3Options);

impl ConfigExtension for JobOptions {
    const PREFIX: &'static str = "blobgc";
}

impl ExtensionOptions for JobOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::common::Result<()> {
        fn parse<T: std::str::FromStr>(key: &str, value: &str) -> datafusion::common::Result<T> {
            value
                .parse()
                .map_err(|_| config_datafusion_err!("blobgc.{key}: invalid value {value:?}"))
        }
        let o = &mut self.0;
        match key {
            "s3.endpoint" => o.endpoint = Some(value.to_string()),
            "s3.region" => o.region = Some(value.to_string()),
            "s3.allow_http" => o.allow_http = Some(parse(key, value)?),
            "s3.virtual_hosted_style" => o.virtual_hosted_style = Some(parse(key, value)?),
            "s3.max_retries" => o.max_retries = Some(parse(key, value)?),
            "s3.retry_timeout_seconds" => o.retry_timeout_seconds = Some(parse(key, value)?),
            "s3.access_key_id" => o.access_key_id = Some(value.to_string()),
            "s3.secret_access_key" => o.secret_access_key = Some(value.to_string()),
            _ => return config_err!("unknown option blobgc.{key}"),
        }
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let o = &self.0;
        let entry = |key: &str, value: Option<String>| ConfigEntry {
            key: format!("{}.s3.{key}", Self::PREFIX),
            value,
            description: "",
        };
        vec![
            entry("endpoint", o.endpoint.clone()),
            entry("region", o.region.clone()),
            entry("allow_http", o.allow_http.map(|v| v.to_string())),
            entry(
                "virtual_hosted_style",
                o.virtual_hosted_style.map(|v| v.to_string()),
            ),
            entry("max_retries", o.max_retries.map(|v| v.to_string())),
            entry(
                "retry_timeout_seconds",
                o.retry_timeout_seconds.map(|v| v.to_string()),
            ),
            entry("access_key_id", o.access_key_id.clone()),
            entry("secret_access_key", o.secret_access_key.clone()),
        ]
    }
}

/// The S3 options of the job a function runs for: the ones sent with the task on a cluster,
/// else this process's own.
pub fn job_s3(options: &ConfigOptions) -> S3Options {
    options
        .extensions
        .get::<JobOptions>()
        .map(|j| j.0.clone())
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
        JobOptions(s3.clone());
    let ctx = SessionContext::remote_with_state(url, state_with_job_stores(config)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use ballista_core::extension::SessionConfigHelperExt;

    #[test]
    fn job_options_survive_the_trip_to_another_process() {
        let s3 = S3Options {
            endpoint: Some("http://127.0.0.1:8333".into()),
            allow_http: Some(true),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..S3Options::default()
        };
        let mut sent = session_config();
        *sent
            .options_mut()
            .extensions
            .get_mut::<JobOptions>()
            .expect("extension") = JobOptions(s3.clone());
        let pairs = sent.to_key_value_pairs();
        let received = session_config().update_from_key_value_pair(&pairs);
        assert_eq!(job_s3(received.options()), s3);
    }
}
