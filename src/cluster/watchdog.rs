//! The scheduler's watchdog: a job that makes no task progress for the stall timeout is
//! cancelled, so no client waits on it forever.
//!
//! **Why:** Ballista 55's scheduler can lose a task's completion (a status update it fails to
//! apply is logged, not retried), and then the job never ends; an executor that stops without
//! dying looks alive until its heartbeats are missed. Either way the client would wait forever.
//! Cancelling the job fails the client's query (exit 1), and nothing is deleted by a plan that
//! did not complete. The log names the job, its stage and its last progress.

use ballista_core::JobId;
use ballista_scheduler::scheduler_server::SchedulerServer;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What a job has done so far: it changes whenever a task starts or ends or a stage completes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Progress {
    completed_stages: usize,
    running_stages: Vec<usize>,
    /// Running tasks, as (stage, task).
    running_tasks: Vec<(usize, usize)>,
    available_tasks: usize,
}

/// Watches the scheduler's running jobs every so often, for as long as the process lives.
pub async fn watch(scheduler: SchedulerServer<LogicalPlanNode, PhysicalPlanNode>, stall: Duration) {
    let tick = (stall / 10).clamp(Duration::from_millis(200), Duration::from_secs(10));
    let mut seen: HashMap<JobId, (Progress, Instant)> = HashMap::new();
    loop {
        tokio::time::sleep(tick).await;
        let running = scheduler.state.task_manager.get_running_job_cache();
        seen.retain(|job, _| running.contains_key(job));
        for (job, info) in running.iter() {
            let now = {
                let graph = info.execution_graph.read().await;
                let mut running_tasks: Vec<(usize, usize)> = graph
                    .running_tasks()
                    .iter()
                    .map(|t| (t.stage_id, t.task_id))
                    .collect();
                running_tasks.sort_unstable();
                let mut running_stages = graph.running_stages();
                running_stages.sort_unstable();
                Progress {
                    completed_stages: graph.completed_stages(),
                    running_stages,
                    running_tasks,
                    available_tasks: graph.available_tasks(),
                }
            };
            let (last, since) = seen
                .entry(job.clone())
                .or_insert_with(|| (now.clone(), Instant::now()));
            if *last != now {
                (*last, *since) = (now, Instant::now());
            } else if since.elapsed() >= stall {
                tracing::warn!(
                    %job,
                    stages_done = now.completed_stages,
                    running_stages = ?now.running_stages,
                    running_tasks = ?now.running_tasks,
                    "no task progress for {stall:?} (--stall-timeout): cancelling the job"
                );
                if let Err(e) = scheduler.cancel_job(job.clone()).await {
                    tracing::error!(%job, "cancelling a stalled job failed: {e}");
                }
                seen.remove(job);
            }
        }
    }
}
