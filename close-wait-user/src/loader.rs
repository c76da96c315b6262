//! Pre-flight checks, loading and attaching the eBPF programs, and reading
//! the kernel-side maps. The only module besides `record` that touches aya.

use std::path::{Path, PathBuf};

use aya::{
    maps::Array,
    maps::{HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{FEntry, KProbe, RawTracePoint, TracePoint},
    Btf, Ebpf, EbpfLoader,
};
use close_wait_common::{
    counter, stack_mode, FdOffsets, NetnsOffsets, OtherOffsets, PyOffsets, PyStack, SockOffsets,
    SockOrigin, StateOffsets, TaskOffsets, STATE_LAYOUT,
};

use crate::{
    btf,
    cli::{Hooks, Stacks},
    model::HookPath,
    privileges::Caps,
    tpformat,
};

/// An attached program's link, detached when dropped.
type Link = Box<dyn Send + Sync>;

/// Why loading or attaching failed, with the step that failed. Shown as
/// one line with its cause chain (`{:#}` at the command edge).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF programs into the kernel")]
    Object(#[source] aya::EbpfError),
    #[error("program {0} missing from the eBPF object")]
    ProgramMissing(&'static str),
    /// A program step (type check, load, attach, link) that failed.
    #[error("{step}")]
    Program {
        step: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {0} missing from the eBPF object")]
    MapMissing(&'static str),
    #[error("{step}")]
    Map {
        step: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("reading /sys/kernel/btf/vmlinux")]
    Btf(#[source] aya::BtfError),
    #[error("starting the Python process rescan")]
    Thread(#[source] std::io::Error),
    #[error("--accept-stacks needs the kernel's BTF (/sys/kernel/btf/vmlinux) to find the socket behind accept()'s descriptor")]
    AcceptStacksBtf(#[source] btf::BtfError),
    /// An explicit `--hooks fentry|kprobe` that cannot attach here.
    #[error("--hooks {path}: {path} on {CLOSE_FN} is not available on this kernel (--hooks auto falls back)")]
    HookUnavailable {
        path: &'static str,
        #[source]
        source: Box<LoadError>,
    },
}

impl LoadError {
    fn program(step: impl Into<String>) -> impl FnOnce(aya::programs::ProgramError) -> LoadError {
        let step = step.into();
        move |source| LoadError::Program { step, source }
    }

    fn map(step: impl Into<String>) -> impl FnOnce(aya::maps::MapError) -> LoadError {
        let step = step.into();
        move |source| LoadError::Map { step, source }
    }
}

/// An error and its causes on one line, "a: b: c", as the reasons the
/// `-v` hook log gives for a path not taken.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("close-wait needs root or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN covers both) to attach its tracer (missing: {0})")]
    Privileges(String),
    #[error(transparent)]
    Format(#[from] tpformat::FormatError),
}

/// The capabilities missing to load tracing programs (the kernel's rules,
/// see [`crate::privileges`]), empty when all is well.
pub fn missing_caps(status: &str) -> Vec<&'static str> {
    Caps::from_status(status).tracer_missing()
}

/// Everything checked before anything is attached.
pub struct Preflight {
    pub tracefs: PathBuf,
    pub state: StateOffsets,
    pub other: OtherOffsets,
    /// Where a sock's network namespace inode is; zeros without BTF.
    pub netns: NetnsOffsets,
    /// The sock fields the raw tracepoint reads; Err (why) without BTF.
    pub sock: Result<SockOffsets, String>,
}

/// The `struct sock` offsets the raw state hook reads, from the running
/// kernel's BTF.
pub fn sock_offsets() -> Result<SockOffsets, btf::BtfError> {
    let b = btf::Btf::load()?;
    let c = |m: &str| b.member_offset("sock", &["__sk_common", m]);
    Ok(SockOffsets {
        protocol: b.member_offset("sock", &["sk_protocol"])?,
        family: c("skc_family")?,
        sport: b.member_offset("inet_sock", &["inet_sport"])?,
        dport: c("skc_dport")?,
        saddr: b.member_offset("inet_sock", &["inet_saddr"])?,
        daddr: c("skc_daddr")?,
        v6_rcv_saddr: c("skc_v6_rcv_saddr")?,
        v6_daddr: c("skc_v6_daddr")?,
        err: b.member_offset("sock", &["sk_err"])?,
        valid: 1,
    })
}

/// The netns offsets from the running kernel's BTF; zeros (netns unknown,
/// reported as 0) when BTF or a field is missing, which is said once.
pub fn netns_offsets() -> NetnsOffsets {
    let found = btf::Btf::load().and_then(|b| {
        Ok(NetnsOffsets {
            skc_net: b.member_offset("sock", &["__sk_common", "skc_net"])?,
            net_ns_inum: b.member_offset("net", &["ns", "inum"])?,
        })
    });
    match found {
        Ok(o) => o,
        Err(e) => {
            log::warn!(
                "{e}: network namespaces of sockets are unknown (netns 0), so sockets with the same addresses in two namespaces cannot be told apart by their events"
            );
            NetnsOffsets::default()
        }
    }
}

/// Privileges, tracefs and every tracepoint's format.
pub fn preflight() -> Result<Preflight, PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mut missing = missing_caps(&status);
    if !missing.is_empty() {
        // Name everything at once: a tracefs this process cannot read is
        // the next refusal after the capabilities.
        if let Err(tpformat::FormatError::NotReadable { path, .. }) = tpformat::find_tracefs() {
            missing.push(if path.starts_with("/sys/kernel/debug") {
                "CAP_DAC_READ_SEARCH (to read tracefs at /sys/kernel/debug/tracing)"
            } else {
                "CAP_DAC_READ_SEARCH (to read tracefs at /sys/kernel/tracing)"
            });
        }
        let who = if unsafe { libc::geteuid() } == 0 {
            "running as root but "
        } else {
            "not root, "
        };
        return Err(PreflightError::Privileges(format!(
            "{who}{}",
            missing.join(" + ")
        )));
    }
    let tracefs = tpformat::find_tracefs()?;
    let (state, other) = tpformat::read_all(&tracefs)?;
    Ok(Preflight {
        tracefs,
        state,
        other,
        netns: netns_offsets(),
        sock: sock_offsets().map_err(|e| e.to_string()),
    })
}

/// Load-time knobs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub max_sockets: u32,
    pub lports: Vec<u16>,
    pub dports: Vec<u16>,
    pub stacks: Stacks,
    /// Attach syscalls:sys_exit_accept{,4} to take accept() stacks.
    pub accept_stacks: bool,
    /// Bytes of the event ring buffer (a power of two, at least a page).
    pub ringbuf_bytes: u32,
    /// How tcp_close() is hooked.
    pub hooks: Hooks,
}

/// The tracepoints always attached besides the state hook: (program,
/// category, name).
pub const HOOKS: [(&str, &str, &str); 1] = [("tcp_receive_reset", "tcp", "tcp_receive_reset")];

/// Where new processes are seen at once, for Python walks.
pub const EXEC_HOOK: &str = "sched:sched_process_exec";
/// Where a registered CPython's forked workers are seen at once.
pub const FORK_HOOK: &str = "raw_tp:sched_process_fork";

/// The state hook as the report's `hooks` names it on each path.
pub const STATE_RAW: &str = "raw_tp:inet_sock_set_state";
pub const STATE_TP: &str = "sock:inet_sock_set_state";

/// With `--accept-stacks` only: any `syscalls:*` tracepoint sends every
/// syscall of every task through the slow path.
pub const ACCEPT_HOOKS: [(&str, &str, &str); 2] = [
    ("sys_exit_accept4", "syscalls", "sys_exit_accept4"),
    ("sys_exit_accept", "syscalls", "sys_exit_accept"),
];

/// What the last [`load`] attached, as "category:name".
static ATTACHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The hooks in use ("category:name"), for the report's `hooks`.
pub fn hook_names() -> Vec<String> {
    let attached = ATTACHED.lock().map(|a| a.clone()).unwrap_or_default();
    if attached.is_empty() {
        std::iter::once(STATE_TP.to_string())
            .chain(HOOKS.iter().map(|(_, c, n)| format!("{c}:{n}")))
            .collect()
    } else {
        attached
    }
}

/// Offsets from a task's fd to its sock, from BTF; None when missing.
pub fn fd_offsets() -> Result<FdOffsets, btf::BtfError> {
    let b = btf::Btf::load()?;
    Ok(FdOffsets {
        task_files: b.member_offset("task_struct", &["files"])?,
        files_fdt: b.member_offset("files_struct", &["fdt"])?,
        fdt_max_fds: b.member_offset("fdtable", &["max_fds"])?,
        fdt_fd: b.member_offset("fdtable", &["fd"])?,
        file_private_data: b.member_offset("file", &["private_data"])?,
        socket_sk: b.member_offset("socket", &["sk"])?,
    })
}

/// The kernel function whose entry tells close() from shutdown().
pub const CLOSE_FN: &str = "tcp_close";

/// Loads and attaches the tcp_close() program `--hooks` asks for; for auto,
/// fentry, then kprobe, each tried by loading and attaching it. Returns the
/// path attached, or None for tracepoints only, and why
/// each path tried was not taken. An explicit fentry or kprobe that fails is
/// an error.
fn attach_close_hook(
    ebpf: &mut Ebpf,
    hooks: Hooks,
) -> Result<(Option<HookPath>, Vec<String>), LoadError> {
    let mut why_not = Vec::new();
    let paths: &[Hooks] = match hooks {
        Hooks::Auto => &[Hooks::Fentry, Hooks::Kprobe],
        Hooks::Fentry => &[Hooks::Fentry],
        Hooks::Kprobe => &[Hooks::Kprobe],
        Hooks::Tracepoint => {
            why_not.push(format!(
                "fentry/kprobe:{CLOSE_FN}: not asked for (--hooks tracepoint)"
            ));
            &[]
        }
    };
    for &path in paths {
        let tried = match path {
            Hooks::Fentry => (|| -> Result<(), LoadError> {
                let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
                let p: &mut FEntry = program(ebpf, "tcp_close_fentry")?;
                p.load(CLOSE_FN, &btf)
                    .map_err(LoadError::program("loading"))?;
                p.attach().map_err(LoadError::program("attaching"))?;
                Ok(())
            })(),
            _ => (|| -> Result<(), LoadError> {
                let p: &mut KProbe = program(ebpf, "tcp_close_kprobe")?;
                p.load().map_err(LoadError::program("loading"))?;
                p.attach(CLOSE_FN, 0)
                    .map_err(LoadError::program("attaching"))?;
                Ok(())
            })(),
        };
        let attached = if path == Hooks::Fentry {
            HookPath::Fentry
        } else {
            HookPath::Kprobe
        };
        let name = attached.as_str();
        match tried {
            Ok(()) => return Ok((Some(attached), why_not)),
            Err(e) if hooks == Hooks::Auto => {
                why_not.push(format!("{name}:{CLOSE_FN}: {}", chain(&e)));
            }
            Err(e) => {
                return Err(LoadError::HookUnavailable {
                    path: name,
                    source: Box::new(e),
                })
            }
        }
    }
    if hooks == Hooks::Auto {
        why_not.push(
            "tcp_close not hooked: close() and shutdown() are not told apart (closed_by close_or_shutdown)"
                .to_string(),
        );
    }
    Ok((None, why_not))
}

/// Loads and attaches the inet_sock_set_state program: the raw tracepoint
/// where BTF gives the sock's offsets and it loads and attaches (not with
/// `--hooks tracepoint`, which keeps the classic path testable), else the
/// classic tracepoint, with direct context loads when the tracefs format is
/// the layout compiled in and helper reads otherwise. Returns the link, the
/// hook's name and why the paths before it were not taken.
fn attach_state_hook(
    ebpf: &mut Ebpf,
    pre: &Preflight,
    hooks: Hooks,
) -> Result<(Link, &'static str, Vec<String>), LoadError> {
    let mut why_not = Vec::new();
    match (&pre.sock, hooks) {
        (_, Hooks::Tracepoint) => {
            why_not.push(format!("{STATE_RAW}: not asked for (--hooks tracepoint)"))
        }
        (Err(e), _) => why_not.push(format!("{STATE_RAW}: {e}")),
        (Ok(_), _) => {
            let tried = (|| -> Result<Link, LoadError> {
                let p: &mut RawTracePoint = program(ebpf, "inet_sock_set_state_raw")?;
                p.load().map_err(LoadError::program("loading"))?;
                match p.attach("inet_sock_set_state") {
                    Ok(link) => Ok(Box::new(
                        p.take_link(link)
                            .map_err(LoadError::program("taking the link"))?,
                    )),
                    Err(e) => {
                        // The classic tracepoint is tried next: free this one.
                        if let Err(u) = p.unload() {
                            log::info!("unloading inet_sock_set_state_raw: {u}");
                        }
                        Err(LoadError::program("attaching")(e))
                    }
                }
            })();
            match tried {
                Ok(link) => return Ok((link, STATE_RAW, why_not)),
                Err(e) => why_not.push(format!("{STATE_RAW}: {}", chain(&e))),
            }
        }
    }
    let mut progs = Vec::with_capacity(2);
    if pre.state == STATE_LAYOUT {
        progs.push("inet_sock_set_state_direct");
    } else {
        why_not.push(format!(
            "{STATE_TP} with direct loads: this kernel's format ({:?}) is not the layout compiled in",
            pre.state
        ));
    }
    progs.push("inet_sock_set_state");
    for prog in progs {
        let tried = (|| -> Result<Link, LoadError> {
            let p: &mut TracePoint = program(ebpf, prog)?;
            p.load().map_err(LoadError::program(format!(
                "the kernel refused program {prog}"
            )))?;
            match p.attach("sock", "inet_sock_set_state") {
                Ok(link) => Ok(Box::new(
                    p.take_link(link)
                        .map_err(LoadError::program("taking the link"))?,
                )),
                Err(e) => {
                    // The helper-read program may be tried next: free this one.
                    if let Err(u) = p.unload() {
                        log::info!("unloading {prog}: {u}");
                    }
                    Err(LoadError::program("attaching to sock:inet_sock_set_state")(
                        e,
                    ))
                }
            }
        })();
        match tried {
            Ok(link) => {
                if prog == "inet_sock_set_state_direct" {
                    log::info!("hooks: {STATE_TP} read with direct context loads");
                } else {
                    log::info!("hooks: {STATE_TP} read with helper calls");
                }
                return Ok((link, STATE_TP, why_not));
            }
            Err(e) if prog == "inet_sock_set_state_direct" => {
                why_not.push(format!("{STATE_TP} with direct loads: {}", chain(&e)))
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the helper-read program is always tried last")
}

/// The loaded and attached programs and their maps.
pub struct Tracer {
    /// The attached programs' links, detached in parallel when dropped.
    links: Vec<Box<dyn Send + Sync>>,
    /// The state hook in use: [`STATE_RAW`] or [`STATE_TP`].
    pub state_hook: &'static str,
    /// What was attached ("category:name" tracepoints, then the tcp_close
    /// hook, "fentry:tcp_close" or "kprobe:tcp_close").
    pub hooks: Vec<String>,
    /// The tcp_close() hook attached, if any.
    pub close_hook: Option<HookPath>,
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    origins: HashMap<MapData, u64, SockOrigin>,
    stacks: StackTraceMap<MapData>,
    python: std::sync::Arc<std::sync::Mutex<PyKernel>>,
    /// Processes that exec'd, for the Python registry's thread.
    execs: Option<std::sync::mpsc::Sender<u32>>,
}

/// The Python registry's thread: a full rescan every
/// [`crate::python::kernel::RESCAN_EVERY`], and each process that exec'd
/// looked at as soon as it is reported (again every few milliseconds while
/// a python's interpreter is not mapped yet). Ends with the tracer.
fn registry_thread(
    py: &std::sync::Weak<std::sync::Mutex<PyKernel>>,
    execs: &std::sync::mpsc::Receiver<u32>,
) {
    use crate::python::kernel::{EXEC_RETRIES, EXEC_RETRY_EVERY, RESCAN_EVERY};
    use std::sync::mpsc::RecvTimeoutError;
    use std::time::Instant;
    // Registering races the process to its first connect(): this thread
    // keeps the tracer's priority (at nice 19 a loaded machine starved it
    // past the connects of pythons started under load). Its work is one
    // ELF parse per interpreter file and a /proc read per exec.
    let mut next_scan = Instant::now() + RESCAN_EVERY;
    // (pid, tries left)
    let mut pending: Vec<(u32, u8)> = Vec::new();
    loop {
        let wait = if pending.is_empty() {
            next_scan.saturating_duration_since(Instant::now())
        } else {
            EXEC_RETRY_EVERY
        };
        match execs.recv_timeout(wait) {
            Ok(pid) => {
                pending.push((pid, EXEC_RETRIES));
                pending.extend(execs.try_iter().map(|p| (p, EXEC_RETRIES)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(py) = py.upgrade() else { return };
        let Ok(mut g) = py.lock() else { return };
        pending.retain_mut(|(pid, tries)| {
            if g.exec(*pid) || *tries == 0 {
                return false;
            }
            *tries -= 1;
            true
        });
        if Instant::now() >= next_scan {
            g.scan();
            next_scan = Instant::now() + RESCAN_EVERY;
        }
    }
}

/// Distinct Python stacks the kernel side keeps (`PY_STACKS`).
const PY_STACKS_KEPT: u32 = 1024;
/// CPython processes the kernel side walks at most (`PY_PROCS`).
const PY_PROCS_KEPT: u32 = 1024;

/// The Python processes the kernel walks and the walks it took.
pub struct PyKernel {
    registry: crate::python::kernel::Registry,
    procs: HashMap<MapData, u32, PyOffsets>,
    walks: HashMap<MapData, u64, PyStack>,
    /// Resolved walks by (pid, walk id).
    resolved: std::collections::HashMap<(u32, u64), crate::python::kernel::Resolved>,
}

impl PyKernel {
    fn scan(&mut self) {
        let ch = self.registry.scan();
        self.apply(ch);
    }

    /// Puts a registry change into `PY_PROCS`.
    fn apply(&mut self, ch: crate::python::kernel::Changes) {
        for pid in &ch.removed {
            if let Err(e) = self.procs.remove(pid) {
                log::debug!("python: pid {pid} gone, its entry: {e}");
            }
        }
        if !ch.removed.is_empty() {
            self.resolved
                .retain(|(pid, _), _| !ch.removed.contains(pid));
        }
        for (pid, off, version) in ch.added {
            match self.procs.insert(pid, off, 0) {
                Ok(()) => log::info!(
                    "python: pid {pid} (CPython {version}) registered for creation stacks"
                ),
                Err(e) => log::info!("python: pid {pid} not registered: {e}"),
            }
        }
    }

    /// Looks at process `pid`, which just exec'd; true when that is
    /// settled (registered, or not a python), false to look again soon.
    fn exec(&mut self, pid: u32) -> bool {
        let (settled, ch) = self.registry.exec(pid);
        self.apply(ch);
        settled
    }

    fn resolve(&mut self, pid: u32, id: u64) -> Option<crate::python::kernel::Resolved> {
        use crate::python::kernel::{resolve, Resolved};
        if let Some(r) = self.resolved.get(&(pid, id)) {
            return Some(r.clone());
        }
        let r = match (self.walks.get(&id, 0), self.registry.procs.get(&pid)) {
            (Ok(st), Some(p)) => resolve(p, &st),
            (Ok(st), None) => Resolved {
                frames: Vec::new(),
                note: Some(format!(
                    "a Python stack of {} frames was taken at connect(), not resolved: pid {pid} is no longer a registered Python process",
                    st.n
                )),
            },
            (Err(e), _) => {
                log::debug!("python: walk {id:#x} of pid {pid}: {e}");
                Resolved {
                    frames: Vec::new(),
                    note: Some(format!(
                        "a Python stack was taken at connect() but is no longer kept (the kernel keeps the {PY_STACKS_KEPT} most recently taken distinct Python stacks)"
                    )),
                }
            }
        };
        self.resolved.insert((pid, id), r.clone());
        Some(r)
    }
}

/// Counters kept by the eBPF programs, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub ringbuf_lost: u64,
    pub sock_insert_failed: u64,
    /// CLOSE_WAIT map entries pushed out by newer ones (LRU at capacity).
    pub sock_evicted: u64,
    pub fd_insert_failed: u64,
    pub stack_failed: u64,
    pub read_failed: u64,
    /// Entries in the CLOSE_WAIT map now.
    pub tracked_sockets: u64,
    /// Runs of our programs the kernel skipped because another program was
    /// running on that CPU (prog info `recursion_misses`): lost events.
    pub recursion_misses: u64,
    /// The programs those runs belong to, with their misses (only those
    /// with any).
    pub missed_by_program: Vec<(String, u64)>,
}

/// One attached program's kernel-side statistics (`/proc/self/fdinfo` of
/// its fd): run time and count are kept only while
/// `kernel.bpf_stats_enabled` is 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    pub recursion_misses: u64,
}

/// Parses the `key:\tvalue` lines of a BPF program's fdinfo.
pub fn parse_prog_fdinfo(name: &str, text: &str) -> ProgStats {
    let mut st = ProgStats {
        name: name.to_string(),
        ..Default::default()
    };
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let Ok(v) = v.trim().parse::<u64>() else {
            continue;
        };
        match k.trim() {
            "run_time_ns" => st.run_time_ns = v,
            "run_cnt" => st.run_cnt = v,
            "recursion_misses" => st.recursion_misses = v,
            _ => {}
        }
    }
    st
}

/// Entries of the origin map: one per connection open at once (an origin
/// leaves when its socket reaches CLOSE), at least what `--max-sockets`
/// may hold stuck; never below 1024 (per-CPU LRU lists share it).
pub fn origin_map_entries(max_sockets: u32) -> u32 {
    max_sockets.max(1024)
}

/// Entries of the stack map for a `--stacks` choice: one per distinct
/// stack (identical stacks share one), so a few thousand cover the call
/// sites of a service; one entry (the least the kernel takes) for none.
pub fn stack_map_entries(stacks: Stacks) -> u32 {
    match stacks {
        Stacks::None => 1,
        Stacks::User => 4096,
        Stacks::UserKernel => 8192,
    }
}

fn map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.take_map(name).ok_or(LoadError::MapMissing(name))?;
    T::try_from(m).map_err(LoadError::map(format!("map {name} has an unexpected type")))
}

/// Loads program `prog` and attaches it to `hook`: "category:name" for a
/// tracepoint, "raw_tp:name" for a raw tracepoint.
fn attach_tracepoint(ebpf: &mut Ebpf, prog: &'static str, hook: &str) -> Result<Link, LoadError> {
    let (category, name) = hook.split_once(':').unwrap_or(("", hook));
    if category == "raw_tp" {
        let p: &mut RawTracePoint = program(ebpf, prog)?;
        p.load().map_err(LoadError::program("loading"))?;
        let link = p.attach(name).map_err(LoadError::program("attaching"))?;
        return Ok(Box::new(
            p.take_link(link)
                .map_err(LoadError::program("taking the link"))?,
        ));
    }
    let p: &mut TracePoint = program(ebpf, prog)?;
    p.load().map_err(LoadError::program("loading"))?;
    let link = p
        .attach(category, name)
        .map_err(LoadError::program("attaching"))?;
    Ok(Box::new(
        p.take_link(link)
            .map_err(LoadError::program("taking the link"))?,
    ))
}

/// The program `name` of the object as its type `T`.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoadError::ProgramMissing(name))?
        .try_into()
        .map_err(LoadError::program(format!(
            "program {name} has an unexpected type"
        )))
}

/// Loads the object with `pre`'s offsets and `opts`, attaches every hook, and
/// returns the tracer and its ring buffer.
pub fn load(pre: &Preflight, opts: &LoadOptions) -> Result<(Tracer, RingBuf<MapData>), LoadError> {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones use
    // the memory cgroup. Raising it may be refused: never fatal.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
    let max = opts.max_sockets.max(1);
    let filter_l: u8 = (!opts.lports.is_empty()).into();
    let filter_d: u8 = (!opts.dports.is_empty()).into();
    let smode: u8 = match opts.stacks {
        Stacks::None => stack_mode::NONE,
        Stacks::User => stack_mode::USER,
        Stacks::UserKernel => stack_mode::USER_KERNEL,
    };
    let fd_off = if opts.accept_stacks {
        fd_offsets().map_err(LoadError::AcceptStacksBtf)?
    } else {
        FdOffsets::default()
    };
    // A registered CPython's forks: the child's pid and tgid are read at
    // this kernel's BTF offsets (no fork hook without BTF).
    let task_off = if opts.stacks != Stacks::None {
        btf::Btf::load()
            .and_then(|b| {
                Ok(TaskOffsets {
                    pid: b.member_offset("task_struct", &["pid"])?,
                    tgid: b.member_offset("task_struct", &["tgid"])?,
                })
            })
            .map_err(|e| {
                log::info!(
                    "hooks: {FORK_HOOK}: {e}: forked CPython workers are found by the once-a-second rescan only"
                )
            })
            .ok()
    } else {
        None
    };
    let mut ebpf = EbpfLoader::new()
        .override_global("STATE_OFF", &pre.state, true)
        .override_global("OTHER_OFF", &pre.other, true)
        .override_global("NETNS_OFF", &pre.netns, true)
        .override_global("SOCK_OFF", &pre.sock.clone().unwrap_or_default(), true)
        .override_global("FILTER_LPORT", &filter_l, true)
        .override_global("FILTER_DPORT", &filter_d, true)
        .override_global("STACK_MODE", &smode, true)
        .override_global("FD_OFF", &fd_off, true)
        .override_global("TASK_OFF", &task_off.unwrap_or_default(), true)
        .map_max_entries("STACKS", stack_map_entries(opts.stacks))
        // With --stacks none nothing is walked: the least the kernel takes.
        .map_max_entries(
            "PY_STACKS",
            if opts.stacks == Stacks::None {
                1
            } else {
                PY_STACKS_KEPT
            },
        )
        .map_max_entries(
            "PY_PROCS",
            if opts.stacks == Stacks::None {
                1
            } else {
                PY_PROCS_KEPT
            },
        )
        .map_max_entries("SOCKS", max)
        .map_max_entries("ORIGINS", origin_map_entries(max))
        .map_max_entries("EVENTS", opts.ringbuf_bytes)
        .load(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/close-wait"
        )))
        .map_err(LoadError::Object)?;
    for (set, name) in [(&opts.lports, "LPORTS"), (&opts.dports, "DPORTS")] {
        if set.is_empty() {
            continue;
        }
        let mut m: HashMap<_, u16, u8> =
            HashMap::try_from(ebpf.map_mut(name).ok_or(LoadError::MapMissing(name))?)
                .map_err(LoadError::map(format!("map {name} has an unexpected type")))?;
        for p in set {
            m.insert(p, 1, 0).map_err(LoadError::map(format!(
                "adding port {p} to the {name} filter"
            )))?;
        }
    }
    let mut links: Vec<Box<dyn Send + Sync>> =
        Vec::with_capacity(1 + HOOKS.len() + ACCEPT_HOOKS.len());
    let mut attached = Vec::new();
    let (link, state_hook, why_not) = attach_state_hook(&mut ebpf, pre, opts.hooks)?;
    for w in &why_not {
        log::info!("hooks: {w}");
    }
    links.push(link);
    attached.push(state_hook.to_string());
    let extra: &[(&str, &str, &str)] = if opts.accept_stacks {
        &ACCEPT_HOOKS
    } else {
        &[]
    };
    for &(prog, category, tp) in HOOKS.iter().chain(extra) {
        let p: &mut TracePoint = program(&mut ebpf, prog)?;
        p.load().map_err(LoadError::program(format!(
            "the kernel refused program {prog}"
        )))?;
        let link = p.attach(category, tp).map_err(LoadError::program(format!(
            "attaching to tracepoint {category}:{tp}"
        )))?;
        links.push(Box::new(
            p.take_link(link)
                .map_err(LoadError::program("taking the link"))?,
        ));
        attached.push(format!("{category}:{tp}"));
    }
    // Optional hooks for Python walks: without them new and forked CPython
    // processes wait for the once-a-second rescan.
    let optional: [(bool, &str, &str, &str); 2] = [
        (
            opts.stacks != Stacks::None,
            "sched_process_exec",
            EXEC_HOOK,
            "CPython processes started after attach",
        ),
        (
            task_off.is_some(),
            "sched_process_fork",
            FORK_HOOK,
            "forked CPython workers",
        ),
    ];
    for (wanted, prog, hook, who) in optional {
        if !wanted {
            continue;
        }
        match attach_tracepoint(&mut ebpf, prog, hook) {
            Ok(link) => {
                links.push(link);
                attached.push(hook.to_string());
            }
            Err(e) => log::info!(
                "hooks: {hook}: {}: {who} are found by the once-a-second rescan only",
                chain(&e)
            ),
        }
    }
    if let Ok(mut a) = ATTACHED.lock() {
        *a = attached;
    }
    let (close_hook, why_not) = attach_close_hook(&mut ebpf, opts.hooks)?;
    for w in &why_not {
        log::info!("hooks: {w}");
    }
    if close_hook.is_some() {
        // The state hook keeps a CLOSE_WAIT socket's entry past CLOSE until
        // its tcp_close(). Set before any tcp_close() event can matter: an
        // entry removed at CLOSE before this only loses that close event.
        let mut a: Array<_, u32> = Array::try_from(
            ebpf.map_mut("CLOSE_HOOKED")
                .ok_or(LoadError::MapMissing("CLOSE_HOOKED"))?,
        )
        .map_err(LoadError::map("map CLOSE_HOOKED has an unexpected type"))?;
        a.set(0, 1, 0)
            .map_err(LoadError::map("setting CLOSE_HOOKED"))?;
    }
    let mut hooks = hook_names();
    hooks.extend(close_hook.map(|h| format!("{}:{CLOSE_FN}", h.as_str())));
    log::info!("hooks attached: {}", hooks.join(", "));
    let ring: RingBuf<MapData> = map(&mut ebpf, "EVENTS")?;
    let mut py = PyKernel {
        registry: Default::default(),
        procs: map(&mut ebpf, "PY_PROCS")?,
        walks: map(&mut ebpf, "PY_STACKS")?,
        resolved: Default::default(),
    };
    // Every Python process running now is registered before the tracer
    // says it is attached; with --stacks none none is.
    let walking = opts.stacks != Stacks::None;
    if walking {
        py.scan();
    }
    let python = std::sync::Arc::new(std::sync::Mutex::new(py));
    let mut execs = None;
    if walking {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        execs = Some(tx);
        let weak = std::sync::Arc::downgrade(&python);
        std::thread::Builder::new()
            .name("python-registry".into())
            .spawn(move || registry_thread(&weak, &rx))
            .map_err(LoadError::Thread)?;
    }
    let tracer = Tracer {
        state_hook,
        hooks,
        close_hook,
        counters: map(&mut ebpf, "COUNTERS")?,
        origins: map(&mut ebpf, "ORIGINS")?,
        stacks: map(&mut ebpf, "STACKS")?,
        python,
        execs,
        links,
        _ebpf: ebpf,
    };
    Ok((tracer, ring))
}

impl Drop for Tracer {
    /// Detaching a tracepoint waits for the kernel's RCU grace period
    /// (about 60 ms each, measured): one after the other, nine took half a
    /// second of every exit. In parallel they overlap.
    fn drop(&mut self) {
        std::thread::scope(|s| {
            for link in self.links.drain(..) {
                let spawned = std::thread::Builder::new()
                    .name("detach".into())
                    .spawn_scoped(s, move || drop(link));
                // No thread: the link was moved into the failed closure,
                // which dropped it here (detached in line).
                drop(spawned);
            }
        });
    }
}

impl Tracer {
    pub fn counters(&self) -> KernelCounters {
        let sum = |idx: u32| -> u64 {
            self.counters
                .get(&idx, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        // Count the entries after reading the counters: an insert racing
        // with this read then shows as an entry, never as an eviction.
        // The map is a plain hash the kernel side alone fills and empties:
        // its size is inserted - removed, never a walk of a changing map.
        let inserted = sum(counter::SOCK_INSERTED);
        let removed = sum(counter::SOCK_REMOVED);
        let tracked = inserted.saturating_sub(removed);
        let missed_by_program: Vec<(String, u64)> = self
            .program_stats()
            .into_iter()
            .filter(|p| p.recursion_misses > 0)
            .map(|p| (p.name, p.recursion_misses))
            .collect();
        KernelCounters {
            recursion_misses: missed_by_program.iter().map(|(_, n)| n).sum(),
            missed_by_program,
            ringbuf_lost: sum(counter::RINGBUF_LOST),
            sock_insert_failed: sum(counter::SOCK_INSERT_FAILED),
            sock_evicted: sum(counter::SOCK_EVICTED),
            fd_insert_failed: sum(counter::FD_INSERT_FAILED),
            stack_failed: sum(counter::STACK_FAILED),
            read_failed: sum(counter::READ_FAILED),
            tracked_sockets: tracked,
        }
    }

    /// Statistics of every attached program, from its fdinfo.
    pub fn program_stats(&self) -> Vec<ProgStats> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self._ebpf
            .programs()
            .filter_map(|(name, p)| {
                let fd = crate::logged::ok(p.fd(), || format!("program {name}"))?
                    .as_fd()
                    .as_raw_fd();
                let text =
                    crate::logged::read_to_string(Path::new(&format!("/proc/self/fdinfo/{fd}")))?;
                Some(parse_prog_fdinfo(name, &text))
            })
            .collect()
    }

    /// Where to send the pid of a process that exec'd, to be looked at for
    /// a CPython at once on the registry's thread; None with Python walks
    /// off.
    pub fn exec_notifier(&self) -> Option<std::sync::mpsc::Sender<u32>> {
        self.execs.clone()
    }

    /// The Python stack the kernel took with an origin (`py_stack` id) in
    /// process `pid`, resolved (once; later calls reuse it).
    pub fn python_stack(&self, pid: u32, id: u64) -> Option<crate::python::kernel::Resolved> {
        if id == 0 {
            return None;
        }
        self.python.lock().ok()?.resolve(pid, id)
    }

    /// How the socket at kernel address `skaddr` was created, if the
    /// tracer saw it (its origin leaves the map when it reaches CLOSE).
    pub fn sock_origin(&self, skaddr: u64) -> Option<SockOrigin> {
        match self.origins.get(&skaddr, 0) {
            Ok(o) => Some(o),
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(e) => {
                log::info!("origin of socket {skaddr:#x}: {e}");
                None
            }
        }
    }

    /// The newest connect() origin of `pid` to remote port `dport` (a walk
    /// of the origin map: report time only).
    pub fn connect_ts(&self, pid: u32, dport: u16) -> Option<u64> {
        self.origins
            .iter()
            .filter_map(Result::ok)
            .map(|(_, o)| o)
            .filter(|o| {
                (o.pid_tgid >> 32) as u32 == pid
                    && o.kind == close_wait_common::origin::CONNECT
                    && o.dport == dport
            })
            .map(|o| o.ts_ns)
            .max()
    }

    /// Instruction pointers of a stack map entry, innermost first.
    pub fn stack(&self, id: i32) -> Vec<u64> {
        if id < 0 {
            return Vec::new();
        }
        match self.stacks.get(&(id as u32), 0) {
            Ok(st) => st
                .frames()
                .iter()
                .map(|f| f.ip)
                .filter(|&ip| ip != 0)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_fdinfo_parsing() {
        let text = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_jited:\t1\n\
                    prog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\n\
                    run_time_ns:\t123456\nrun_cnt:\t789\nrecursion_misses:\t3\n\
                    verified_insns:\t100\n";
        let st = parse_prog_fdinfo("inet_sock_set_state", text);
        assert_eq!(
            st,
            ProgStats {
                name: "inet_sock_set_state".into(),
                run_time_ns: 123456,
                run_cnt: 789,
                recursion_misses: 3,
            }
        );
        // Older kernels: no recursion_misses line.
        assert_eq!(parse_prog_fdinfo("x", "run_cnt:\t5\n").recursion_misses, 0);
    }

    #[test]
    fn stack_map_follows_the_choice() {
        assert_eq!(stack_map_entries(Stacks::None), 1);
        assert!(stack_map_entries(Stacks::User) < stack_map_entries(Stacks::UserKernel));
        // 16384 entries of 127 frames were 16 MiB of kernel memory.
        assert!(u64::from(stack_map_entries(Stacks::User)) * 127 * 8 <= 4 << 20);
    }

    #[test]
    fn caps_parsing() {
        use crate::privileges::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN};
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(missing_caps(root).is_empty());
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(missing_caps(none), vec!["CAP_BPF", "CAP_PERFMON"]);
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << CAP_BPF);
        assert_eq!(missing_caps(&bpf_only), vec!["CAP_PERFMON"]);
        let both = format!(
            "CapEff:\t{:016x}\n",
            (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON)
        );
        assert!(missing_caps(&both).is_empty());
        let admin = format!("CapEff:\t{:016x}\n", 1u64 << CAP_SYS_ADMIN);
        assert!(missing_caps(&admin).is_empty());
        assert_eq!(missing_caps(""), vec!["CAP_BPF", "CAP_PERFMON"]);
    }
}
