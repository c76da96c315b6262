//! `close-wait record`: attach, stream events, keep histograms, checkpoint
//! the exports every interval, and report the stuck sockets at the end.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};

use crate::{
    cli::RecordArgs,
    clock::{self, WallClock},
    events::{self, Record},
    export::{hgrm, hlog::HlogWriter, html, json, prometheus},
    histograms::Histograms,
    investigate::{self, Known, Origins},
    loader::{self, KernelCounters, Tracer},
    model::{ClosedLate, Counters, FinishedEpisode, Report},
    output::{stdout, OutputError, OutputFile},
    privileges, report, sockets,
    stacks::Symbolizer,
    tracker::{Episode, Tracker},
};

/// Exit status when --fail-on-stuck finds stuck sockets.
pub const EXIT_STUCK: u8 = 3;
/// Longest an event waits in the ring buffer when no batch wakes us.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// Finished episodes kept for the JSON report.
const MAX_EPISODES: usize = 1000;
/// Processes with their own `closed_late` entry; later ones are added up
/// in one entry of pid 0, comm [`CLOSED_LATE_OTHERS`].
pub const MAX_CLOSED_LATE: usize = 256;
/// Comm of the `closed_late` entry beyond [`MAX_CLOSED_LATE`] processes.
pub const CLOSED_LATE_OTHERS: &str = "(other processes)";
/// Checkpoints kept for the HTML page's timeline (the oldest go first).
pub const MAX_TIMELINE: usize = 4096;
/// How long the final summary waits for a stdout reader that makes no
/// progress before it goes to stderr instead.
const STDOUT_PATIENCE: Duration = Duration::from_millis(300);

impl Origins for Tracer {
    fn fd_origin(&self, pid: u32, fd: u32) -> Option<close_wait_common::FdOrigin> {
        Tracer::fd_origin(self, pid, fd)
    }
    fn fork_parent(&self, pid: u32) -> Option<u32> {
        Tracer::fork_parent(self, pid)
    }
    fn stack(&self, id: i32) -> Vec<u64> {
        Tracer::stack(self, id)
    }
}

/// The output files, claimed (checked and locked) before attaching.
struct Claimed {
    json: Option<OutputFile>,
    hlog: Option<OutputFile>,
    hgrm: Option<OutputFile>,
    html: Option<OutputFile>,
}

/// Everything checked before attaching; errors here name what is wrong.
fn validate(args: &mut RecordArgs) -> anyhow::Result<(Claimed, Option<SocketAddr>)> {
    let claim = |p: &Option<PathBuf>| -> Result<Option<OutputFile>, OutputError> {
        p.as_deref()
            .map(|p| OutputFile::claim(p, args.mode))
            .transpose()
    };
    let claimed = Claimed {
        json: claim(&args.json)?,
        hlog: claim(&args.hlog)?,
        hgrm: claim(&args.hgrm)?,
        html: claim(&args.html)?,
    };
    if let Some(c) = &args.filters.cgroup {
        args.filters.cgroup = Some(crate::cgroup::resolve(c)?);
    }
    crate::validate::pids_exist(&args.filters.pids).map_err(anyhow::Error::msg)?;
    let prom = match &args.prometheus {
        Some(a) => Some(prometheus::parse_listen_addr(a)?),
        None => None,
    };
    Ok((claimed, prom))
}

struct State {
    args: RecordArgs,
    clock: WallClock,
    started: SystemTime,
    attach_ns: u64,
    tracker: Tracker,
    hist: Histograms,
    episodes: VecDeque<FinishedEpisode>,
    episodes_dropped: u64,
    closed_late: HashMap<(u32, String), ClosedLate>,
    preexisting: HashSet<investigate::Tuple>,
    decode_errors: u64,
    metrics: Option<Arc<prometheus::Metrics>>,
    json: Option<OutputFile>,
    hlog: Option<HlogWriter>,
    hgrm: Option<OutputFile>,
    /// `--hgrm-per-tag` files, claimed when their tag first appears.
    tag_files: HashMap<PathBuf, OutputFile>,
    stdout: stdout::Stdout,
    warned_slow_stdout: bool,
    last_interval_ns: u64,
    html: Option<OutputFile>,
    /// One point per checkpoint, for the HTML page's timeline.
    timeline: Vec<html::TimelinePoint>,
    symbolizer: Symbolizer,
    last_stuck: u64,
    /// Local ports with a listener, refreshed every interval: tells an
    /// accepted socket (service port = local) from a connected one (remote).
    listen_ports: HashSet<u16>,
    listen_refreshed_ns: u64,
}

/// The service port of a connection: the listening port for accepted
/// sockets, the remote port for connected ones.
pub fn service_port(listen_ports: &HashSet<u16>, local: SocketAddr, remote: SocketAddr) -> u16 {
    if listen_ports.contains(&local.port()) {
        local.port()
    } else {
        remote.port()
    }
}

fn listening_ports(table: &[sockets::TcpSocket]) -> HashSet<u16> {
    table
        .iter()
        .filter(|s| s.state == close_wait_common::tcp_state::LISTEN)
        .map(|s| s.local.port())
        .collect()
}

/// The `closed_late` entry of `pid`/`comm`: its own while fewer than
/// [`MAX_CLOSED_LATE`] processes have one, else the shared overflow entry
/// (a load test recycling workers must not grow the table forever).
fn closed_late_entry<'a>(
    map: &'a mut HashMap<(u32, String), ClosedLate>,
    pid: u32,
    comm: &str,
) -> &'a mut ClosedLate {
    let mut key = (pid, comm.to_owned());
    if !map.contains_key(&key) && map.len() >= MAX_CLOSED_LATE {
        key = (0, CLOSED_LATE_OTHERS.to_owned());
    }
    let (pid, comm) = key.clone();
    map.entry(key).or_insert_with(|| ClosedLate {
        pid,
        comm,
        count: 0,
        max_ms: 0.0,
        examples: Vec::new(),
    })
}

fn episode_out(ep: &Episode) -> FinishedEpisode {
    FinishedEpisode {
        local: ep.local,
        remote: ep.remote,
        netns: ep.netns,
        ending: ep.ending,
        duration_ms: ep.duration_ns().map(|d| d as f64 / 1e6),
        since_attach: ep.entered_ns.is_none(),
        closer: ep.closer.clone(),
    }
}

impl State {
    /// Whether a finished episode passes the userspace filters (the kernel
    /// applied the port filters to sockets it saw entering).
    fn keep(&self, ep: &Episode) -> bool {
        let f = &self.args.filters;
        if !investigate::ports_kept(f, ep.local, ep.remote)
            || (ep.netns != 0 && !investigate::netns_kept(f, ep.netns))
        {
            return false;
        }
        if f.pids.is_empty() && f.cgroup.is_none() {
            return true;
        }
        ep.closer
            .as_ref()
            .is_some_and(|t| investigate::pid_kept(f, t.pid))
    }

    /// Service port of a finished episode; a local port not known to listen
    /// refreshes the listener set (at most once a second: a listener opened
    /// after the last refresh is then found).
    fn port_of(&mut self, ep: &Episode) -> u16 {
        let now = clock::monotonic_ns();
        if !self.listen_ports.contains(&ep.local.port())
            && now.saturating_sub(self.listen_refreshed_ns) > 1_000_000_000
        {
            self.listen_refreshed_ns = now;
            if let Ok(t) = sockets::list_tcp(&[close_wait_common::tcp_state::LISTEN]) {
                self.listen_ports = listening_ports(&t);
            }
        }
        service_port(&self.listen_ports, ep.local, ep.remote)
    }

    fn on_record(&mut self, r: &Record) {
        if self.args.events && r.kind == events::Kind::State {
            self.print_event(r);
        }
        let entered_before = self.tracker.counters.close_wait_entered;
        let Some(ep) = self.tracker.on_record(r) else {
            if self.tracker.counters.close_wait_entered > entered_before {
                if let Some(m) = &self.metrics {
                    m.inc_entered();
                }
            }
            return;
        };
        if !self.keep(&ep) {
            return;
        }
        let out = episode_out(&ep);
        let port = self.port_of(&ep);
        // Every closed episode with a known duration is recorded; a peer
        // reset has no closer, its comm tag is `comm:?`.
        if let Some(d) = ep.duration_ns() {
            let comm = ep.closer.as_ref().map(|c| c.comm.as_str()).unwrap_or("");
            self.hist.record_closed(comm, port, d / 1000);
        }
        if let (Some(d), Some(c)) = (ep.duration_ns(), &ep.closer) {
            if d >= self.args.threshold.as_nanos() as u64 {
                let e = closed_late_entry(&mut self.closed_late, c.pid, &c.comm);
                e.count += 1;
                e.max_ms = e.max_ms.max(d as f64 / 1e6);
                if e.examples.len() < 5 {
                    e.examples.push(out.clone());
                }
            }
        }
        if let Some(m) = &self.metrics {
            let comm = ep.closer.as_ref().map(|c| c.comm.as_str()).unwrap_or("");
            let secs = ep.duration_ns().map(|d| d as f64 / 1e9);
            let container = m.container_of(ep.closer.as_ref().map_or(0, |c| c.pid));
            m.observe_closed(comm, &container, port, secs, ep.ending.as_str());
        }
        if self.episodes.len() >= MAX_EPISODES {
            self.episodes.pop_front();
            self.episodes_dropped += 1;
        }
        self.episodes.push_back(out);
    }

    fn print_event(&mut self, r: &Record) {
        let (Some(l), Some(rem)) = (r.local, r.remote) else {
            return;
        };
        let entering = r.newstate == close_wait_common::tcp_state::CLOSE_WAIT;
        // At entry, and at an exit caused by the peer's reset, the task on
        // CPU is the peer's or softirq's, never the owner (the loopback
        // trap): do not print it as if it were.
        let who = if entering || r.reset_received {
            "-".to_string()
        } else {
            format!("{}/{}", r.pid, r.comm)
        };
        let waited = match (entering, r.entered_ns) {
            (false, Some(e)) => format!(
                "  in CLOSE_WAIT {}",
                report::fmt_ms(r.ts_ns.saturating_sub(e) as f64 / 1e6)
            ),
            (false, None) => "  in CLOSE_WAIT since before attach".to_string(),
            _ => String::new(),
        };
        let line = format!(
            "{} {:<22} {} -> {} {} -> {}{}",
            self.clock.hms(r.ts_ns),
            who,
            l,
            rem,
            events::state_name(r.oldstate),
            events::state_name(r.newstate),
            waited
        );
        if !self.stdout.line(&line) && !self.warned_slow_stdout && self.stdout.closed().is_none() {
            self.warned_slow_stdout = true;
            log::warn!(
                "stdout is not keeping up: --events lines are dropped (counted in the summary)"
            );
        }
    }

    fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(r) => self.on_record(&r),
                Err(e) => {
                    self.decode_errors += 1;
                    log::warn!("dropping malformed event: {e}");
                }
            }
        }
    }

    fn build_report(&mut self, tracer: &Tracer, kc: &KernelCounters, now_ns: u64) -> Report {
        let table = sockets::list_tcp(&[
            close_wait_common::tcp_state::ESTABLISHED,
            close_wait_common::tcp_state::CLOSE_WAIT,
            close_wait_common::tcp_state::LISTEN,
        ])
        .unwrap_or_else(|e| {
            log::warn!("cannot read the socket table: {e}");
            Vec::new()
        });
        if !table.is_empty() {
            self.listen_ports = listening_ports(&table);
        }
        let known = Known {
            entered: self
                .tracker
                .open_sockets()
                .map(|s| {
                    (
                        (
                            s.netns,
                            crate::addr::normalize(s.local),
                            crate::addr::normalize(s.remote),
                        ),
                        s.entered_ns,
                    )
                })
                .collect(),
            preexisting: self.preexisting.clone(),
            attach_ns: Some(self.attach_ns),
            now_ns,
        };
        let opts = investigate::Options {
            threshold: self.args.threshold,
            filters: &self.args.filters,
            kernel_stacks: self.args.stack_mode() == crate::cli::Stacks::UserKernel,
            user_stacks: self.args.stack_mode() != crate::cli::Stacks::None,
        };
        let found = investigate::investigate(&table, &known, &opts, tracer, &mut self.symbolizer);
        self.hist.set_open_ages(&found.open_ages_us);
        let t = &self.tracker.counters;
        let counters = Counters {
            close_wait_entered: t.close_wait_entered,
            closed_graceful: t.closed_graceful,
            closed_abort: t.closed_abort,
            peer_reset: t.peer_reset,
            lost_events: kc.ringbuf_lost + kc.recursion_misses + self.decode_errors,
            map_evictions: kc.sock_evicted,
            map_insert_failed: kc.sock_insert_failed,
            fd_map_insert_failed: kc.fd_insert_failed,
            stacks_failed: kc.stack_failed,
            exits_without_entry: t.exits_without_entry,
            close_wait_now: found.close_wait_now,
            stuck: found.stuck.len() as u64,
            episodes_dropped: self.episodes_dropped,
        };
        self.last_stuck = counters.stuck;
        let mut closed_late: Vec<ClosedLate> = self.closed_late.values().cloned().collect();
        closed_late.sort_by(|a, b| b.max_ms.total_cmp(&a.max_ms));
        Report {
            hooks: loader::hook_names(),
            threshold_ms: self.args.threshold.as_millis() as u64,
            counters,
            stuck: found.stuck,
            groups: found.groups,
            closed_late,
            histograms: self.hist.summaries(),
            episodes: self.episodes.iter().cloned().collect(),
            ..Report::new(
                clock::rfc3339(self.started),
                clock::rfc3339(SystemTime::now()),
            )
        }
    }

    /// Writes every file output; on the final call also the last interval.
    /// A failing output does not stop the others: the errors are returned
    /// with the report.
    ///
    /// The `open` histogram (ages of sockets still in CLOSE_WAIT) is a
    /// snapshot, not a count of events: it goes into the .hlog only with the
    /// final interval, so adding up intervals never counts a socket twice.
    fn checkpoint(
        &mut self,
        tracer: &Tracer,
        now_ns: u64,
        last: bool,
    ) -> (Report, Vec<anyhow::Error>) {
        let kc = tracer.counters();
        let report = self.build_report(tracer, &kc, now_ns);
        let mut errors = Vec::new();
        if let Some(m) = &self.metrics {
            m.set_gauges(report.counters.close_wait_now, report.counters.stuck);
            m.set_stuck_holders(&report.stuck);
            m.set_lost(report.counters.lost_events);
            m.set_evictions(report.counters.map_evictions);
        }
        if let Some(out) = &mut self.json {
            errors.extend(json::write(out, &report).err().map(Into::into));
        }
        let start = Duration::from_nanos(self.last_interval_ns.saturating_sub(self.attach_ns));
        let len = Duration::from_nanos(now_ns.saturating_sub(self.last_interval_ns));
        let mut interval = self.hist.take_interval();
        if let Some((_, all)) = interval
            .iter()
            .find(|(t, _)| t == crate::histograms::TAG_ALL)
        {
            let mut point =
                html::TimelinePoint::of_interval(start.as_secs_f64(), len.as_secs_f64(), all);
            point.in_close_wait = Some(report.counters.close_wait_now);
            point.stuck = Some(report.counters.stuck);
            if self.html.is_some() {
                if self.timeline.len() >= MAX_TIMELINE {
                    self.timeline.remove(0);
                }
                self.timeline.push(point);
            }
        }
        if let Some(w) = &mut self.hlog {
            if !last {
                interval.retain(|(tag, _)| tag != crate::histograms::TAG_OPEN);
            }
            errors.extend(
                w.write_interval(start, len, &interval)
                    .err()
                    .map(Into::into),
            );
        }
        self.last_interval_ns = now_ns;
        if let Some(out) = &mut self.html {
            let page = html::Page {
                report: Some(&report),
                curves: self
                    .hist
                    .cumulative()
                    .into_iter()
                    .map(|(tag, h)| html::Curve::of(tag, h))
                    .collect(),
                timeline: self.timeline.clone(),
                sources: Vec::new(),
            };
            errors.extend(
                out.replace(html::render(&page).as_bytes())
                    .err()
                    .map(Into::into),
            );
        }
        if let Some(out) = &mut self.hgrm {
            if let Some(h) = self.hist.get("all") {
                errors.extend(
                    out.replace(hgrm::render_hgrm(h, 1000.0).as_bytes())
                        .err()
                        .map(Into::into),
                );
            }
            if self.args.hgrm_per_tag {
                let base = out.path().to_path_buf();
                for (tag, h) in self.hist.cumulative() {
                    if tag == "all" {
                        continue;
                    }
                    let safe: String = tag
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let mut name = base.clone().into_os_string();
                    name.push(format!(".{safe}.hgrm"));
                    let path = PathBuf::from(name);
                    let file = match self.tag_files.entry(path) {
                        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                        std::collections::hash_map::Entry::Vacant(v) => {
                            match OutputFile::claim(v.key(), self.args.mode) {
                                Ok(f) => v.insert(f),
                                Err(e) => {
                                    errors.push(e.into());
                                    continue;
                                }
                            }
                        }
                    };
                    errors.extend(
                        file.replace(hgrm::render_hgrm(h, 1000.0).as_bytes())
                            .err()
                            .map(Into::into),
                    );
                }
            }
        }
        (report, errors)
    }

    fn status_line(&self, lost: u64, evicted: u64) {
        let c = &self.tracker.counters;
        stdout::say(&format!(
            "close-wait: {} in CLOSE_WAIT {} | entered {} | closed graceful {} abort {} peer_reset {} | stuck {} | lost {} | evicted {}",
            self.clock.hms(clock::monotonic_ns()),
            self.tracker.open_count(),
            c.close_wait_entered,
            c.closed_graceful,
            c.closed_abort,
            c.peer_reset,
            self.last_stuck,
            lost,
            evicted
        ));
    }
}

/// Runs `record` on a single-threaded tokio runtime; returns the exit status.
pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(record(args))
}

async fn record(mut args: RecordArgs) -> anyhow::Result<ExitCode> {
    let (claimed, prom_addr) = validate(&mut args)?;
    // Bound before anything is attached: a busy port fails in a second.
    let prom_listener = match prom_addr {
        Some(addr) => Some(prometheus::bind(addr).await?),
        None => None,
    };
    let pre = loader::preflight()?;
    let started = SystemTime::now();
    // Sockets already in CLOSE_WAIT: their age will be a lower bound.
    // One dump of the socket table: listeners (service ports) and the
    // sockets already in CLOSE_WAIT.
    let at_start = sockets::list_tcp(&[
        close_wait_common::tcp_state::CLOSE_WAIT,
        close_wait_common::tcp_state::LISTEN,
    ])
    .unwrap_or_default();
    let preexisting: HashSet<_> = at_start
        .iter()
        .filter(|s| s.state == close_wait_common::tcp_state::CLOSE_WAIT)
        .map(investigate::tuple)
        .filter(|(n, l, r)| {
            investigate::ports_kept(&args.filters, *l, *r)
                && investigate::netns_kept(&args.filters, *n)
        })
        .collect();
    let listen_ports = listening_ports(&at_start);
    let opts = loader::LoadOptions {
        max_sockets: args.max_sockets,
        lports: args.filters.lports.clone(),
        dports: args.filters.dports.clone(),
        stacks: args.stack_mode(),
        ringbuf_bytes: args.ringbuf_bytes,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tracer, ring) = loader::load(&pre, &opts)?;
    let attach_ns = clock::monotonic_ns();
    let metrics = match prom_listener {
        Some(listener) => {
            let m = Arc::new(prometheus::Metrics::new());
            log::info!(
                "serving metrics on http://{}/metrics",
                listener.local_addr()?
            );
            tokio::spawn(prometheus::serve_on(listener, m.clone()));
            Some(m)
        }
        None => None,
    };
    let hlog = match claimed.hlog {
        Some(out) => Some(HlogWriter::create(out, started)?),
        None => None,
    };
    let out = stdout::Stdout::spawn(stdout::DEFAULT_CAPACITY, args.events)
        .context("starting the stdout writer")?;
    stdout::say(&format!(
        "close-wait: tracing CLOSE_WAIT ({} already in CLOSE_WAIT); Ctrl-C to stop",
        preexisting.len()
    ));
    let mut st = State {
        clock: WallClock::now(),
        started,
        attach_ns,
        tracker: Tracker::new(args.max_sockets as usize),
        hist: Histograms::new(),
        episodes: VecDeque::new(),
        episodes_dropped: 0,
        closed_late: HashMap::new(),
        preexisting,
        decode_errors: 0,
        metrics,
        json: claimed.json,
        hlog,
        hgrm: claimed.hgrm,
        html: claimed.html,
        timeline: Vec::new(),
        tag_files: HashMap::new(),
        stdout: out,
        warned_slow_stdout: false,
        last_interval_ns: attach_ns,
        symbolizer: Symbolizer::new(),
        last_stuck: 0,
        listen_ports,
        listen_refreshed_ns: attach_ns,
        args,
    };
    // SAFETY: the ring buffer owns its map fd, which stays open and the same
    // for as long as the AsyncFd that owns the ring buffer lives.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("registering the ring buffer with tokio: {e}"))?;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + st.args.interval,
        st.args.interval,
    );
    // The kernel wakes us only for batches; this drains the stragglers.
    let mut drain_tick = tokio::time::interval(DRAIN_EVERY);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = st.args.duration.map(|d| tokio::time::Instant::now() + d);
    let until = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until);
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                st.drain(guard.get_inner_mut());
                guard.clear_ready();
            }
            _ = drain_tick.tick() => st.drain(ring.get_mut()),
            _ = tick.tick() => {
                st.drain(ring.get_mut());
                // The checkpoint read the kernel counters already (counting
                // the socket map's entries): the status line reuses them.
                let (r, errors) = st.checkpoint(&tracer, clock::monotonic_ns(), false);
                for e in &errors {
                    log::error!("checkpoint: {e:#}");
                }
                st.status_line(r.counters.lost_events, r.counters.map_evictions);
            }
            _ = st.stdout.gone(), if st.args.events => break,
            _ = &mut until => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    st.drain(ring.get_mut());
    let (report, errors) = st.checkpoint(&tracer, clock::monotonic_ns(), true);
    drop(tracer);
    for e in &errors {
        stdout::say(&format!("close-wait: error: {e:#}"));
    }
    let mut text = report::render(&report, st.args.all);
    if report.counters.close_wait_now > 0 {
        if let Some(note) = privileges::holders_note(privileges::Caps::current(), "/proc".as_ref())
        {
            text.push_str(&format!("\nnote: {note}\n"));
        }
    }
    let dropped = st.stdout.dropped_lines();
    if dropped > 0 {
        text.push_str(&format!(
            "\nnote: {dropped} --events lines were not printed: stdout was not read fast enough (the counters and files are complete)\n"
        ));
    }
    if let Err(why) = st.stdout.finish(&text, STDOUT_PATIENCE) {
        stdout::say(&format!("close-wait: {why}; the summary follows on stderr"));
        stdout::say(text.trim_end());
    }
    if st.args.fail_on_stuck && report.counters.stuck > 0 {
        return Ok(ExitCode::from(EXIT_STUCK));
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_port_is_the_listening_or_the_remote_port() {
        let listen: HashSet<u16> = [8080].into_iter().collect();
        let accepted = (
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:40000".parse().unwrap(),
        );
        assert_eq!(service_port(&listen, accepted.0, accepted.1), 8080);
        let connected = (
            "127.0.0.1:40001".parse().unwrap(),
            "10.0.0.1:5432".parse().unwrap(),
        );
        assert_eq!(service_port(&listen, connected.0, connected.1), 5432);
    }

    #[test]
    fn closed_late_is_bounded_and_keeps_every_count() {
        let mut map = HashMap::new();
        for pid in 1..=(MAX_CLOSED_LATE as u32 + 100) {
            closed_late_entry(&mut map, pid, "worker").count += 1;
        }
        // a process that has its own entry keeps it after the bound
        closed_late_entry(&mut map, 1, "worker").count += 1;
        assert_eq!(map.len(), MAX_CLOSED_LATE + 1);
        assert_eq!(map[&(1, "worker".to_owned())].count, 2);
        let others = &map[&(0, CLOSED_LATE_OTHERS.to_owned())];
        assert_eq!((others.pid, others.count), (0, 100));
        let total: u64 = map.values().map(|e| e.count).sum();
        assert_eq!(total, MAX_CLOSED_LATE as u64 + 101);
    }
}
