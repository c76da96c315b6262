//! `close-wait record`: attach, stream events, keep histograms, checkpoint
//! the exports every interval, and report the stuck sockets at the end.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
    sync::oneshot,
};

use crate::{
    aggregate::{self, Aggregator, ServicePorts},
    budget::Budget,
    cli::{Filters, RecordArgs},
    clock::{self, WallClock},
    events::{self, Record},
    export::{hlog::HlogWriter, outputs::Outputs, prometheus},
    investigate::{self, CloseWaitEntries, Origins},
    loader::{self, KernelCounters, Tracer},
    model::{Counters, HookPath, Report, ShutdownLeak, SkippedRuns},
    output::{stdout, OutputError, OutputFile},
    privileges, report, sockets,
    stacks::Symbolizer,
    tracker::Tracker,
};

/// Exit status when --fail-on-stuck finds stuck sockets.
pub const EXIT_STUCK: u8 = 3;
/// Longest an event waits in the ring buffer when no batch wakes us.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// Records handled before the event loop serves its other work (/metrics,
/// signals, checkpoints).
const DRAIN_BATCH: usize = 4096;
/// How long the final look at the stuck sockets may take once a signal
/// asked the run to end: the run ends within about a second.
const FINAL_LOOK_BOUND: Duration = Duration::from_millis(400);
/// Within it, how long stacks and threads may be read: the time after is
/// kept for the age, holders and diagnosis of every socket left.
const FINAL_DEEP_BOUND: Duration = Duration::from_millis(250);
/// How long the final summary waits for a stdout reader that makes no
/// progress before it goes to stderr instead.
const STDOUT_PATIENCE: Duration = Duration::from_millis(300);

impl Origins for Tracer {
    fn sock_origin(&self, skaddr: u64) -> Option<close_wait_common::SockOrigin> {
        Tracer::sock_origin(self, skaddr)
    }
    fn connect_ts(&self, pid: u32, dport: u16) -> Option<u64> {
        Tracer::connect_ts(self, pid, dport)
    }
    fn stack(&self, id: i32) -> Vec<u64> {
        Tracer::stack(self, id)
    }
    fn python_stack(&self, pid: u32, id: u64) -> Option<crate::python::kernel::Resolved> {
        Tracer::python_stack(self, pid, id)
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

/// What a look at the sockets in CLOSE_WAIT needs, owned: it runs on a
/// thread of its own while the ring buffer keeps being drained.
struct LookInput {
    tracer: Arc<Tracer>,
    entries: CloseWaitEntries,
    filters: Filters,
    threshold: Duration,
    stacks: crate::cli::Stacks,
    budget: Budget,
}

/// What a look found, and what it read along the way.
struct Look {
    found: investigate::Findings,
    /// Listening ports of the socket table read (None if it was unreadable).
    listening: Option<HashSet<u16>>,
    kernel: KernelCounters,
    now_ns: u64,
    took: Duration,
}

/// The investigation: the socket table, holders (/proc/*/fd), origins and
/// stacks, threads, diagnosis; then the kernel counters.
fn look(input: LookInput, symbolizer: &mut Symbolizer) -> Look {
    let started = Instant::now();
    let table = sockets::list_tcp(&[
        close_wait_common::tcp_state::ESTABLISHED,
        close_wait_common::tcp_state::CLOSE_WAIT,
        close_wait_common::tcp_state::LISTEN,
    ]);
    let table = table.unwrap_or_else(|e| {
        log::warn!("cannot read the socket table: {e}");
        Vec::new()
    });
    log::debug!("look: socket table in {} ms", started.elapsed().as_millis());
    let listening = (!table.is_empty()).then(|| aggregate::listening_ports(&table));
    let opts = investigate::Options {
        threshold: input.threshold,
        filters: &input.filters,
        kernel_stacks: input.stacks == crate::cli::Stacks::UserKernel,
        user_stacks: input.stacks != crate::cli::Stacks::None,
        budget: &input.budget,
    };
    let found = investigate::investigate(&table, &input.entries, &opts, &*input.tracer, symbolizer);
    log::debug!("look: investigated at {} ms", started.elapsed().as_millis());
    let kernel = input.tracer.counters();
    log::debug!(
        "look: kernel counters at {} ms",
        started.elapsed().as_millis()
    );
    Look {
        found,
        listening,
        kernel,
        now_ns: input.entries.now_ns,
        took: started.elapsed(),
    }
}

/// The thread that looks at the sockets, with its symbolizer (and its
/// caches of parsed binaries) kept from one look to the next.
struct Looker {
    jobs: std::sync::mpsc::Sender<(LookInput, oneshot::Sender<Look>)>,
}

impl Looker {
    fn spawn() -> anyhow::Result<Looker> {
        let (jobs, rx) = std::sync::mpsc::channel::<(LookInput, oneshot::Sender<Look>)>();
        std::thread::Builder::new()
            .name("close-wait-look".into())
            .spawn(move || {
                let mut symbolizer = Symbolizer::new();
                for (input, done) in rx {
                    // The receiver is gone when the run ended meanwhile.
                    let _ = done.send(look(input, &mut symbolizer));
                }
            })
            .context("starting the investigation thread")?;
        Ok(Looker { jobs })
    }

    fn start(&self, input: LookInput) -> anyhow::Result<oneshot::Receiver<Look>> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((input, tx))
            .map_err(|_| anyhow::anyhow!("the investigation thread is gone"))?;
        Ok(rx)
    }
}

/// A look running on the [`Looker`]'s thread.
struct Pending {
    result: oneshot::Receiver<Look>,
    cancel: Arc<AtomicBool>,
    /// Events drained when it started.
    events_before: u64,
}

/// One `record` run: the tracker and aggregator the events feed, the
/// outputs the checkpoints write, and what the run has counted so far.
struct Recording {
    args: RecordArgs,
    clock: WallClock,
    started: SystemTime,
    attach_ns: u64,
    tracker: Tracker,
    agg: Aggregator,
    preexisting: HashSet<investigate::Tuple>,
    /// Events decoded, and records that could not be.
    events: u64,
    decode_errors: u64,
    metrics: Option<Arc<prometheus::Metrics>>,
    outputs: Outputs,
    stdout: stdout::Stdout,
    warned_slow_stdout: bool,
    last_interval_ns: u64,
    last_stuck: u64,
    /// What was attached (the report's `hooks`).
    hooks: Vec<String>,
    hook_path: HookPath,
    /// Pids of processes that exec'd, for the Python registry.
    python_execs: Option<std::sync::mpsc::Sender<u32>>,
}

impl Recording {
    fn on_record(&mut self, r: &Record) {
        if r.kind == events::Kind::Exec {
            let pid = r.pid;
            if let Some(tx) = &self.python_execs {
                // The registry's thread stops only with the tracer.
                if tx.send(pid).is_err() {
                    log::debug!("python: exec of pid {pid} not looked at: the registry stopped");
                }
            }
            return;
        }
        if self.args.events {
            self.print_event(r);
        }
        let t = self.tracker.on_record(r);
        self.agg.on_transition(t);
    }

    fn print_event(&mut self, r: &Record) {
        let Some(line) = events::event_line(r, &self.clock.hms(r.ts_ns)) else {
            return;
        };
        if !self.stdout.line(&line) && !self.warned_slow_stdout && self.stdout.closed().is_none() {
            self.warned_slow_stdout = true;
            log::warn!(
                "stdout is not keeping up: --events lines are dropped (counted in the summary)"
            );
        }
    }

    /// Handles at most `max` records; true when the ring buffer is empty.
    fn drain(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>, max: usize) -> bool {
        for _ in 0..max {
            let Some(item) = ring.next() else {
                return true;
            };
            match events::decode(&item) {
                Ok(r) => {
                    self.events += 1;
                    drop(item);
                    self.on_record(&r);
                }
                Err(e) => {
                    self.decode_errors += 1;
                    log::warn!("dropping malformed event: {e}");
                }
            }
        }
        false
    }

    fn drain_all(&mut self, ring: &mut aya::maps::RingBuf<aya::maps::MapData>) {
        while !self.drain(ring, DRAIN_BATCH) {}
    }

    /// A snapshot of what tracing knows, for a look at the sockets now.
    fn look_input(&mut self, tracer: &Arc<Tracer>, budget: Budget) -> LookInput {
        // When each entered CLOSE_WAIT, and its kernel address (the key of
        // its origin), in one pass over the open sockets.
        let mut entered = std::collections::HashMap::new();
        let mut skaddr = std::collections::HashMap::new();
        for s in self.tracker.open_sockets() {
            let key = (
                s.netns,
                crate::addr::normalize(s.local),
                crate::addr::normalize(s.remote),
            );
            entered.insert(key, s.entered_ns);
            skaddr.insert(key, s.skaddr);
        }
        LookInput {
            tracer: tracer.clone(),
            entries: CloseWaitEntries {
                entered,
                skaddr,
                preexisting: self.preexisting.clone(),
                attach_ns: Some(self.attach_ns),
                now_ns: clock::monotonic_ns(),
            },
            filters: self.args.filters.clone(),
            threshold: self.args.threshold,
            stacks: self.args.stack_mode(),
            budget,
        }
    }

    /// Starts a checkpoint's look on the looker's thread.
    fn start_look(&mut self, looker: &Looker, tracer: &Arc<Tracer>) -> anyhow::Result<Pending> {
        let cancel = Arc::new(AtomicBool::new(false));
        let input = self.look_input(tracer, Budget::cancellable(cancel.clone()));
        Ok(Pending {
            result: looker.start(input)?,
            cancel,
            events_before: self.events,
        })
    }

    /// The report of a look and the tracker's state now; writes every
    /// output (on the final call also the last interval). A failing output
    /// does not stop the others: the errors are returned with the report.
    fn checkpoint(&mut self, look: Look, last: bool) -> (Report, Vec<anyhow::Error>) {
        if let Some(l) = look.listening {
            self.agg.ports.update(l, look.now_ns);
        }
        let found = look.found;
        let kc = look.kernel;
        self.agg.hist.set_open_ages(&found.open_ages_us);
        let t = &self.tracker.counters;
        let counters = Counters {
            close_wait_entered: t.close_wait_entered,
            closed_graceful: t.closed_graceful,
            closed_abort: t.closed_abort,
            peer_reset: t.peer_reset,
            closed_timeout: t.closed_timeout,
            lost_events: kc.ringbuf_lost + kc.recursion_misses + self.decode_errors,
            lost_ringbuf_full: kc.ringbuf_lost,
            lost_skipped_runs: kc.recursion_misses,
            skipped_runs_by_program: kc
                .missed_by_program
                .iter()
                .map(|(program, runs)| SkippedRuns {
                    program: program.clone(),
                    runs: *runs,
                })
                .collect(),
            lost_malformed: self.decode_errors,
            map_evictions: kc.sock_evicted,
            map_insert_failed: kc.sock_insert_failed,
            fd_map_insert_failed: kc.fd_insert_failed,
            stacks_failed: kc.stack_failed,
            exits_without_entry: t.exits_without_entry,
            close_wait_now: found.close_wait_now,
            stuck: found.stuck.len() as u64,
            episodes_dropped: self.agg.episodes_dropped(),
            uninvestigated: found.uninvestigated,
            stacks_not_read: found.stacks_not_read,
        };
        self.last_stuck = counters.stuck;
        let leaked_after_shutdown = self.leaked_after_shutdown(look.now_ns);
        let notes = privileges::report_notes(counters.close_wait_now);
        let report = Report {
            hooks: self.hooks.clone(),
            hook_path: Some(self.hook_path),
            leaked_after_shutdown,
            threshold_ms: self.args.threshold.as_millis() as u64,
            counters,
            stuck: found.stuck,
            groups: found.groups,
            closed_late: self.agg.closed_late(),
            histograms: self.agg.hist.summaries(),
            episodes: self.agg.episodes(),
            notes,
            ..Report::new(
                clock::rfc3339(self.started),
                clock::rfc3339(SystemTime::now()),
            )
        };
        if let Some(m) = &self.metrics {
            m.set_gauges(report.counters.close_wait_now, report.counters.stuck);
            m.set_stuck_holders(&report.stuck);
            m.set_lost(report.counters.lost_events);
            m.set_evictions(report.counters.map_evictions);
        }
        let now_ns = clock::monotonic_ns();
        let start = Duration::from_nanos(self.last_interval_ns.saturating_sub(self.attach_ns));
        let len = Duration::from_nanos(now_ns.saturating_sub(self.last_interval_ns));
        self.last_interval_ns = now_ns;
        let errors = self
            .outputs
            .checkpoint(&report, &mut self.agg.hist, start, len, last)
            .into_iter()
            .map(anyhow::Error::from)
            .collect();
        (report, errors)
    }

    /// Sockets shut down whose tcp_close() has not come past the threshold,
    /// longest first (tcp_close hooked only: the tracker follows none
    /// otherwise).
    fn leaked_after_shutdown(&self, now_ns: u64) -> Vec<ShutdownLeak> {
        let threshold_ns = self.args.threshold.as_nanos() as u64;
        let f = &self.args.filters;
        let mut v: Vec<ShutdownLeak> = self
            .tracker
            .shut_down()
            .filter(|s| now_ns.saturating_sub(s.shutdown_ns) >= threshold_ns)
            .filter(|s| {
                investigate::ports_kept(f, s.local, s.remote)
                    && (f.pids.is_empty() || investigate::pid_kept(f, s.task.pid))
            })
            .map(|s| ShutdownLeak {
                local: s.local,
                remote: s.remote,
                netns: s.netns,
                shutdown_at: humantime::format_rfc3339_millis(self.clock.wall(s.shutdown_ns))
                    .to_string(),
                open_since_shutdown_ms: now_ns.saturating_sub(s.shutdown_ns) as f64 / 1e6,
                shutdown_by: s.task.task(),
            })
            .collect();
        v.sort_by(|a, b| {
            b.open_since_shutdown_ms
                .total_cmp(&a.open_since_shutdown_ms)
        });
        v
    }

    fn status_line(&self, lost: u64, evicted: u64) {
        let c = &self.tracker.counters;
        stdout::say(&format!(
            "close-wait: {} in CLOSE_WAIT {} | entered {} | closed graceful {} abort {} peer_reset {} timeout {} | stuck {} | lost {} | evicted {}",
            self.clock.hms(clock::monotonic_ns()),
            self.tracker.open_count(),
            c.close_wait_entered,
            c.closed_graceful,
            c.closed_abort,
            c.peer_reset,
            c.closed_timeout,
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
    let ports = ServicePorts::new(aggregate::listening_ports(&at_start), clock::monotonic_ns());
    let opts = loader::LoadOptions {
        max_sockets: args.max_sockets,
        lports: args.filters.lports.clone(),
        dports: args.filters.dports.clone(),
        stacks: args.stack_mode(),
        accept_stacks: args.accept_stacks,
        ringbuf_bytes: args.ringbuf_bytes,
        hooks: args.hooks,
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let (tracer, ring) = loader::load(&pre, &opts)?;
    let tracer = Arc::new(tracer);
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
    let hook_path = tracer.close_hook.unwrap_or(HookPath::Tracepoint);
    let mut st = Recording {
        clock: WallClock::now(),
        started,
        attach_ns,
        tracker: {
            let mut t = Tracker::new(args.max_sockets as usize);
            t.set_close_hooked(hook_path.hooks_close());
            t
        },
        hooks: tracer.hooks.clone(),
        python_execs: tracer.exec_notifier(),
        hook_path,
        agg: Aggregator::new(
            args.filters.clone(),
            args.threshold.as_nanos() as u64,
            ports,
            metrics.clone(),
        ),
        preexisting,
        events: 0,
        decode_errors: 0,
        metrics,
        outputs: Outputs::new(
            claimed.json,
            hlog,
            claimed.hgrm,
            args.hgrm_per_tag,
            claimed.html,
            args.mode,
        ),
        stdout: out,
        warned_slow_stdout: false,
        last_interval_ns: attach_ns,
        last_stuck: 0,
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
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
    let looker = Looker::spawn()?;
    // The checkpoint's look at the stuck sockets, while it runs.
    let mut pending: Option<Pending> = None;
    let interrupted = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                if st.drain(guard.get_inner_mut(), DRAIN_BATCH) {
                    guard.clear_ready();
                } else {
                    // More to come: let /metrics and the timers run first.
                    drop(guard);
                    tokio::task::yield_now().await;
                }
            }
            _ = drain_tick.tick() => {
                st.drain(ring.get_mut(), DRAIN_BATCH);
            }
            _ = tick.tick() => {
                if pending.is_some() {
                    log::info!("checkpoint skipped: the previous one is still looking at the sockets");
                } else {
                    pending = Some(st.start_look(&looker, &tracer)?);
                }
            }
            look = async { (&mut pending.as_mut().expect("guarded").result).await }, if pending.is_some() => {
                let p = pending.take().expect("guarded");
                let Ok(look) = look else {
                    anyhow::bail!("the investigation thread ended without a result");
                };
                log::info!(
                    "checkpoint: looked at the sockets in CLOSE_WAIT in {} ms; {} events drained meanwhile",
                    look.took.as_millis(),
                    st.events - p.events_before
                );
                let (r, errors) = st.checkpoint(look, false);
                for e in &errors {
                    log::error!("checkpoint: {e:#}");
                }
                st.status_line(r.counters.lost_events, r.counters.map_evictions);
            }
            _ = st.stdout.gone(), if st.args.events => break false,
            _ = &mut until => break false,
            _ = sigint.recv() => break true,
            _ = sigterm.recv() => break true,
        }
    };
    let ending = Instant::now();
    st.drain_all(ring.get_mut());
    log::debug!("drained at {} ms", ending.elapsed().as_millis());
    // Asked to stop, the final look is bounded; at the end of --duration it
    // takes what it takes.
    let budget = if interrupted {
        Budget::until(ending + FINAL_LOOK_BOUND).deep_until(ending + FINAL_DEEP_BOUND)
    } else {
        Budget::unlimited()
    };
    let input = st.look_input(&tracer, budget);
    let final_look = match pending.take() {
        None => looker
            .start(input)?
            .await
            .context("the investigation thread ended without a result")?,
        Some(p) => {
            // Abandoned: its thread stops at its next check of the flag.
            // The final look runs here, with a symbolizer of its own.
            p.cancel.store(true, Ordering::Relaxed);
            log::info!("abandoning the checkpoint's look in progress");
            look(input, &mut Symbolizer::new())
        }
    };
    log::debug!("final look: {} ms", final_look.took.as_millis());
    let (report, errors) = st.checkpoint(final_look, true);
    log::debug!(
        "final outputs written at {} ms",
        ending.elapsed().as_millis()
    );
    drop(tracer);
    log::info!(
        "final look and outputs took {} ms",
        ending.elapsed().as_millis()
    );
    for e in &errors {
        stdout::say(&format!("close-wait: error: {e:#}"));
    }
    let mut text = report::render(&report, st.args.all);
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
