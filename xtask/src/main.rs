//! Project tasks that are not a plain cargo build: setting up a fresh machine,
//! running the tracer, running every test (unprivileged and privileged), and
//! the benchmarks.
//!
//!   cargo xtask setup             install what is missing (idempotent)
//!   cargo xtask run -- ARGS...    setup, build (release), run close-wait ARGS
//!   cargo xtask test              setup, then every test
//!   cargo xtask bench             setup, then the overhead/throughput figures
//!   cargo xtask vm-test [--kernel 6.1|6.12|host|all]
//!                                 privileged tests inside Debian's kernels (QEMU)

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

mod bench;
mod vm;

#[derive(Parser)]
#[command(about = "close-wait project tasks")]
struct Opts {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything a fresh machine lacks (does nothing when present)
    Setup,
    /// Set up, build in release mode and run close-wait with ARGS
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up and run every test: unit tests, then the privileged ones
    Test {
        /// Extra arguments for the test binaries (e.g. a test name filter)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and print overhead and throughput figures
    Bench,
    /// Set up, then run a representative subset of the privileged tests
    /// inside Debian's 6.1 and 6.12 kernels under QEMU (software emulation),
    /// one line per kernel and hook path
    VmTest {
        /// 6.1, 6.12, host (this machine's kernel, no VM) or all (the three)
        #[arg(long, default_value = "all")]
        kernel: String,
        /// Hook paths to run the tests with (close-wait --hooks), comma-separated
        #[arg(long, default_value = "fentry,kprobe,tracepoint")]
        hooks: String,
        /// Use KVM (only where it is shown to boot these kernels; not here)
        #[arg(long)]
        kvm: bool,
        /// Tests to run instead of the default subset: FILE::NAME, repeatable
        #[arg(long = "test")]
        tests: Vec<String>,
    },
}

/// Debian packages: the eBPF toolchain (see README "Building"), gcc for the
/// C test helper, Prometheus for the scrape test, Chromium and chromedriver
/// for the HTML report's test (about 130 MB to download, 21 s to install).
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "gcc",
    "prometheus",
    "iproute2",
    // The abuse tests prove a refusal came before any bpf() call.
    "strace",
    // The HTML report's test opens the page in headless Chromium.
    "chromium",
    "chromium-driver",
    "fonts-dejavu-core",
    // A Go client in the tests (tests/helpers/goleak.go).
    "golang-go",
    // Real servers of the pool and proxy stories (tests/servers.rs): each
    // runs with its own config on a loopback port, never as a service.
    "nginx-light",
    "apache2",
    // The deploy test parses deploy/close-wait.yaml with an independent parser.
    "python3-yaml",
    // cargo xtask bench: the load generator, the script users would write
    // instead, and the per-program and per-map figures.
    "wrk",
    "bpftrace",
    "bpftool",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
const TOOLCHAIN: &str = "debian-bpf";
/// PyPI packages the tests use as independent decoders.
const PIP_PACKAGES: &[&str] = &["hdrhistogram"];

fn main() -> Result<()> {
    let opts = Opts::parse();
    match opts.cmd {
        Cmd::Setup => setup(),
        Cmd::Run { args } => {
            setup()?;
            build_release()?;
            let bin = root().join("target/release/close-wait");
            let status = Command::new(&bin).args(&args).status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Test { args } => {
            setup()?;
            test(&args)
        }
        Cmd::Bench => {
            setup()?;
            build_release()?;
            bench::run(&root())
        }
        Cmd::VmTest {
            kernel,
            hooks,
            kvm,
            tests,
        } => {
            setup()?;
            let kernels = match kernel.as_str() {
                "all" => vec!["6.1".into(), "6.12".into(), "host".into()],
                k => k.split(',').map(str::to_string).collect(),
            };
            let tests = if tests.is_empty() {
                vm::SUBSET
                    .iter()
                    .map(|(f, n)| (f.to_string(), n.to_string()))
                    .collect()
            } else {
                tests
                    .iter()
                    .map(|t| match t.split_once("::") {
                        Some((f, n)) => Ok((f.to_string(), n.to_string())),
                        None => bail!("--test {t}: expected FILE::NAME"),
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            let opts = vm::VmOpts {
                kernels,
                hooks: hooks.split(',').map(str::to_string).collect(),
                kvm,
                tests,
            };
            if !vm::vm_test(&opts)? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn missing_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .contains("install ok installed")
        })
        .collect()
}

fn setup() -> Result<()> {
    let missing = missing_packages();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {missing:?}; run `sudo cargo xtask setup` (or apt-get install them)"
            );
        }
        run(Command::new("apt-get").arg("update").arg("-q"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    // bpf-linker, built against Debian's LLVM 22.
    let have = output(Command::new("bpf-linker").arg("--version"));
    if !have.contains(BPF_LINKER_VERSION) {
        run(Command::new("cargo")
            .args(["install", "--locked", "bpf-linker", "--version"])
            .arg(BPF_LINKER_VERSION)
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22"))?;
    }
    // Debian's rustc (it ships a prebuilt core for bpfel-unknown-none) under
    // a rustup name, so nothing is downloaded from the rustup server.
    if !succeeds(Command::new("rustup").args(["run", TOOLCHAIN, "rustc", "--version"])) {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        let t = PathBuf::from(home).join(".local/share/close-wait/debian-bpf");
        std::fs::create_dir_all(t.join("bin"))?;
        std::fs::create_dir_all(t.join("lib"))?;
        for (link, target) in [
            ("bin/rustc", "/usr/bin/rustc"),
            ("bin/cargo", "/usr/bin/cargo"),
            ("lib/rustlib", "/usr/lib/rustlib"),
        ] {
            let l = t.join(link);
            let _ = std::fs::remove_file(&l);
            std::os::unix::fs::symlink(target, &l)
                .with_context(|| format!("linking {}", l.display()))?;
        }
        run(Command::new("rustup")
            .args(["toolchain", "link", TOOLCHAIN])
            .arg(&t))?;
    }
    // tracefs: the tracer reads tracepoint formats there.
    if !Path::new("/sys/kernel/tracing/events").is_dir()
        && !Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        if is_root() {
            run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))?;
        } else {
            eprintln!("xtask: tracefs is not mounted; as root: mount -t tracefs nodev /sys/kernel/tracing");
        }
    }
    // Independent decoders used by the tests.
    if !succeeds(Command::new("python3").args(["-c", "import hdrh.log"])) {
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PIP_PACKAGES))?;
    }
    Ok(())
}

fn build_release() -> Result<()> {
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "close-wait-user",
    ]))
}

fn test(args: &[String]) -> Result<()> {
    let root = root();
    // Unit tests of every crate: no privileges needed.
    run(Command::new("cargo")
        .current_dir(&root)
        .args([
            "test",
            "--workspace",
            "--exclude",
            "close-wait-tests",
            "--exclude",
            "close-wait-ebpf",
            "--",
        ])
        .args(args))?;
    // The real-kernel tests drive the release binary; kernel state is
    // shared, so one at a time.
    build_release()?;
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "-p", "close-wait-tests", "--tests", "--"])
        .arg("--test-threads=1")
        .args(args)
        .env("CLOSE_WAIT_BIN", root.join("target/release/close-wait")))
}
