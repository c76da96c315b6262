//! Command-line types (clap derive) and nothing else.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::validate;

const ABOUT: &str = "Find TCP sockets stuck in CLOSE_WAIT, who holds them, and why.";

const LONG_ABOUT: &str = "\
Find TCP sockets stuck in CLOSE_WAIT, who holds them, and why.

A socket enters CLOSE_WAIT when the peer closes its side (its FIN arrives) and
stays there until the application calls close(). close-wait traces every TCP
state change into and out of CLOSE_WAIT with eBPF (sock:inet_sock_set_state),
measures how long each socket stayed, and at the end reports the sockets that
never left: the processes and file descriptors holding them, the stack that
created them, what the owning threads are doing, and a diagnosis.

With no subcommand, `record` runs. Recording needs root (or CAP_BPF +
CAP_PERFMON); `snapshot` and `report` need no eBPF.";

const EXAMPLES: &str = "\
Examples:
  # Record until Ctrl-C, report sockets in CLOSE_WAIT longer than 5s
  sudo close-wait

  # Watch one service during a 10 minute load test, fail the job on a leak
  sudo close-wait record -L 8080 --duration 10m --fail-on-stuck --json cw.json

  # Print each CLOSE_WAIT transition as it happens (like tcpstates)
  sudo close-wait record --events -p 1234

  # Export duration histograms and serve Prometheus metrics
  sudo close-wait record --hlog cw.hlog --hgrm cw.hgrm --prometheus 9470

  # What is in CLOSE_WAIT right now, and who holds it (no eBPF)
  sudo close-wait snapshot

  # Read saved reports and histogram logs offline
  close-wait report cw.json cw.hlog";

#[derive(Debug, Parser)]
#[command(
    name = "close-wait",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub record: RecordArgs,

    /// More log output on stderr (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach the tracer and record CLOSE_WAIT episodes (the default)
    Record(RecordArgs),
    /// List sockets in CLOSE_WAIT right now with their holders (no eBPF)
    Snapshot(SnapshotArgs),
    /// Print the summary of saved JSON reports and .hlog files (no privileges)
    Report(ReportArgs),
    /// Start three small leaky programs on loopback, record them, explain
    /// what was found, and stop them (root)
    Demo(DemoArgs),
    /// A program of the demo (run by `close-wait demo` itself)
    #[command(hide = true)]
    DemoChild(DemoChildArgs),
}

fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port '{s}': expected 1-65535")),
    }
}

fn max_sockets(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=16 * 1024 * 1024).contains(&n) => Ok(n),
        _ => Err(format!("invalid socket count '{s}': expected 1-16777216")),
    }
}

/// Filters shared by `record` and `snapshot`.
#[derive(Debug, Args, Clone, Default)]
pub struct Filters {
    /// Only sockets owned by this process (repeatable)
    #[arg(short = 'p', long = "pid", value_name = "PID", value_parser = validate::pid)]
    pub pids: Vec<u32>,
    /// Only sockets with this local port (repeatable)
    #[arg(short = 'L', long = "lport", value_name = "PORT", value_parser = port)]
    pub lports: Vec<u16>,
    /// Only sockets with this remote port (repeatable)
    #[arg(short = 'D', long = "dport", value_name = "PORT", value_parser = port)]
    pub dports: Vec<u16>,
    /// Only sockets of processes in this cgroup v2 (path under /sys/fs/cgroup, or absolute)
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
    /// Only sockets in this network namespace: its inode number, or a file
    /// naming it (/proc/PID/ns/net, /run/netns/NAME, or NAME as `ip netns` has it)
    #[arg(long, value_name = "PATH|INODE", value_parser = netns_arg)]
    pub netns: Option<u32>,
}

fn netns_arg(s: &str) -> Result<u32, String> {
    crate::netns::resolve(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args, Clone)]
pub struct RecordArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Stop after this long (e.g. 30s, 10m); default: until Ctrl-C / SIGTERM
    #[arg(long, value_name = "DUR", value_parser = validate::run_duration)]
    pub duration: Option<Duration>,
    /// A socket in CLOSE_WAIT longer than this is "stuck"
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = validate::threshold)]
    pub threshold: Duration,
    /// Status line on stderr and checkpoint of output files this often (100ms to 24h)
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = validate::interval)]
    pub interval: Duration,
    /// Print one line per CLOSE_WAIT transition as it happens
    #[arg(long)]
    pub events: bool,
    /// Write the JSON report here (replaced atomically every interval)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (.hlog) here
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// Write the percentile distribution (.hgrm) of all closed episodes here
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Write a self-contained HTML page with the report and its charts here
    /// (replaced atomically every interval)
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also write one .hgrm per tag next to --hgrm (FILE.<tag>.hgrm)
    #[arg(long, requires = "hgrm")]
    pub hgrm_per_tag: bool,
    /// Serve Prometheus metrics on ADDR (PORT, :PORT or HOST:PORT; bare ports bind 127.0.0.1)
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,
    /// Exit with status 3 if any socket is stuck at the end (for CI load tests)
    #[arg(long)]
    pub fail_on_stuck: bool,
    /// Sockets tracked in the kernel at once (LRU; evictions are counted)
    #[arg(long, value_name = "N", default_value = "65536", value_parser = max_sockets)]
    pub max_sockets: u32,
    /// Stacks taken where a socket is created: user, user+kernel or none
    /// (none: the cheapest; reports then have no creating stack)
    #[arg(long, value_name = "WHICH", value_enum, default_value = "user")]
    pub stacks: Stacks,
    /// Same as --stacks user+kernel
    #[arg(long, conflicts_with = "stacks")]
    pub kernel_stacks: bool,
    /// How tcp_close() is hooked: auto (fentry where it loads, else kprobe,
    /// else none), fentry, kprobe, or tracepoint (tracepoints only, no
    /// tcp_close hook). Probed by loading, never by kernel version; -v says
    /// why a path was not taken
    #[arg(long, value_name = "PATH", value_enum, default_value = "auto")]
    pub hooks: Hooks,
    /// Also take a stack at accept()/accept4() (attaches syscalls:
    /// tracepoints, which slow every syscall of every task a little)
    #[arg(long)]
    pub accept_stacks: bool,
    /// List every stuck socket of a group (default: the oldest 5 and a count)
    #[arg(long)]
    pub all: bool,
    /// Size of the kernel's event ring buffer (power of two, e.g. 4M); raise it when events are lost
    #[arg(long, value_name = "BYTES", default_value = "1M", value_parser = validate::ringbuf_bytes)]
    pub ringbuf_bytes: u32,
    /// Permission bits of the files written (octal; default 0600, or the mode of an existing file you own)
    #[arg(long, value_name = "MODE", value_parser = validate::mode)]
    pub mode: Option<u32>,
}

/// `--hooks`: how tcp_close() is hooked (the state machine always uses the
/// tracepoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Hooks {
    /// fentry, else kprobe, else tracepoints only.
    Auto,
    /// fentry on tcp_close (fails when it does not load).
    Fentry,
    /// kprobe on tcp_close (fails when it does not load).
    Kprobe,
    /// Tracepoints only: close() and shutdown() are not told apart.
    Tracepoint,
}

/// `--stacks`: which stacks the kernel side takes at connect()/accept().
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stacks {
    /// The user stack of the creating call (frame-pointer walk).
    User,
    /// The user stack and the kernel stack.
    #[value(name = "user+kernel")]
    UserKernel,
    /// No stack: the origin keeps only pid, tid, comm and time.
    None,
}

impl RecordArgs {
    /// `--stacks`, with `--kernel-stacks` as its older spelling.
    pub fn stack_mode(&self) -> Stacks {
        if self.kernel_stacks {
            Stacks::UserKernel
        } else {
            self.stacks
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Write the snapshot as JSON here
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// List every stuck socket of a group (default: the oldest 5 and a count)
    #[arg(long)]
    pub all: bool,
    /// Permission bits of the file written (octal; default 0600, or the mode of an existing file you own)
    #[arg(long, value_name = "MODE", value_parser = validate::mode)]
    pub mode: Option<u32>,
}

#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// JSON reports (from --json) and .hlog files
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Add up histograms of the same tag across files
    #[arg(long)]
    pub merge: bool,
    /// List every stuck socket (default: the oldest 10 per file and a count)
    #[arg(long)]
    pub all: bool,
    /// Also write the files as one self-contained HTML page with charts here
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Permission bits of the HTML page (octal; default 0600, or the mode of an existing file you own)
    #[arg(long, value_name = "MODE", value_parser = validate::mode, requires = "html")]
    pub mode: Option<u32>,
    /// Refuse input files larger than this (e.g. 512M, 2G)
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = validate::max_bytes)]
    pub max_bytes: u64,
}

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// How long to record (the leaks are made in the first second)
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = demo_duration)]
    pub duration: Duration,
    /// Also write the recording as an HTML page here
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

fn demo_duration(s: &str) -> Result<Duration, String> {
    let d = crate::duration::parse(s)?;
    if !(Duration::from_secs(2)..=Duration::from_secs(60)).contains(&d) {
        return Err(format!(
            "invalid demo duration '{s}': expected 2s to 60s (the threshold is 1s)"
        ));
    }
    Ok(d)
}

#[derive(Debug, Args, Clone)]
pub struct DemoChildArgs {
    /// The role and its arguments
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    pub role: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_is_record() {
        let cli = Cli::try_parse_from(["close-wait", "-L", "8080", "--duration", "2m"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.record.filters.lports, vec![8080]);
        assert_eq!(cli.record.duration, Some(Duration::from_secs(120)));
        assert_eq!(cli.record.threshold, Duration::from_secs(5));
    }

    #[test]
    fn bad_input_is_refused() {
        for args in [
            vec!["close-wait", "--duration", "5"],
            vec!["close-wait", "--threshold", "abc"],
            vec!["close-wait", "-L", "0"],
            vec!["close-wait", "--bogus"],
            vec!["close-wait", "--max-sockets", "0"],
            vec!["close-wait", "report"],
            vec!["close-wait", "demo", "--duration", "1s"],
            vec!["close-wait", "demo", "--duration", "2m"],
            vec!["close-wait", "--duration", "18446744073709551615s"],
            vec!["close-wait", "--interval", "1us"],
            vec!["close-wait", "--interval", "18446744073709551615s"],
            vec!["close-wait", "-p", "4194304"],
            vec!["close-wait", "--mode", "8"],
            vec!["close-wait", "--ringbuf-bytes", "1000"],
            vec!["close-wait", "report", "--max-bytes", "0", "x"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn repeatable_filters() {
        let cli = Cli::try_parse_from(["close-wait", "record", "-p", "1", "-p", "2", "-D", "80"])
            .unwrap();
        let Some(Command::Record(r)) = cli.command else {
            panic!("record expected");
        };
        assert_eq!(r.filters.pids, vec![1, 2]);
        assert_eq!(r.filters.dports, vec![80]);
    }
}
