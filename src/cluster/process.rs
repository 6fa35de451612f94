//! `blobgc scheduler` and `blobgc executor`: Ballista's processes, with blobgc's functions and
//! sessions, so a cluster is deployed from the one binary (stock Ballista processes do not know
//! the functions a GC plan names).

use super::session::{self, GRPC_MAX_MESSAGE_BYTES};
use super::watchdog;
use crate::error::{Error, Result};
use crate::generation::parse_duration;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct SchedulerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: String,
    #[arg(long, default_value_t = 50050, value_name = "PORT")]
    pub port: u16,
    /// Host name executors and clients reach this scheduler by (default: --bind).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    /// Largest gRPC message, in bytes.
    #[arg(long, default_value_t = GRPC_MAX_MESSAGE_BYTES, value_name = "BYTES")]
    pub grpc_max_message_size: u32,
    /// An executor silent for this long is dead: its tasks are run again elsewhere.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub executor_timeout_seconds: u64,
    /// A job whose tasks make no progress for this long is cancelled, and its client fails
    /// (exit 1) instead of waiting forever: 10m, 90s.
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    pub stall_timeout: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExecutorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: String,
    /// Arrow Flight port (results and shuffle data).
    #[arg(long, default_value_t = 50051, value_name = "PORT")]
    pub port: u16,
    /// gRPC port (tasks from the scheduler).
    #[arg(long, default_value_t = 50052, value_name = "PORT")]
    pub grpc_port: u16,
    /// Host name the scheduler and other executors reach this executor by (default: --bind).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,
    #[arg(long, default_value = "df://127.0.0.1:50050", value_name = "URL")]
    pub scheduler: String,
    /// Directory for shuffle files (default: a temporary directory, removed when the executor
    /// stops on SIGTERM or Ctrl-C).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<String>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub concurrent_tasks: Option<usize>,
    /// Largest gRPC message, in bytes.
    #[arg(long, default_value_t = GRPC_MAX_MESSAGE_BYTES, value_name = "BYTES")]
    pub grpc_max_message_size: u32,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub heartbeat_interval_seconds: u64,
    /// Keep retrying to reach the scheduler this long at start-up.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub scheduler_connect_timeout_seconds: u16,
}

/// Runs a scheduler until the process is stopped.
pub async fn scheduler(args: SchedulerArgs) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", args.bind, args.port)
        .parse()
        .map_err(|e| Error::usage(format!("--bind {} --port {}: {e}", args.bind, args.port)))?;
    let config = SchedulerConfig {
        bind_host: args.bind.clone(),
        bind_port: args.port,
        external_host: args.external_host.unwrap_or(args.bind),
        grpc_server_max_decoding_message_size: args.grpc_max_message_size,
        grpc_server_max_encoding_message_size: args.grpc_max_message_size,
        grpc_client_max_message_size: args.grpc_max_message_size,
        executor_timeout_seconds: args.executor_timeout_seconds,
        expire_dead_executor_interval_seconds: (args.executor_timeout_seconds / 4).max(1),
        no_executors_grace_period_seconds: args.executor_timeout_seconds,
        ..SchedulerConfig::default()
    }
    .with_override_config_producer(Arc::new(session::session_config))
    .with_override_session_builder(Arc::new(session::session_state));
    let stall = parse_duration(&args.stall_timeout).map_err(|e| e.context("--stall-timeout"))?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::runtime(format!("scheduler: {e}")))?;
    let config = Arc::new(config);
    config
        .validate()
        .map_err(|e| Error::usage(format!("scheduler: {e}")))?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(|e| Error::runtime(format!("scheduler: {e}")))?;
    tokio::spawn(watchdog::watch(
        scheduler.clone(),
        Duration::from_secs(stall),
    ));
    start_grpc_service(addr, scheduler)
        .await
        .map_err(|e| Error::runtime(format!("scheduler on {addr}: {e}")))
}

/// Runs an executor until the process is stopped.
pub async fn executor(args: ExecutorArgs) -> Result<()> {
    let scheduler = url::Url::parse(&args.scheduler)
        .ok()
        .filter(|u| u.scheme() == "df")
        .and_then(|u| Some((u.host_str()?.to_string(), u.port().unwrap_or(50050))))
        .ok_or_else(|| {
            Error::usage(format!(
                "--scheduler {:?}: expected df://HOST:PORT",
                args.scheduler
            ))
        })?;
    // Without --work-dir, Ballista names a temporary directory it drops at once and never
    // removes: every stopped executor left its shuffle files behind (gigabytes a large run).
    // This one is removed when the executor stops on a signal.
    let temporary = match &args.work_dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("blobgc-executor-")
                .tempdir()
                .map_err(|e| Error::runtime(format!("executor: a work directory: {e}")))?,
        ),
    };
    let work_dir = args
        .work_dir
        .or_else(|| temporary.as_ref().map(|t| t.path().display().to_string()));
    let mut config = ExecutorProcessConfig {
        bind_host: args.bind.clone(),
        external_host: args.external_host.or(Some(args.bind)),
        port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host: scheduler.0,
        scheduler_port: scheduler.1,
        scheduler_connect_timeout_seconds: args.scheduler_connect_timeout_seconds,
        work_dir,
        grpc_max_decoding_message_size: args.grpc_max_message_size,
        grpc_max_encoding_message_size: args.grpc_max_message_size,
        executor_heartbeat_interval_seconds: args.heartbeat_interval_seconds,
        override_function_registry: Some(Arc::new(session::function_registry())),
        override_config_producer: Some(Arc::new(session::session_config)),
        override_runtime_producer: Some(Arc::new(crate::registry::runtime_env)),
        ..ExecutorProcessConfig::default()
    };
    if let Some(n) = args.concurrent_tasks {
        if n == 0 {
            return Err(Error::usage("--concurrent-tasks must be >= 1"));
        }
        config.vcores = n;
    }
    let stopped = start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::runtime(format!("executor: {e}")));
    drop(temporary);
    stopped
}
