//! `close-wait snapshot`: sockets in CLOSE_WAIT right now, with holders,
//! unread bytes and a rough age (tcp_info), without attaching anything.

use std::{collections::HashSet, process::ExitCode, time::SystemTime};

use crate::{
    cli::SnapshotArgs,
    clock,
    investigate::{self, CloseWaitEntries, NoOrigins},
    model::{Counters, Report},
    output::{stdout, OutputFile},
    privileges, report, sockets,
    stacks::Symbolizer,
};

pub fn run(mut args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let mut json = args
        .json
        .as_deref()
        .map(|p| OutputFile::claim(p, args.mode))
        .transpose()?;
    if let Some(c) = &args.filters.cgroup {
        args.filters.cgroup = Some(crate::cgroup::resolve(c)?);
    }
    use close_wait_common::tcp_state::{CLOSE_WAIT, ESTABLISHED, LISTEN};
    let table = sockets::list_tcp(&[ESTABLISHED, CLOSE_WAIT, LISTEN])?;
    let entries = CloseWaitEntries {
        entered: Default::default(),
        preexisting: HashSet::new(),
        skaddr: Default::default(),
        attach_ns: None,
        now_ns: clock::monotonic_ns(),
    };
    let budget = crate::budget::Budget::unlimited();
    let opts = investigate::Options {
        budget: &budget,
        threshold: std::time::Duration::ZERO,
        filters: &args.filters,
        kernel_stacks: false,
        user_stacks: true,
    };
    let mut sym = Symbolizer::new();
    let found = investigate::investigate(&table, &entries, &opts, &NoOrigins, &mut sym);
    let now = clock::rfc3339(SystemTime::now());
    let notes = privileges::report_notes(found.close_wait_now);
    let r = Report {
        notes,
        counters: Counters {
            close_wait_now: found.close_wait_now,
            stuck: found.stuck.len() as u64,
            ..Default::default()
        },
        stuck: found.stuck,
        groups: found.groups,
        ..Report::new(now.clone(), now)
    };
    let text = report::render(&r, args.all);
    // The summary is printed even when the file cannot be written.
    let written = match &mut json {
        Some(out) => crate::export::json::write(out, &r),
        None => Ok(()),
    };
    stdout::print_report(&text);
    written?;
    Ok(ExitCode::SUCCESS)
}
