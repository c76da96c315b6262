//! `close-wait snapshot`: sockets in CLOSE_WAIT right now, with holders,
//! unread bytes and a rough age (tcp_info), without attaching anything.

use std::{collections::HashSet, process::ExitCode, time::SystemTime};

use crate::{
    cli::SnapshotArgs,
    clock,
    export::atomic,
    investigate::{self, Known, NoOrigins},
    report::{self, Counters, Report},
    sockets,
    stacks::Symbolizer,
};

pub fn run(mut args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    if let Some(p) = &args.json {
        atomic::check_output_path(p)?;
    }
    if let Some(c) = &args.filters.cgroup {
        args.filters.cgroup = Some(crate::cgroup::resolve(c)?);
    }
    use close_wait_common::tcp_state::{CLOSE_WAIT, ESTABLISHED, LISTEN};
    let table = sockets::list_tcp(&[ESTABLISHED, CLOSE_WAIT, LISTEN])?;
    let known = Known {
        entered: Default::default(),
        preexisting: HashSet::new(),
        attach_ns: None,
        now_ns: clock::monotonic_ns(),
    };
    let opts = investigate::Options {
        threshold: std::time::Duration::ZERO,
        filters: &args.filters,
        kernel_stacks: false,
    };
    let mut sym = Symbolizer::new();
    let found = investigate::investigate(&table, &known, &opts, &NoOrigins, &mut sym);
    let now = clock::rfc3339(SystemTime::now());
    let r = Report {
        schema: report::SCHEMA,
        started_at: now.clone(),
        ended_at: now,
        kernel: report::kernel_release(),
        hooks: Vec::new(),
        threshold_ms: 0,
        counters: Counters {
            close_wait_now: found.close_wait_now,
            stuck: found.stuck.len() as u64,
            ..Default::default()
        },
        stuck: found.stuck,
        groups: found.groups,
        closed_late: Vec::new(),
        histograms: Vec::new(),
        episodes: Vec::new(),
    };
    if let Some(p) = &args.json {
        let mut text = serde_json::to_string_pretty(&r)?;
        text.push('\n');
        atomic::write_atomic(p, text.as_bytes())?;
    }
    print!("{}", report::render(&r, args.all));
    Ok(ExitCode::SUCCESS)
}
