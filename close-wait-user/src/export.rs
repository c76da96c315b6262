//! Exports: the JSON report ([`json`]), interval logs ([`hlog`]),
//! percentile distributions ([`hgrm`]), the HTML page ([`html`]),
//! Prometheus `/metrics` ([`prometheus`]), and the reader of recorded files
//! behind `close-wait report` ([`offline`]).
//!
//! Each format module owns its reader, its writer and its error type. Every
//! file written goes through [`crate::output::OutputFile`]: claimed and
//! locked before attaching, replaced by rename, never written in place.

pub mod hgrm;
pub mod hlog;
pub mod html;
pub mod json;
pub mod offline;
pub mod outputs;
pub mod prometheus;
pub mod svg;
