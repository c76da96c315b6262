//! The files `record` keeps up to date: claimed before attaching, all
//! rewritten at every checkpoint ([`Outputs::checkpoint`]).

use std::{
    collections::{hash_map::Entry, HashMap},
    path::PathBuf,
    time::Duration,
};

use super::{
    hgrm,
    hlog::{HlogError, HlogWriter},
    html, json,
};
use crate::{
    histograms::{Histograms, TAG_ALL, TAG_OPEN},
    model::Report,
    output::{OutputError, OutputFile},
};

/// An output a checkpoint could not write; the others were written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    File(#[from] OutputError),
    #[error(transparent)]
    Hlog(#[from] HlogError),
}

/// Checkpoints kept for the HTML page's timeline (the oldest go first).
pub const MAX_TIMELINE: usize = 4096;

/// The `--json`, `--hlog`, `--hgrm` (and `--hgrm-per-tag`) and `--html`
/// outputs of one run.
pub struct Outputs {
    pub json: Option<OutputFile>,
    pub hlog: Option<HlogWriter>,
    pub hgrm: Option<OutputFile>,
    pub hgrm_per_tag: bool,
    pub html: Option<OutputFile>,
    /// Mode of the files created later (`--hgrm-per-tag`).
    pub mode: Option<u32>,
    /// `--hgrm-per-tag` files, claimed when their tag first appears.
    tag_files: HashMap<PathBuf, OutputFile>,
    /// One point per checkpoint, for the HTML page's timeline.
    timeline: Vec<html::TimelinePoint>,
}

impl Outputs {
    pub fn new(
        json: Option<OutputFile>,
        hlog: Option<HlogWriter>,
        hgrm: Option<OutputFile>,
        hgrm_per_tag: bool,
        html: Option<OutputFile>,
        mode: Option<u32>,
    ) -> Outputs {
        Outputs {
            json,
            hlog,
            hgrm,
            hgrm_per_tag,
            html,
            mode,
            tag_files: HashMap::new(),
            timeline: Vec::new(),
        }
    }

    /// Writes every output for the interval that started `start` after
    /// attaching and lasted `len`, taking that interval's histograms out of
    /// `hist`. A failing output does not stop the others: their errors are
    /// returned.
    ///
    /// The `open` histogram (ages of sockets still in CLOSE_WAIT) is a
    /// snapshot, not a count of events: it goes into the .hlog only with the
    /// final interval (`last`), so adding up intervals never counts a
    /// socket twice.
    pub fn checkpoint(
        &mut self,
        report: &Report,
        hist: &mut Histograms,
        start: Duration,
        len: Duration,
        last: bool,
    ) -> Vec<CheckpointError> {
        let mut errors: Vec<CheckpointError> = Vec::new();
        if let Some(out) = &mut self.json {
            errors.extend(json::write(out, report).err().map(Into::into));
        }
        let mut interval = hist.take_interval();
        if let Some((_, all)) = interval.iter().find(|(t, _)| t == TAG_ALL) {
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
                interval.retain(|(tag, _)| tag != TAG_OPEN);
            }
            errors.extend(
                w.write_interval(start, len, &interval)
                    .err()
                    .map(Into::into),
            );
        }
        if let Some(out) = &mut self.html {
            let page = html::Page {
                report: Some(report),
                curves: hist
                    .cumulative()
                    .into_iter()
                    .map(|(tag, h)| html::Curve::of(tag, &h))
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
            if let Some(h) = hist.get(TAG_ALL) {
                let text = hgrm::render_hgrm(&h, hgrm::US_PER_MS);
                errors.extend(out.replace(text.as_bytes()).err().map(Into::into));
            }
            if self.hgrm_per_tag {
                let base = out.path().to_path_buf();
                for (tag, h) in hist.cumulative() {
                    if tag == TAG_ALL {
                        continue;
                    }
                    let file = match self.tag_files.entry(hgrm::per_tag_path(&base, tag)) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => match OutputFile::claim(v.key(), self.mode) {
                            Ok(f) => v.insert(f),
                            Err(e) => {
                                errors.push(e.into());
                                continue;
                            }
                        },
                    };
                    let text = hgrm::render_hgrm(&h, hgrm::US_PER_MS);
                    errors.extend(file.replace(text.as_bytes()).err().map(Into::into));
                }
            }
        }
        errors
    }
}
