//! A Go client (tests/helpers/goleak.go, built with Debian's golang-go)
//! leaks connections from main.dialBackend <- main.poolGet <- main.main:
//! the report names those frames with goleak.go lines in the JSON stack,
//! the human report shows them with the Go runtime/net/syscall frames
//! around them folded, and the holder's threads are goroutines' OS threads.

use std::{path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use close_wait_tests::*;

const THRESHOLD_MS: u64 = 1000;
const SECS10: Duration = Duration::from_secs(10);

/// goleak.go built once per test binary (GOCACHE in a temp dir, no module,
/// nothing downloaded).
fn goleak_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = build_dir("goleak");
        let exe = dir.join("goleak");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&exe)
            .arg(helper("goleak.go"))
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .output()
            .expect("go (Debian's golang-go, `cargo xtask setup` installs it) is needed");
        assert!(
            out.status.success(),
            "go build goleak.go: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        exe
    })
    .clone()
}

#[test]
fn go_client_leak_names_its_main_frames() {
    if !privileged("go_client_leak_names_its_main_frames") {
        return;
    }
    let bin = goleak_bin();
    let tracer = Tracer::start(&["--threshold", "1s"]);
    // The server hangs up on every connection at once: the client's sockets
    // sit in CLOSE_WAIT, never closed.
    let (_server, port) = server(&["--mode", "close-now", "--count", "3", "--hold", "60"]);
    let client = Proc::spawn("goleak", Command::new(&bin).args([&v4(port), "3", "60"]));
    let mut tuples = Vec::new();
    for _ in 0..3 {
        let l = client.expect("connected ", SECS10);
        let local = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("local="))
            .unwrap()
            .to_string();
        tuples.push((local, v4(port)));
    }
    client.expect("leaked 3", SECS10);
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);

    let pid = client.pid();
    let groups: Vec<&serde_json::Value> = out.json["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["pid"] == pid)
        .collect();
    assert_eq!(groups.len(), 1, "{}", pretty(&out.json["groups"]));
    let g = groups[0];
    assert_eq!(g["count"], 3, "{}", pretty(g));
    assert_eq!(g["threads"]["runtime"], "go", "{}", pretty(g));

    // The JSON keeps every frame: the net/syscall frames inside, the main.*
    // frames in call order with goleak.go lines, the runtime outside.
    let stack: Vec<&str> = g["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let at = |f: &str| {
        stack
            .iter()
            .position(|l| l.starts_with(&format!("{f}+")))
            .unwrap_or_else(|| panic!("no {f} frame in {stack:#?}"))
    };
    let (dial, pool, main) = (at("main.dialBackend"), at("main.poolGet"), at("main.main"));
    assert!(dial < pool && pool < main, "out of order: {stack:#?}");
    for i in [dial, pool, main] {
        assert!(
            stack[i].contains("goleak.go:"),
            "no goleak.go:LINE in {}",
            stack[i]
        );
    }
    assert!(
        stack[..dial].iter().any(|f| f.starts_with("net.")),
        "no net package frame inside main.dialBackend: {stack:#?}"
    );
    assert!(
        stack[main..].iter().any(|f| f.starts_with("runtime.main")),
        "no runtime.main outside main.main: {stack:#?}"
    );

    // The human report: main.* frames shown, library runs folded.
    let text = &out.stdout;
    let header = format!("goleak[{pid}] <- peer");
    let block = text
        .split("\n\n")
        .find(|b| b.contains(&header))
        .unwrap_or_else(|| panic!("no group for goleak[{pid}]:\n{text}"));
    let created: Vec<&str> = block
        .split("  created at:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no 'created at':\n{block}"))
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    let shown = |f: &str| {
        created
            .iter()
            .position(|l| l.starts_with(&format!("{f}+")))
            .unwrap_or_else(|| panic!("{f} not shown:\n{block}"))
    };
    let (d, p, m) = (
        shown("main.dialBackend"),
        shown("main.poolGet"),
        shown("main.main"),
    );
    assert!(d < p && p < m, "{block}");
    assert!(
        created[..d]
            .iter()
            .any(|l| l.starts_with("... ") && l.contains("Go runtime")),
        "the net/syscall frames are not folded:\n{block}"
    );
    assert!(
        !created.iter().any(|l| l.starts_with("net.")),
        "a net frame is shown unfolded:\n{block}"
    );
    assert!(created.len() < stack.len(), "nothing folded:\n{block}");
    assert!(
        block.contains("Go program, its goroutines run on"),
        "{block}"
    );
}

/// The same client built with -ldflags "-s -w" (no symbol table, no DWARF):
/// its frames are still named, from the .gopclntab the Go runtime keeps.
#[test]
fn stripped_go_client_is_named_from_gopclntab() {
    if !privileged("stripped_go_client_is_named_from_gopclntab") {
        return;
    }
    let dir = tempdir("goleak-stripped");
    let bin = dir.join("goleak-stripped");
    let out = Command::new("go")
        .args(["build", "-ldflags", "-s -w", "-o"])
        .arg(&bin)
        .arg(helper("goleak.go"))
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .output()
        .expect("go (Debian's golang-go, `cargo xtask setup` installs it) is needed");
    assert!(
        out.status.success(),
        "go build -ldflags '-s -w' goleak.go: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tracer = Tracer::start(&["--threshold", "1s"]);
    let (_server, port) = server(&["--mode", "close-now", "--count", "2", "--hold", "60"]);
    let client = Proc::spawn(
        "goleak-stripped",
        Command::new(&bin).args([&v4(port), "2", "60"]),
    );
    let mut tuples = Vec::new();
    for _ in 0..2 {
        let l = client.expect("connected ", SECS10);
        let local = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("local="))
            .unwrap()
            .to_string();
        tuples.push((local, v4(port)));
    }
    client.expect("leaked 2", SECS10);
    settle_stuck(&tuples, THRESHOLD_MS);
    let out = stop_ok(tracer);
    let pid = client.pid();
    let g = out.json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["pid"] == pid)
        .unwrap_or_else(|| panic!("no group of the client: {}", pretty(&out.json["groups"])));
    let stack: Vec<&str> = g["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let at = |f: &str| {
        stack
            .iter()
            .position(|l| l.starts_with(&format!("{f}+")))
            .unwrap_or_else(|| panic!("no {f} frame in {stack:#?}"))
    };
    let (dial, pool, main) = (at("main.dialBackend"), at("main.poolGet"), at("main.main"));
    assert!(dial < pool && pool < main, "out of order: {stack:#?}");
    assert!(
        stack[dial..].iter().all(|f| !f.starts_with("0x")),
        "raw addresses left: {stack:#?}"
    );
}
