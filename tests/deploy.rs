//! deploy/: the DaemonSet manifest and the Grafana dashboard parse, the
//! manifest asks for what the tracer needs and no more, the tracer runs
//! with the manifest's arguments, and every metric the dashboard queries is
//! one that tracer really exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use close_wait_tests::*;
use serde_json::Value;

fn deploy(name: &str) -> PathBuf {
    workspace().join("deploy").join(name)
}

/// The YAML documents of `path`, parsed by Debian's python3-yaml (an
/// independent parser) and handed over as JSON.
fn yaml_documents(path: &PathBuf) -> Vec<Value> {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(
        out.status.success(),
        "{} does not parse as YAML (python3-yaml is installed by `cargo xtask setup`): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn daemonset() -> Value {
    let docs = yaml_documents(&deploy("close-wait.yaml"));
    docs.into_iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet in deploy/close-wait.yaml")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// The value after `flag` in `args`.
fn arg_of<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| {
        panic!("no {flag} in {args:?}");
    });
    &args[i + 1]
}

#[test]
fn daemonset_asks_for_what_the_tracer_needs_only() {
    let ds = daemonset();
    assert_eq!(ds["apiVersion"], "apps/v1");
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(spec["hostPID"], true, "holders and namespaces need hostPID");
    assert_ne!(spec["hostNetwork"], true, "hostNetwork is not needed");
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let add: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
    let want: BTreeSet<String> = [
        "BPF",
        "PERFMON",
        "SYS_PTRACE",
        "DAC_READ_SEARCH",
        "SYS_ADMIN",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(add, want, "capabilities");
    // tracefs from the host, read-only
    let mounts = c["volumeMounts"].as_array().unwrap();
    let tracefs = mounts
        .iter()
        .find(|m| m["mountPath"] == "/sys/kernel/tracing")
        .expect("/sys/kernel/tracing mounted");
    assert_eq!(tracefs["readOnly"], true);
    let vol = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == tracefs["name"])
        .unwrap();
    assert_eq!(vol["hostPath"]["path"], "/sys/kernel/tracing");
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][r].is_string(),
                "resources.{kind}.{r}: {}",
                c["resources"]
            );
        }
    }
    // Scrape annotations point at the port the tracer listens on.
    let args = strings(&c["args"]);
    assert_eq!(args[0], "record");
    assert!(
        !args.iter().any(|a| a == "--duration"),
        "runs until stopped"
    );
    let listen = arg_of(&args, "--prometheus");
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        listen.starts_with("0.0.0.0:"),
        "pod address, not loopback: {listen}"
    );
    let ann = &pod["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port);
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    assert_eq!(c["ports"][0]["containerPort"].to_string(), port);
}

/// Every PromQL expression of the dashboard (panel targets and template
/// variable queries).
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut q = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        let targets = p["targets"].as_array().expect("every panel has targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            q.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(s) = v["query"]["query"].as_str() {
            q.push(s.to_owned());
        }
    }
    q
}

/// Metric names (`close_wait_...`) in a PromQL expression.
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("close_wait_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.push(name);
    }
    out
}

#[test]
fn dashboard_covers_containers_percentiles_and_losses() {
    let text = std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(d["title"].is_string() && d["uid"].is_string());
    let queries = dashboard_queries(&d);
    let has = |what: &str, f: &dyn Fn(&str) -> bool| {
        assert!(
            queries.iter().any(|q| f(q)),
            "no query for {what}: {queries:#?}"
        );
    };
    has("stuck sockets by container and comm", &|q| {
        q.contains("close_wait_holder_stuck_sockets") && q.contains("by (container, comm)")
    });
    has("duration percentiles", &|q| {
        q.contains("histogram_quantile(0.99") && q.contains("close_wait_duration_seconds_bucket")
    });
    has("lost events", &|q| {
        q.contains("close_wait_lost_events_total")
    });
    assert_eq!(
        metrics_in("rate(close_wait_a_b[5m]) / close_wait_c"),
        ["close_wait_a_b", "close_wait_c"]
    );
}

/// The tracer, started with the DaemonSet's arguments (listening on
/// loopback instead of the pod address), exports every metric the
/// dashboard queries.
#[test]
fn dashboard_queries_only_metrics_the_tracer_exports() {
    if !privileged("dashboard_queries_only_metrics_the_tracer_exports") {
        return;
    }
    let ds = daemonset();
    let mut args = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"]);
    let addr = format!("127.0.0.1:{}", free_loopback_port());
    let i = args.iter().position(|a| a == "--prometheus").unwrap();
    args[i + 1] = addr.clone();
    // A short interval and threshold: the first checkpoint comes soon, and
    // a socket is stuck after a second.
    for (flag, v) in [("--interval", "1s"), ("--threshold", "1s")] {
        let j = args.iter().position(|a| a == flag).unwrap();
        args[j + 1] = v.into();
    }
    // Only the sockets made here (others' tests run on this machine).
    let (closer, closer_port) = server(&["--mode", "close-after-eof", "--delay-ms", "50"]);
    let (holder, holder_port) = server(&["--mode", "never-read", "--hold", "60"]);
    let (cp, hp) = (closer_port.to_string(), holder_port.to_string());
    let mut args: Vec<&str> = args[1..].iter().map(String::as_str).collect();
    args.extend(["-L", &cp, "-L", &hp]);
    let tracer = Tracer::start(&args);
    // A closed episode (the duration histogram) and a stuck socket (the
    // stuck-by-holder gauge): series exist only once there is something.
    let c1 = peer("client", &["--connect", &v4(closer_port)]);
    let c2 = peer("client", &["--connect", &v4(holder_port), "--send", "4"]);
    closer.expect("done", Duration::from_secs(10));
    let (_, local, remote) = parse_accepted(&holder.expect("accepted", Duration::from_secs(10)));
    for c in [&c1, &c2] {
        c.expect("done", Duration::from_secs(10));
    }
    settle_stuck(&[(local, remote)], 1000);
    let body = wait_for(
        "/metrics with the stuck socket",
        Duration::from_secs(10),
        || {
            let (code, b) = http_get_plain(&addr, "/metrics").ok()?;
            (code == 200 && metric_sample(&b, "close_wait_stuck_sockets", &[]) == Some(1.0))
                .then_some(b)
        },
    );
    let exported = metric_names(&body);
    let text = std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap();
    let d: Value = serde_json::from_str(&text).unwrap();
    let mut queried = BTreeSet::new();
    for q in dashboard_queries(&d) {
        queried.extend(metrics_in(&q));
    }
    assert!(queried.len() >= 6, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, which the tracer does not export:\n{body}"
    );
    stop_ok(tracer);
}
