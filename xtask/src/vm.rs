//! `cargo xtask vm-test`: the privileged integration tests inside Debian's
//! own kernels, booted under QEMU software emulation with virtme-ng.
//!
//! Nothing is installed on the host's boot path: the kernel packages are
//! fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
//! ~/.local/share/close-wait/kernels. virtme-ng shares the host's root
//! read-only over 9p (with a writable overlay on /tmp), so the test binaries
//! and the release binary built here run unchanged in the guest. The guest
//! writes one result line per test into a directory shared read-write
//! (target/vm-test/KERNEL), which this side reads back.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{is_root, output, root, run, succeeds};

/// Host packages the runner needs: QEMU, depmod (virtme-ng builds the
/// guest's module index), udev, a static busybox for the initramfs, and the
/// libraries virtiofsd links with.
const VM_APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "kmod",
    "udev",
    "busybox-static",
    "libseccomp-dev",
    "libcap-ng-dev",
];
/// virtiofsd (crates.io), the host's root shared into the guest with the
/// page cache on: over 9p without a cache every stat and read of the guest
/// goes to the host, and a python start takes over 20 s under emulation.
const VIRTIOFSD: &str = "virtiofsd";
/// virtme-ng, from PyPI, in a venv of its own (pinned: its CLI is the
/// interface used here).
const VIRTME_NG: &str = "virtme-ng==1.42";

/// The kernels `--kernel all` means, and the Debian meta package whose
/// dependency names the newest image of that series.
const KERNELS: &[(&str, &str)] = &[
    ("6.1", "linux-image-amd64"),
    ("6.12", "linux-image-6.12-amd64"),
];

/// The representative subset run in each guest (binary, test): every ending
/// of an episode, owner attribution with client and server in different
/// processes, a stuck socket's holders and unread bytes, the `.hlog` export.
/// About a minute per hook path under emulation; the whole suite would take
/// most of an hour per kernel.
pub const SUBSET: &[(&str, &str)] = &[
    ("foundation", "reports_close_wait_transitions_and_time"),
    ("tracker", "every_ending_reported_for_its_own_tuple"),
    ("tracker", "owner_is_the_accepting_server_not_the_peer"),
    ("diagnosis", "never_read_counts_the_unread_bytes"),
    ("exports", "histograms_hold_the_known_close_delays"),
    ("close_hook", "close_is_told_from_shutdown"),
    (
        "close_hook",
        "descriptor_left_open_after_shutdown_is_reported",
    ),
];

pub struct VmOpts {
    pub kernels: Vec<String>,
    pub hooks: Vec<String>,
    pub kvm: bool,
    pub tests: Vec<(String, String)>,
}

fn state_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".local/share/close-wait")
}

fn dpkg_installed(p: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
        .contains("install ok installed")
}

/// Installs what the runner needs on the host when it is missing.
/// Returns the PATH vng runs with (the venv's bin and virtiofsd's first).
fn host_tools() -> Result<String> {
    let missing: Vec<&str> = VM_APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!("vm-test needs Debian packages {missing:?}: run it as root");
        }
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    let venv = state_dir().join("vng-venv");
    let vng = venv.join("bin/vng");
    if !succeeds(Command::new(&vng).arg("--version")) {
        // Debian's python3 (python3-venv); pyenv's shims may be first in PATH.
        let py = if Path::new("/usr/bin/python3").exists() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        run(Command::new(py).args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VIRTME_NG,
        ]))?;
    }
    let vfs = state_dir().join("virtiofsd");
    if !vfs.join("bin/virtiofsd").exists() {
        run(Command::new("cargo")
            .args(["install", "--locked", "--quiet", VIRTIOFSD, "--root"])
            .arg(&vfs))?;
    }
    // vng finds virtiofsd through PATH (then /usr/lib/qemu/virtiofsd, which
    // on Debian 12 is QEMU 7.2's C daemon: it rejects the flags vng passes,
    // and vng falls back to uncached 9p), so both directories go first.
    let path = std::env::var("PATH").unwrap_or_default();
    Ok(format!(
        "{}:{}:{path}",
        venv.join("bin").display(),
        vfs.join("bin").display()
    ))
}

/// The exact image package of a series, from the meta package's dependency
/// (apt-cache), falling back to the highest-numbered image apt knows.
fn kernel_package(series: &str, meta: &str) -> Result<String> {
    let want = |p: &str| {
        p.starts_with(&format!("linux-image-{series}."))
            && p.ends_with("-amd64")
            && !p.contains("-rt-")
            && !p.contains("-cloud-")
    };
    for attempt in 0..2 {
        let deps = output(Command::new("apt-cache").args(["depends", meta]));
        if let Some(p) = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| want(p))
        {
            return Ok(p.to_string());
        }
        let names = output(Command::new("apt-cache").args([
            "search",
            "--names-only",
            &format!("^linux-image-{}\\.", series.replace('.', "\\.")),
        ]));
        let mut found: Vec<String> = names
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|p| want(p))
            .map(str::to_string)
            .collect();
        found.sort_by_key(|p| {
            p.split(|c: char| !c.is_ascii_digit())
                .filter(|s| !s.is_empty())
                .map(|s| s.parse::<u64>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        if let Some(p) = found.pop() {
            return Ok(p);
        }
        if attempt == 0 {
            run(Command::new("apt-get").args(["update", "-q"]))?;
        }
    }
    bail!("no Debian package linux-image-{series}.*-amd64 is known to apt (check /etc/apt/sources.list*)")
}

/// Downloads and unpacks a kernel package once; returns its vmlinuz.
fn kernel_image(pkg: &str) -> Result<PathBuf> {
    let ver = pkg.trim_start_matches("linux-image-");
    let dir = state_dir().join("kernels").join(pkg);
    let vmlinuz = dir.join(format!("boot/vmlinuz-{ver}"));
    if vmlinuz.exists() && dir.join(format!("lib/modules/{ver}")).is_dir() {
        return Ok(vmlinuz);
    }
    let dl = state_dir().join("kernels/download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    run(Command::new("apt-get")
        .current_dir(&dl)
        .args(["download", "-q", pkg]))?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| format!("apt-get download {pkg} left no .deb"))?;
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    let _ = std::fs::remove_dir_all(&dl);
    if !vmlinuz.exists() {
        bail!("{} has no {}", pkg, vmlinuz.display());
    }
    Ok(vmlinuz)
}

/// Builds the release binary and the integration test binaries; returns
/// test target name -> executable.
fn build_tests() -> Result<BTreeMap<String, PathBuf>> {
    crate::build_release()?;
    let out = Command::new("cargo")
        .current_dir(root())
        .args([
            "test",
            "-p",
            "close-wait-tests",
            "--tests",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut bins = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(name), Some(exe)) = (
            json_str(line, "\"target\":{", "\"name\":\""),
            json_str(line, "", "\"executable\":\""),
        ) else {
            continue;
        };
        bins.insert(name, PathBuf::from(exe));
    }
    Ok(bins)
}

/// The string value after `key` (searched after `within`) in one line of
/// cargo's JSON output; paths and target names here carry no escapes.
fn json_str(line: &str, within: &str, key: &str) -> Option<String> {
    let start = line.find(within)? + within.len();
    let rest = &line[start..];
    let at = rest.find(key)? + key.len();
    let v = &rest[at..];
    Some(v[..v.find('"')?].to_string())
}

/// The directory of the python3 the tests would run (pyenv's shims resolve
/// it through a shell script: call the interpreter directly in the guest).
fn python_dir() -> Option<PathBuf> {
    let exe = output(Command::new("python3").args(["-c", "import sys; print(sys.executable)"]));
    Path::new(exe.trim()).parent().map(Path::to_path_buf)
}

/// The script run as root in the guest (or on the host for `--kernel host`).
fn guest_script(
    results: &Path,
    bins: &BTreeMap<String, PathBuf>,
    tests: &[(String, String)],
    hooks: &[String],
    in_vm: bool,
) -> Result<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let path = match python_dir() {
        Some(d) => format!("{}:{path}", d.display()),
        None => path,
    };
    let mut s = String::new();
    writeln!(s, "#!/bin/sh")?;
    writeln!(s, "# written by cargo xtask vm-test")?;
    writeln!(s, "export PATH='{path}' HOME=/root CI=true")?;
    writeln!(
        s,
        "export CLOSE_WAIT_BIN='{}'",
        root().join("target/release/close-wait").display()
    )?;
    writeln!(s, "R='{}'", results.display())?;
    if in_vm {
        // Software emulation: python starts and attaches take several
        // times longer; the harness stretches its waits (never a measured
        // duration) by this factor.
        writeln!(s, "export CLOSE_WAIT_TIME_SCALE=5")?;
    }
    writeln!(
        s,
        "mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing"
    )?;
    writeln!(
        s,
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf"
    )?;
    writeln!(
        s,
        "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup"
    )?;
    writeln!(s, "mkdir -p /run/netns; ip link set lo up 2>/dev/null")?;
    writeln!(
        s,
        "echo \"kernel $(uname -r) btf=$(test -e /sys/kernel/btf/vmlinux && echo yes || echo no)\" > \"$R/guest\""
    )?;
    writeln!(s, "cd '{}'", root().join("tests").display())?;
    // Warm the 9p page cache: the first python start reads hundreds of files.
    writeln!(s, "python3 -c 'import json, socket, hdrh.log' 2>/dev/null; \"$CLOSE_WAIT_BIN\" --version >/dev/null")?;
    for h in hooks {
        writeln!(s, "export CLOSE_WAIT_HOOKS='{h}'")?;
        // The hook path is probed the way the tool does it, by loading:
        // an explicit --hooks that cannot attach fails at start-up.
        writeln!(
            s,
            "if ! \"$CLOSE_WAIT_BIN\" record --hooks '{h}' --duration 1s > \"$R/{h}.probe.log\" 2>&1; then"
        )?;
        writeln!(
            s,
            "  echo \"unsupported {h} $(grep -v '^ *$' \"$R/{h}.probe.log\" | tail -1)\" >> \"$R/results\"; else"
        )?;
        for (file, name) in tests {
            let bin = bins
                .get(file)
                .with_context(|| format!("no test binary '{file}' was built"))?;
            writeln!(s, "t0=$(date +%s)")?;
            writeln!(
                s,
                "timeout 300 '{}' --test-threads=1 --exact '{name}' > \"$R/{h}.{file}.{name}.log\" 2>&1; rc=$?",
                bin.display()
            )?;
            writeln!(
                s,
                "echo \"result {h} {file}::{name} $rc $(( $(date +%s) - t0 ))\" >> \"$R/results\""
            )?;
        }
        writeln!(s, "fi")?;
    }
    writeln!(s, "echo done >> \"$R/results\"")?;
    Ok(s)
}

/// One line of the summary: kernel, hook path, verdict.
pub struct Line {
    pub kernel: String,
    pub hooks: String,
    pub verdict: String,
    pub secs: u64,
}

fn verdicts(
    kernel: &str,
    results: &Path,
    hooks: &[String],
    boot_log: &str,
    secs: u64,
) -> Vec<Line> {
    let text = std::fs::read_to_string(results.join("results")).unwrap_or_default();
    let guest = std::fs::read_to_string(results.join("guest")).unwrap_or_default();
    let kernel = match guest.split_whitespace().nth(1) {
        Some(v) => format!("{kernel} ({v})"),
        None => kernel.to_string(),
    };
    let mut lines = Vec::new();
    for h in hooks {
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.len() == 5 && w[0] == "result" && w[1] == h)
            .collect();
        let unsupported = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("unsupported {h} ")));
        let verdict = if let Some(why) = unsupported {
            format!(
                "could not run: {}",
                why.trim_start_matches("close-wait: error: ")
            )
        } else if guest.is_empty() {
            let tail: Vec<&str> = boot_log.lines().rev().take(3).collect();
            format!(
                "could not run: the guest did not start ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )
        } else if rows.is_empty() {
            "could not run: the guest stopped before these tests".to_string()
        } else {
            let failed: Vec<String> = rows
                .iter()
                .filter(|w| w[3] != "0")
                .map(|w| {
                    let why = if w[3] == "124" { " (timed out)" } else { "" };
                    format!("{}{why}", w[2])
                })
                .collect();
            let ran = rows.len();
            if failed.is_empty() && !text.contains("done") {
                format!("failed: the guest stopped after {ran} tests")
            } else if failed.is_empty() {
                format!("passed ({ran} tests)")
            } else {
                format!(
                    "failed: {} (logs in {})",
                    failed.join(", "),
                    results.display()
                )
            }
        };
        let secs_h: u64 = rows.iter().filter_map(|w| w[4].parse::<u64>().ok()).sum();
        lines.push(Line {
            kernel: kernel.clone(),
            hooks: h.clone(),
            verdict,
            secs: if secs_h > 0 { secs_h } else { secs },
        });
    }
    lines
}

pub fn vm_test(opts: &VmOpts) -> Result<bool> {
    let started = Instant::now();
    let vng_path = host_tools()?;
    let bins = build_tests()?;
    let mut summary: Vec<Line> = Vec::new();
    for k in &opts.kernels {
        let t0 = Instant::now();
        let results = root().join("target/vm-test").join(k);
        let _ = std::fs::remove_dir_all(&results);
        std::fs::create_dir_all(&results)?;
        let script = results.join("guest.sh");
        std::fs::write(
            &script,
            guest_script(&results, &bins, &opts.tests, &opts.hooks, k != "host")?,
        )?;
        let mut log = String::new();
        if k == "host" {
            let out = Command::new("sh").arg(&script).output()?;
            log.push_str(&String::from_utf8_lossy(&out.stderr));
        } else {
            let Some(&(_, meta)) = KERNELS.iter().find(|(s, _)| s == k) else {
                bail!("unknown kernel '{k}': 6.1, 6.12, host or all");
            };
            let vmlinuz = match kernel_package(k, meta).and_then(|p| kernel_image(&p)) {
                Ok(v) => v,
                Err(e) => {
                    for h in &opts.hooks {
                        summary.push(Line {
                            kernel: k.clone(),
                            hooks: h.clone(),
                            verdict: format!("could not run: {e:#}"),
                            secs: 0,
                        });
                    }
                    continue;
                }
            };
            eprintln!(
                "xtask: booting {} under QEMU ({})",
                vmlinuz.display(),
                if opts.kvm {
                    "KVM"
                } else {
                    "software emulation"
                }
            );
            let mut cmd = Command::new("timeout");
            cmd.arg("1500")
                .arg("vng")
                .args(["--run"])
                .arg(&vmlinuz)
                .args(["--memory", "2G", "--cpus", "2"])
                .arg(format!("--rwdir={}", results.display()))
                .arg("--exec")
                .arg(format!("sh {}", script.display()))
                .env("PATH", &vng_path)
                .stdin(Stdio::null());
            if !opts.kvm {
                cmd.arg("--disable-kvm");
            }
            let out = cmd.output().context("starting vng")?;
            log.push_str(&String::from_utf8_lossy(&out.stdout));
            log.push_str(&String::from_utf8_lossy(&out.stderr));
        }
        std::fs::write(results.join("console.log"), &log)?;
        if log.contains("fallback to 9p") {
            eprintln!(
                "xtask: warning: vng could not start virtiofsd and shared the root over 9p (slow)"
            );
        }
        let secs = t0.elapsed().as_secs();
        eprintln!("xtask: kernel {k}: {secs} s");
        summary.extend(verdicts(k, &results, &opts.hooks, &log, secs));
    }
    println!("vm-test: {} s in all", started.elapsed().as_secs());
    let mut ok = true;
    for l in &summary {
        ok &= l.verdict.starts_with("passed");
        println!(
            "vm-test: kernel {} hooks {}: {} [{} s]",
            l.kernel, l.hooks, l.verdict, l.secs
        );
    }
    Ok(ok)
}
