//! `deployments/`: the Kubernetes manifests validate against the Kubernetes schemas
//! (`kubernetes-validate --strict`), the Dockerfile passes hadolint (no Docker engine runs on the
//! project's machines; where one does, the image is built too), and both say what an operator
//! needs: probes on `/ready` and `/health`, a volume for the checkpoints, a non-root user, the
//! token from a Secret, scrape annotations, and a stop grace above the processor's own. The
//! default pipeline (the image's and the ConfigMap's, kept equal) passes `processor check`.
//!
//! `scripts/deploy-lint-deps.sh` installs the validators (pip, in a cached virtual environment).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// How long a stop waits for the sources' final barriers (`STOP_GRACE` in
/// `crates/pipeline/src/runtime/stop.rs`); the final checkpoint is written after it.
const PROCESSOR_STOP_GRACE_SECONDS: u64 = 10;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deployments() -> PathBuf {
    workspace().join("deployments")
}

/// The directory of the validators' executables, installed when missing.
fn tools() -> PathBuf {
    let output = Command::new("bash")
        .arg(workspace().join("scripts/deploy-lint-deps.sh"))
        .output()
        .expect("run scripts/deploy-lint-deps.sh");
    assert!(
        output.status.success(),
        "scripts/deploy-lint-deps.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(stdout.lines().last().expect("the tools' directory").trim())
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deployments().join("kubernetes"))
        .expect("deployments/kubernetes")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of every manifest, as JSON (read by the validators' own PyYAML).
fn documents(tools: &Path) -> Vec<serde_json::Value> {
    let script = "import json, sys, yaml\n\
                  docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
                  print(json.dumps(docs))";
    let output = run(Command::new(tools.join("python"))
        .arg("-c")
        .arg(script)
        .args(manifests()));
    assert!(output.status.success(), "{}", text(&output));
    serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout).expect("manifests as JSON")
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let tools = tools();
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let output = run(Command::new(tools.join("kubernetes-validate"))
        .arg("--strict")
        .args(&files));
    let said = text(&output);
    assert!(output.status.success(), "kubernetes-validate: {said}");
    for kind in ["statefulset", "configmap", "secret", "service"] {
        assert!(
            said.contains(&format!("passed for resource {kind}/")),
            "{kind}: {said}"
        );
    }
    // The validator is real: a manifest with a wrong type or an unknown field fails.
    let bad = tempfile::tempdir().expect("temp dir");
    for (name, manifest) in [
        (
            "type.yaml",
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: x}\nspec: {replicas: one, selector: {}, serviceName: x, template: {}}\n",
        ),
        (
            "field.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], colour: blue}\n",
        ),
    ] {
        let path = bad.path().join(name);
        std::fs::write(&path, manifest).expect("write");
        let output = run(Command::new(tools.join("kubernetes-validate"))
            .arg("--strict")
            .arg(&path));
        assert!(!output.status.success(), "{name} passed: {}", text(&output));
    }
}

#[test]
fn the_statefulset_has_what_an_operator_needs() {
    let docs = documents(&tools());
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        docs.iter().filter(|d| d["kind"] == kind).collect()
    };
    let set = of("StatefulSet");
    assert_eq!(set.len(), 1);
    let spec = &set[0]["spec"];
    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];

    // Probes: readiness on /ready, liveness on /health, on the API's port.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    // Requests and limits for both CPU and memory.
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "resources.{bound}.{resource}"
            );
        }
    }
    // A graceful stop long enough for the final checkpoint.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(grace > PROCESSOR_STOP_GRACE_SECONDS + 10, "{grace}");
    // Prometheus scrape annotations on the pod.
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    // Checkpoints and state on a claim of the StatefulSet, mounted where the pipeline keeps them.
    let claim = &spec["volumeClaimTemplates"][0]["metadata"]["name"];
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| &m["name"] == claim && m["mountPath"] == "/var/lib/dataflow"),
        "{mounts:?}"
    );
    // The token from the Secret, the pipeline from the ConfigMap.
    let secret = of("Secret");
    let token = &container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "DATAFLOW_TOKEN")
        .expect("DATAFLOW_TOKEN")["valueFrom"]["secretKeyRef"];
    assert_eq!(token["name"], secret[0]["metadata"]["name"]);
    assert!(secret[0]["stringData"][token["key"].as_str().expect("key")].is_string());
    let config_map = of("ConfigMap");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"].is_object())
        .expect("a ConfigMap volume");
    assert_eq!(
        volume["configMap"]["name"],
        config_map[0]["metadata"]["name"]
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == volume["name"] && m["mountPath"] == "/etc/dataflow"),
        "{mounts:?}"
    );
    // Non-root, as the image's user.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    let dockerfile = std::fs::read_to_string(deployments().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("\nUSER 10001:10001\n"),
        "the image's user changed"
    );
    // The Services select the pod, and the StatefulSet names the headless one.
    let services = of("Service");
    assert!(services
        .iter()
        .any(|s| s["metadata"]["name"] == spec["serviceName"] && s["spec"]["clusterIP"] == "None"));
    for service in services {
        assert_eq!(
            service["spec"]["selector"],
            spec["template"]["metadata"]["labels"]
        );
    }

    // The ConfigMap's pipeline is the image's default one, and it passes `processor check`.
    let in_map = config_map[0]["data"]["pipeline.yaml"]
        .as_str()
        .expect("pipeline.yaml in the ConfigMap");
    let default = std::fs::read_to_string(deployments().join("pipeline.yaml")).expect("pipeline");
    assert!(
        in_map == default,
        "the ConfigMap's pipeline.yaml differs from deployments/pipeline.yaml"
    );
    let output = run(Command::new(env!("CARGO_BIN_EXE_processor"))
        .args(["check", "--config"])
        .arg(deployments().join("pipeline.yaml"))
        .env("DATAFLOW_TOKEN", "a-token"));
    assert!(
        output.status.success(),
        "processor check: {}",
        text(&output)
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_builds_where_docker_runs() {
    let tools = tools();
    let dockerfile = deployments().join("Dockerfile");
    let output = run(Command::new(tools.join("hadolint")).arg(&dockerfile));
    assert!(output.status.success(), "hadolint: {}", text(&output));
    // hadolint is real: an unpinned image and an unpinned apt-get install fail it.
    let bad = tempfile::tempdir().expect("temp dir");
    let bad_file = bad.path().join("Dockerfile");
    std::fs::write(
        &bad_file,
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n",
    )
    .expect("write");
    let output = run(Command::new(tools.join("hadolint")).arg(&bad_file));
    assert!(!output.status.success(), "{}", text(&output));

    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    assert_eq!(
        text.matches("\nFROM ").count(),
        2,
        "a build and a runtime stage"
    );
    assert!(text.contains("\nHEALTHCHECK ") && text.contains("GET /health"));
    assert!(text.contains("\nVOLUME [\"/var/lib/dataflow\"]\n"));
    assert!(text.contains("/etc/dataflow/pipeline.yaml"));

    // Where a Docker engine answers, the image builds (a release build: minutes).
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|output| output.status.success());
    if engine {
        let output = run(Command::new("docker")
            .args(["build", "-f"])
            .arg(&dockerfile)
            .args(["-t", "dataflow:test", "."])
            .current_dir(workspace()));
        assert!(
            output.status.success(),
            "docker build: {}",
            self::text(&output)
        );
    } else {
        eprintln!("no Docker engine here: the Dockerfile was linted with hadolint, not built");
    }
}
