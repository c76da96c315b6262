//! Benchmarks: figures printed, never asserted.

use std::path::Path;

use anyhow::Result;

pub fn run(_root: &Path) -> Result<()> {
    anyhow::bail!("bench is not written yet")
}
