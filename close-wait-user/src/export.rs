//! Exports: interval logs (`.hlog`), percentile distributions (`.hgrm`),
//! Prometheus `/metrics`, and the offline reader behind `close-wait report`.
//!
//! Every file written goes through [`crate::output::OutputFile`]: claimed
//! and locked before attaching, replaced by rename, never written in place.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

pub mod hgrm;
pub mod hlog;
pub mod html;
pub mod offline;
pub mod prometheus;
pub mod svg;

/// Errors while writing exports or serving metrics. A cause (an I/O error,
/// say) is the error's `source()`, not repeated in its message: print the
/// chain (anyhow's `{:#}`) to see both.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("output {path}: directory {dir} does not exist")]
    MissingDir { path: PathBuf, dir: PathBuf },
    #[error("output {path}: {dir} is not a directory")]
    ParentNotDir { path: PathBuf, dir: PathBuf },
    #[error("output {path}: cannot create files in {dir}")]
    DirNotWritable {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("output {path} is a directory; give a file name")]
    IsDirectory { path: PathBuf },
    #[error("refusing to write {path}: it is a symbolic link (remove it or pick another path)")]
    Symlink { path: PathBuf },
    #[error("refusing to write {path}: it is {kind}, not a regular file (remove it or pick another path)")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("refusing to write {path}: another close-wait is writing it")]
    Locked { path: PathBuf },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: cannot encode histogram '{tag}'")]
    Encode {
        path: PathBuf,
        tag: String,
        #[source]
        source: hdrhistogram::serialization::V2DeflateSerializeError,
    },
    #[error(
        "{path}: '{tag}' cannot be used as an interval log tag (no ',', spaces or line breaks)"
    )]
    BadTag { path: PathBuf, tag: String },
    #[error(
        "invalid listen address '{input}': {reason} (use PORT, :PORT, IP:PORT or [IPv6]:PORT)"
    )]
    ListenAddr { input: String, reason: &'static str },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}
