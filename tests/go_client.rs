//! A Go client (tests/helpers/goleak.go, built with Debian's golang-go)
//! leaks connections from main.dialBackend <- main.poolGet <- main.main:
//! the report names those frames with goleak.go lines in the JSON stack,
//! the human report shows them with the Go runtime/net/syscall frames
//! around them folded, and the holder's threads are goroutines' OS threads.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

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
        go_build(&dir, &exe, &[]);
        exe
    })
    .clone()
}

/// `go build ARGS -o exe goleak.go`, its caches in `dir`.
fn go_build(dir: &Path, exe: &Path, args: &[&str]) {
    let out = Command::new("go")
        .arg("build")
        .args(args)
        .arg("-o")
        .arg(exe)
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
        "go build {args:?} goleak.go: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tracer run over `bin` (goleak) leaking `n` connections to a server
/// that hangs up on each at once: the client's sockets sit in CLOSE_WAIT,
/// never closed. Returns the report and the client.
fn go_leak(bin: &Path, n: usize) -> (Finished, Proc) {
    let tracer = Tracer::start(&["--threshold", "1s"]);
    let count = n.to_string();
    let (_server, port) = server(&["--mode", "close-now", "--count", &count, "--hold", "60"]);
    let name = bin.file_name().unwrap().to_string_lossy().into_owned();
    let client = Proc::spawn(&name, Command::new(bin).args([&v4(port), &count, "60"]));
    let mut tuples = Vec::new();
    for _ in 0..n {
        let l = client.expect("connected ", SECS10);
        let local = l
            .split_whitespace()
            .find_map(|w| w.strip_prefix("local="))
            .unwrap()
            .to_string();
        tuples.push((local, v4(port)));
    }
    client.expect(&format!("leaked {n}"), SECS10);
    settle_stuck(&tuples, THRESHOLD_MS);
    (stop_ok(tracer), client)
}

/// The frames of a group's stack, and the position of the first frame of
/// function `f` in them.
fn stack_of(g: &serde_json::Value) -> Vec<&str> {
    g["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect()
}

fn frame_at(stack: &[&str], f: &str) -> usize {
    stack
        .iter()
        .position(|l| l.starts_with(&format!("{f}+")))
        .unwrap_or_else(|| panic!("no {f} frame in {stack:#?}"))
}

#[test]
fn go_client_leak_names_its_main_frames() {
    if !privileged("go_client_leak_names_its_main_frames") {
        return;
    }
    let (out, client) = go_leak(&goleak_bin(), 3);

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
    let stack = stack_of(g);
    let at = |f: &str| frame_at(&stack, f);
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
    go_build(&dir, &bin, &["-ldflags", "-s -w"]);
    let (out, client) = go_leak(&bin, 2);
    let pid = client.pid();
    let g = out.json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["pid"] == pid)
        .unwrap_or_else(|| panic!("no group of the client: {}", pretty(&out.json["groups"])));
    let stack = stack_of(g);
    let at = |f: &str| frame_at(&stack, f);
    let (dial, pool, main) = (at("main.dialBackend"), at("main.poolGet"), at("main.main"));
    assert!(dial < pool && pool < main, "out of order: {stack:#?}");
    assert!(
        stack[dial..].iter().all(|f| !f.starts_with("0x")),
        "raw addresses left: {stack:#?}"
    );
}
