"""blobgc nightly on a Ballista cluster, with a look at the plan before anything is deleted.

plan (on the cluster) -> inspect the report -> sweep (on the cluster). Each step runs the blobgc
image in Kubernetes. `blobgc plan` exits 3 when a safety check refused the plan (nothing to
sweep), 5 when another run holds the store's lease (nothing done: retry later); the inspection step stops the run when the plan would delete more than the policy
allows; `blobgc sweep` resumes where it stopped when rerun (exit 4: some batches failed).
"""

import json
from datetime import datetime, timedelta

from airflow import DAG
from airflow.exceptions import AirflowFailException
from airflow.operators.python import PythonOperator
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

IMAGE = "blobgc:latest"
SCHEDULER = "df://blobgc-scheduler:50050"
PLAN_ROOT = "s3://james-exports/blobgc-plans"
# The plan of this DAG run: the sweep must execute exactly what was inspected.
PLAN = PLAN_ROOT + "/airflow-{{ ts_nodash }}"
# Policy: never delete more than this share of the eligible blobs in one night.
MAX_CANDIDATE_SHARE = 0.2

job_file = k8s.V1Volume(
    name="job", config_map=k8s.V1ConfigMapVolumeSource(name="blobgc-cluster-job")
)
job_mount = k8s.V1VolumeMount(name="job", mount_path="/etc/blobgc")
s3_secret = [k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="blobgc-s3"))]


def blobgc(task_id, arguments):
    """A step running the blobgc image; its JSON report (last stdout line) goes to XCom."""
    return KubernetesPodOperator(
        task_id=task_id,
        name=task_id.replace("_", "-"),
        image=IMAGE,
        arguments=arguments + ["--report", "/airflow/xcom/return.json"],
        env_from=s3_secret,
        volumes=[job_file],
        volume_mounts=[job_mount],
        do_xcom_push=True,
        get_logs=True,
    )


def inspect(ti, **_):
    """Stops the run unless the plan is planned and within policy."""
    report = ti.xcom_pull(task_ids="plan")
    if isinstance(report, str):
        report = json.loads(report)
    if report["status"] == "aborted":
        raise AirflowFailException("blobgc refused the plan: " + str(report["abort_reason"]))
    eligible = max(report["eligible_blob_count"], 1)
    share = report["candidate_count"] / eligible
    if share > MAX_CANDIDATE_SHARE:
        raise AirflowFailException(
            f"the plan would delete {report['candidate_count']} of {eligible} eligible blobs "
            f"({share:.0%}), above the {MAX_CANDIDATE_SHARE:.0%} policy: look at {PLAN}"
        )


with DAG(
    dag_id="blobgc",
    schedule="17 3 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0, "execution_timeout": timedelta(hours=6)},
    tags=["blobgc"],
) as dag:
    plan = blobgc(
        "plan",
        ["plan", "--job", "/etc/blobgc/job.toml", "--scheduler", SCHEDULER, "--out", PLAN],
    )
    check = PythonOperator(task_id="inspect", python_callable=inspect)
    sweep = blobgc(
        "sweep",
        ["sweep", "--plan", PLAN, "--job", "/etc/blobgc/job.toml", "--scheduler", SCHEDULER],
    )
    plan >> check >> sweep
