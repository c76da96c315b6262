//! Everything close-wait writes: output files ([`file`]) and the standard
//! streams ([`stdout`]), written so that no path, reader or signal can make
//! a run hang, panic, lose its summary, or change a file it was not asked
//! to write.

pub mod file;
pub mod stdout;

pub use file::{OutputError, OutputFile, DEFAULT_MODE};
