//! The store registry of a job's sessions: object stores made from the job's own options, in
//! this process and on every process of a cluster, never from whatever a process was started
//! with. The options travel with every task as a config extension ([`JobOptions`]).

use crate::store::{S3Options, store_for};
use datafusion::common::config::{ConfigEntry, ConfigExtension, ConfigOptions, ExtensionOptions};
use datafusion::common::{config_datafusion_err, config_err, exec_datafusion_err};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::ObjectStore;
use std::any::Any;
use std::sync::Arc;
use url::Url;

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

/// The S3 options of the job a session runs (set by [`crate::session::local`], or sent with
/// the task on a cluster); none beyond the environment's when the session has none.
pub fn job_s3(options: &ConfigOptions) -> S3Options {
    options
        .extensions
        .get::<JobOptions>()
        .map(|j| j.0.clone())
        .unwrap_or_default()
}

/// The S3 options of the job `ctx` runs.
pub fn session_s3(ctx: &SessionContext) -> S3Options {
    job_s3(ctx.copied_config().options())
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

/// Object stores made on demand, with one job's options.
#[derive(Debug)]
pub struct JobStores {
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
        let mut sent = crate::cluster::session::session_config();
        *sent
            .options_mut()
            .extensions
            .get_mut::<JobOptions>()
            .expect("extension") = JobOptions(s3.clone());
        let pairs = sent.to_key_value_pairs();
        let received = crate::cluster::session::session_config().update_from_key_value_pair(&pairs);
        assert_eq!(job_s3(received.options()), s3);
    }
}
