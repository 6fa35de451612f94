//! The deploy kit: manifests parse and run the right image and commands, every flag they pass
//! is one the binary knows, and the Airflow DAG compiles.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

/// The python3 of the test venv (it has PyYAML), installed by `tests/setup-seaweedfs.sh`
/// once per test process.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let setup = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/setup-seaweedfs.sh");
        let out = Command::new("bash")
            .arg(setup)
            .output()
            .expect("setup script");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let weed = PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim());
        weed.with_file_name("python3")
    })
}

/// The stdout of `python3 -c script args...`, which must succeed.
fn run_python(script: &str, args: &[&Path]) -> Vec<u8> {
    let out = Command::new(python())
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every YAML document of a file, as JSON.
fn yaml(rel: &str) -> Vec<Value> {
    let out = run_python(
        "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        &[&deploy(rel)],
    );
    serde_json::from_slice(&out).expect("json")
}

fn doc<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

/// Checks that `args` is a blobgc command whose every flag the binary knows.
fn known_command(args: &[String]) {
    let sub = &args[0];
    let help = Command::new(env!("CARGO_BIN_EXE_blobgc"))
        .args([sub.as_str(), "--help"])
        .output()
        .expect("blobgc --help");
    assert!(help.status.success(), "unknown subcommand {sub}");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "blobgc {sub} has no {flag}"
        );
    }
}

fn container(pod_spec: &Value) -> &Value {
    &pod_spec["containers"][0]
}

#[test]
fn kubernetes_cluster_runs_the_scheduler_and_executors_of_one_image() {
    let docs = yaml("kubernetes/cluster.yaml");
    let scheduler =
        container(&doc(&docs, "Deployment", "blobgc-scheduler")["spec"]["template"]["spec"]);
    let executor =
        container(&doc(&docs, "Deployment", "blobgc-executor")["spec"]["template"]["spec"]);
    for (c, sub) in [(scheduler, "scheduler"), (executor, "executor")] {
        assert!(c["image"].as_str().unwrap().starts_with("blobgc:"));
        let args = strings(&c["args"]);
        assert_eq!(args[0], sub);
        known_command(&args);
    }
    let args = strings(&executor["args"]);
    let at = args.iter().position(|a| a == "--scheduler").unwrap();
    assert_eq!(args[at + 1], "df://blobgc-scheduler:50050");
    let service = doc(&docs, "Service", "blobgc-scheduler");
    assert_eq!(service["spec"]["ports"][0]["port"], 50050);
}

#[test]
fn kubernetes_cronjobs_submit_the_job_file_of_their_config_map() {
    for (file, config) in [
        ("kubernetes/cronjob-cluster.yaml", "blobgc-cluster-job"),
        ("kubernetes/cronjob.yaml", "blobgc-job"),
    ] {
        let docs = yaml(file);
        let map = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap")
            .expect("ConfigMap");
        assert_eq!(map["metadata"]["name"], config);
        let job: toml::Value = toml::from_str(map["data"]["job.toml"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{file}: job.toml: {e}"));
        assert!(job.get("store").is_some() && job.get("references").is_some());
        let cron = docs
            .iter()
            .find(|d| d["kind"] == "CronJob")
            .expect("CronJob");
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["configMap"]["name"], config);
        let c = container(pod);
        assert!(c["image"].as_str().unwrap().starts_with("blobgc:"));
        let args = strings(&c["args"]);
        assert_eq!(args[0], "run");
        known_command(&args);
        if file.contains("cluster") {
            assert!(args.contains(&"df://blobgc-scheduler:50050".to_string()));
        }
    }
}

#[test]
fn compose_starts_a_scheduler_and_two_executors() {
    let compose = &yaml("compose/compose.yaml")[0]["services"];
    let command = |s: &str| strings(&compose[s]["command"]);
    assert_eq!(command("scheduler")[0], "scheduler");
    for e in ["executor-1", "executor-2"] {
        let args = command(e);
        assert_eq!(args[0], "executor");
        assert!(args.contains(&"df://scheduler:50050".to_string()));
        known_command(&args);
    }
    known_command(&command("scheduler"));
    known_command(&command("gc"));
    for s in ["scheduler", "executor-1", "executor-2", "gc"] {
        assert_eq!(compose[s]["image"], "blobgc:latest");
    }
}

#[test]
fn argo_plans_inspects_then_sweeps() {
    let docs = yaml("argo/workflow.yaml");
    let spec = &doc(&docs, "CronWorkflow", "blobgc")["spec"]["workflowSpec"];
    let steps: Vec<&str> = spec["templates"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0]["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["plan", "inspect", "sweep"]);
    for t in spec["templates"].as_array().unwrap() {
        if t["container"].is_object() {
            let args = strings(&t["container"]["args"]);
            assert!(["plan", "sweep"].contains(&args[0].as_str()));
            known_command(&args);
        }
    }
}

#[test]
fn the_airflow_dag_compiles() {
    let pyc = std::env::temp_dir().join(format!("blobgc_dag-{}.pyc", std::process::id()));
    run_python(
        "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)",
        &[&deploy("airflow/blobgc_dag.py"), &pyc],
    );
    let dag = std::fs::read_to_string(deploy("airflow/blobgc_dag.py")).unwrap();
    assert!(dag.contains("plan >> check >> sweep"));
}

#[test]
fn the_gc_job_files_users_copy_are_valid() {
    for name in ["demo", "s3", "cluster", "james-postgres"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("jobs/{name}.toml"));
        let file: blobgc::job::JobArgs =
            blobgc::options::read_job_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            file.store.is_some() && !file.references.is_empty(),
            "{name}"
        );
    }
    let cluster: blobgc::job::JobArgs = blobgc::options::read_job_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/cluster.toml"),
    )
    .unwrap();
    assert!(cluster.scheduler.is_some_and(|s| s.starts_with("df://")));
    let james: blobgc::job::JobArgs = blobgc::options::read_job_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/james-postgres.toml"),
    )
    .unwrap();
    assert_eq!(james.james.tables().unwrap().len(), 3);
}
