//! The language runtime of a holding process, for the thread summaries:
//! a CPython process gets the Python stack of every thread (`python`), a Go
//! program is said to run goroutines on its OS threads.

use object::Object;

use crate::{python, threads::ThreadSummary};

/// Is `/proc/PID/exe` a Go program (it carries Go's build info)?
pub fn is_go(pid: u32) -> bool {
    let Ok(data) = std::fs::read(format!("/proc/{pid}/exe")) else {
        return false;
    };
    object::File::parse(&*data).is_ok_and(|f| {
        f.section_by_name(".go.buildinfo").is_some() || f.section_by_name(".gopclntab").is_some()
    })
}

/// Adds what the runtime knows to a thread summary of `pid`.
pub fn annotate(pid: u32, summary: &mut ThreadSummary) {
    match python::PyProcess::attach(pid) {
        Ok(p) => match p.threads() {
            Ok(t) => summary.python = Some(python::group_threads(p.version_text(), &t)),
            Err(e) => log::debug!("pid {pid}: python threads unreadable: {e}"),
        },
        Err(python::PyError::NotPython) => {
            if is_go(pid) {
                summary.runtime = Some("go".into());
                summary.text = format!(
                    "Go program, its goroutines run on {} OS thread{}: {}",
                    summary.total,
                    if summary.total == 1 { "" } else { "s" },
                    summary.text
                );
            }
        }
        Err(e) => log::debug!("pid {pid}: {e}"),
    }
}
