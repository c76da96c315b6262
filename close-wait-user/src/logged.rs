//! Errors not worth failing for are logged here, never dropped: at `-v`
//! (info) when they say something a user can act on (a permission refused,
//! a file that does not parse), at `-vv` (debug) when they are the expected
//! race of reading `/proc` (the process, thread or descriptor went away
//! between listing it and reading it).

use std::{fmt::Display, io, path::Path};

/// Did `e` come from something that went away while it was read?
fn went_away(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// `r`'s value, or None with its error logged under `what`.
pub fn io<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if went_away(&e) => {
            log::debug!("{}: {e}", what());
            None
        }
        Err(e) => {
            log::info!("{}: {e}", what());
            None
        }
    }
}

/// `r`'s value, or None with its error logged at `-v` under `what`.
pub fn ok<T, E: Display>(r: Result<T, E>, what: impl FnOnce() -> String) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log::info!("{}: {e}", what());
            None
        }
    }
}

/// `r`'s value, or None with its error logged at `-vv` under `what`: for
/// failures that are routine (a peer that hung up, a file of a process
/// that changed while it was read).
pub fn routine<T, E: Display>(r: Result<T, E>, what: impl FnOnce() -> String) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            log::debug!("{}: {e}", what());
            None
        }
    }
}

/// The text of `path`, or None with the error logged (see [`io`]).
pub fn read_to_string(path: &Path) -> Option<String> {
    io(std::fs::read_to_string(path), || path.display().to_string())
}

/// The target of the symlink `path`, or None with the error logged.
pub fn read_link(path: &Path) -> Option<std::path::PathBuf> {
    io(std::fs::read_link(path), || path.display().to_string())
}
