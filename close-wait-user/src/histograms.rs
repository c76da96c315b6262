//! HdrHistograms of CLOSE_WAIT durations, one per tag.
//!
//! Every closed episode is recorded, in microseconds with 3 significant
//! digits, into the overall histogram (tag `all`), the histogram of its
//! process (`comm:<comm>`) and the one of its service port (`port:<port>`).
//! The ages of sockets still in CLOSE_WAIT at the end go into a separate
//! histogram tagged `open`: they are lower bounds, not durations, and are
//! never mixed into the closed ones.
//!
//! Cardinality is bounded: after [`MAX_TAGS_PER_KIND`] distinct comms (or
//! ports) further ones are folded into `comm:other` (or `port:other`).
//!
//! Two sets are kept: cumulative histograms (for the final report) and
//! interval histograms that [`Histograms::take_interval`] hands out and
//! resets (for the interval log).

use std::borrow::Cow;
use std::collections::HashMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant value digits of every histogram.
pub const SIGFIG: u8 = 3;
/// Distinct `comm:` tags (and, separately, `port:` tags) kept before folding
/// into the `other` tag.
pub const MAX_TAGS_PER_KIND: usize = 256;
/// Tag of the histogram of every closed episode.
pub const TAG_ALL: &str = "all";
/// Tag of the ages of the sockets still in CLOSE_WAIT.
pub const TAG_OPEN: &str = "open";
/// Tag that collects the comms beyond [`MAX_TAGS_PER_KIND`].
pub const TAG_COMM_OTHER: &str = "comm:other";
/// Tag that collects the ports beyond [`MAX_TAGS_PER_KIND`].
pub const TAG_PORT_OTHER: &str = "port:other";

/// A new empty auto-resizing histogram with [`SIGFIG`] digits.
pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits is always a valid configuration.
    Histogram::new(SIGFIG).expect("sigfig 3 is valid")
}

/// Adds `from` into `to`; both auto-resize, so only a value beyond what any
/// histogram can hold fails, and that one is clamped as [`record`] does.
fn add(to: &mut Histogram<u64>, from: &Histogram<u64>) {
    if to.add(from).is_err() {
        for v in from.iter_recorded() {
            let (value, n) = (v.value_iterated_to(), v.count_at_value());
            if to.record_n(value, n).is_err() {
                to.saturating_record_n(value, n);
            }
        }
    }
}

/// Records `value`, clamping it to the largest trackable value if it is
/// beyond what even an auto-resizing histogram can hold.
fn record(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

/// The tag of a process name. Characters that an interval log tag cannot
/// hold (`,`, space, CR, LF) and other control characters become `_`; an
/// empty name becomes `?`.
pub fn comm_tag(comm: &str) -> String {
    let clean: String = comm
        .chars()
        .map(|c| {
            if c == ',' || c == ' ' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if clean.is_empty() {
        "comm:?".to_owned()
    } else {
        format!("comm:{clean}")
    }
}

/// The tag of a service port.
pub fn port_tag(port: u16) -> String {
    format!("port:{port}")
}

/// Sort key that lists `all` first, then `comm:` tags, then `port:` tags
/// (numerically), then anything else, with `open` last.
pub fn tag_order(tag: &str) -> (u8, u32, &str) {
    if tag == TAG_ALL {
        (0, 0, tag)
    } else if tag == TAG_OPEN {
        (9, 0, tag)
    } else if let Some(c) = tag.strip_prefix("comm:") {
        (1, u32::from(c == "other"), tag)
    } else if let Some(p) = tag.strip_prefix("port:") {
        match p.parse::<u16>() {
            Ok(n) => (2, u32::from(n), tag),
            Err(_) => (2, u32::MAX, tag),
        }
    } else {
        (3, 0, tag)
    }
}

/// Percentiles of one histogram, in microseconds. Embedded in the JSON
/// report as `"histograms": [...]`. All fields are 0 when `count` is 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistSummary {
    pub tag: String,
    pub count: u64,
    pub min_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl HistSummary {
    /// Summarises `h` under `tag`. Percentiles are HdrHistogram's
    /// `value_at_quantile` (the highest value equivalent to the bucket).
    pub fn from_histogram(tag: &str, h: &Histogram<u64>) -> HistSummary {
        if h.is_empty() {
            return HistSummary {
                tag: tag.to_owned(),
                count: 0,
                min_us: 0,
                p50_us: 0,
                p90_us: 0,
                p99_us: 0,
                p999_us: 0,
                max_us: 0,
                mean_us: 0.0,
            };
        }
        HistSummary {
            tag: tag.to_owned(),
            count: h.len(),
            min_us: h.min(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// The cumulative and the current interval's histogram of one tag.
#[derive(Debug)]
struct Tagged {
    tag: String,
    /// Every interval taken so far, added up; with `interval`, the
    /// cumulative histogram. An episode is recorded once, into `interval`.
    taken: Histogram<u64>,
    /// Since the last take; empty when nothing was recorded meanwhile.
    interval: Histogram<u64>,
}

impl Tagged {
    fn new(tag: String) -> Tagged {
        Tagged {
            tag,
            taken: new_histogram(),
            interval: new_histogram(),
        }
    }

    fn record(&mut self, value: u64) {
        record(&mut self.interval, value);
    }

    /// Everything recorded: the intervals taken and the current one.
    fn cumulative(&self) -> Cow<'_, Histogram<u64>> {
        if self.interval.is_empty() {
            return Cow::Borrowed(&self.taken);
        }
        let mut h = self.taken.clone();
        add(&mut h, &self.interval);
        Cow::Owned(h)
    }

    /// Ends the current interval: returns it, added to `taken`.
    fn take(&mut self) -> Histogram<u64> {
        add(&mut self.taken, &self.interval);
        std::mem::replace(&mut self.interval, new_histogram())
    }
}

/// Distinct raw comms remembered for their tag id.
const MAX_RAW_COMMS: usize = 4 * MAX_TAGS_PER_KIND;

/// Index of a tag in `Histograms::tags`; 0 is `all`.
type TagId = u16;
const ALL: TagId = 0;
/// `port_ids` value of a port without its own tag yet.
const NO_TAG: TagId = TagId::MAX;

/// Cumulative and per-interval histograms of CLOSE_WAIT durations, by tag.
///
/// Tags are interned: each comm (by its raw bytes) and each port is mapped
/// to a small integer once, and recording an episode is then two look-ups
/// without allocation (a comm hash, a port index) and three histogram
/// increments.
#[derive(Debug)]
pub struct Histograms {
    tags: Vec<Tagged>,
    /// Tag text -> id (distinct comms can share a tag once cleaned).
    by_tag: HashMap<String, TagId>,
    /// Raw comm bytes -> id of its `comm:` tag (or of `comm:other`).
    comm_ids: HashMap<Box<[u8]>, TagId>,
    /// The last comm looked up and its id: a load test's episodes mostly
    /// come from one closer, so most look-ups end here, unhashed.
    last_comm: Option<([u8; 16], usize, TagId)>,
    /// Port -> id of its `port:` tag (or of `port:other`), [`NO_TAG`] unseen.
    port_ids: Vec<TagId>,
    comm_tags: usize,
    port_tags: usize,
    /// Ages of the sockets still in CLOSE_WAIT (a snapshot).
    open: Option<Histogram<u64>>,
    /// `set_open_ages` was called since the last `take_interval`.
    open_pending: bool,
}

impl Default for Histograms {
    fn default() -> Self {
        Self::new()
    }
}

impl Histograms {
    pub fn new() -> Histograms {
        let mut h = Histograms {
            tags: Vec::new(),
            by_tag: HashMap::new(),
            comm_ids: HashMap::new(),
            last_comm: None,
            port_ids: vec![NO_TAG; usize::from(u16::MAX) + 1],
            comm_tags: 0,
            port_tags: 0,
            open: None,
            open_pending: false,
        };
        h.intern(TAG_ALL.to_owned());
        h
    }

    fn intern(&mut self, tag: String) -> TagId {
        if let Some(&id) = self.by_tag.get(&tag) {
            return id;
        }
        let id = self.tags.len() as TagId;
        self.by_tag.insert(tag.clone(), id);
        self.tags.push(Tagged::new(tag));
        id
    }

    fn comm_id(&mut self, comm: &[u8]) -> TagId {
        if let Some((last, len, id)) = &self.last_comm {
            if last[..*len] == *comm {
                return *id;
            }
        }
        let id = self.comm_id_slow(comm);
        if comm.len() <= 16 {
            let mut last = [0u8; 16];
            last[..comm.len()].copy_from_slice(comm);
            self.last_comm = Some((last, comm.len(), id));
        }
        id
    }

    fn comm_id_slow(&mut self, comm: &[u8]) -> TagId {
        if let Some(&id) = self.comm_ids.get(comm) {
            return id;
        }
        let tag = comm_tag(&String::from_utf8_lossy(comm));
        let id = if self.by_tag.contains_key(&tag) || self.comm_tags < MAX_TAGS_PER_KIND {
            if !self.by_tag.contains_key(&tag) {
                self.comm_tags += 1;
            }
            self.intern(tag)
        } else {
            self.intern(TAG_COMM_OTHER.to_owned())
        };
        // Raw names are remembered up to a bound; beyond it a new name is
        // looked up by its tag text each time (slower, never unbounded).
        if self.comm_ids.len() < MAX_RAW_COMMS {
            self.comm_ids.insert(comm.into(), id);
        }
        id
    }

    fn port_id(&mut self, port: u16) -> TagId {
        let id = self.port_ids[usize::from(port)];
        if id != NO_TAG {
            return id;
        }
        let id = if self.port_tags < MAX_TAGS_PER_KIND {
            self.port_tags += 1;
            self.intern(port_tag(port))
        } else {
            self.intern(TAG_PORT_OTHER.to_owned())
        };
        self.port_ids[usize::from(port)] = id;
        id
    }

    /// Records one closed CLOSE_WAIT episode of `dur_us` microseconds owned
    /// by `comm` on service port `port`.
    pub fn record_closed(&mut self, comm: impl AsRef<[u8]>, port: u16, dur_us: u64) {
        let c = self.comm_id(comm.as_ref());
        let p = self.port_id(port);
        for id in [ALL, c, p] {
            self.tags[usize::from(id)].record(dur_us);
        }
    }

    /// Replaces the `open` histogram with the ages (microseconds) of the
    /// sockets still in CLOSE_WAIT. It is a snapshot, not accumulated: call
    /// it once at the end (or before each interval). The next
    /// [`take_interval`](Self::take_interval) includes it.
    pub fn set_open_ages(&mut self, ages_us: &[u64]) {
        let mut h = new_histogram();
        for &age in ages_us {
            record(&mut h, age);
        }
        self.open = Some(h);
        self.open_pending = true;
    }

    /// The cumulative histogram of `tag`, if anything was recorded under it
    /// (`all` always exists).
    pub fn get(&self, tag: &str) -> Option<Cow<'_, Histogram<u64>>> {
        if tag == TAG_OPEN {
            return self.open.as_ref().map(Cow::Borrowed);
        }
        let id = *self.by_tag.get(tag)?;
        Some(self.tags[usize::from(id)].cumulative())
    }

    /// Every cumulative histogram with its tag, in report order (see
    /// [`tag_order`]).
    pub fn cumulative(&self) -> Vec<(&str, Cow<'_, Histogram<u64>>)> {
        let mut v: Vec<(&str, Cow<'_, Histogram<u64>>)> = self
            .tags
            .iter()
            .map(|t| (t.tag.as_str(), t.cumulative()))
            .chain(self.open.as_ref().map(|h| (TAG_OPEN, Cow::Borrowed(h))))
            .collect();
        v.sort_by(|a, b| tag_order(a.0).cmp(&tag_order(b.0)));
        v
    }

    /// One summary per cumulative histogram, in report order. `all` is
    /// always present, even when empty.
    pub fn summaries(&self) -> Vec<HistSummary> {
        self.cumulative()
            .into_iter()
            .map(|(t, h)| HistSummary::from_histogram(t, &h))
            .collect()
    }

    /// Histograms of what was recorded since the previous call, in report
    /// order, and starts a new interval. `all` is always present (possibly
    /// empty, so that an interval log has one line per interval); other
    /// closed-duration tags only when they recorded something; `open` only
    /// if [`set_open_ages`](Self::set_open_ages) was called since the last
    /// call (its snapshot, not a difference).
    pub fn take_interval(&mut self) -> Vec<(String, Histogram<u64>)> {
        let mut v: Vec<(String, Histogram<u64>)> = Vec::new();
        for (i, t) in self.tags.iter_mut().enumerate() {
            if !t.interval.is_empty() || i == usize::from(ALL) {
                v.push((t.tag.clone(), t.take()));
            }
        }
        if self.open_pending {
            if let Some(open) = &self.open {
                v.push((TAG_OPEN.to_owned(), open.clone()));
            }
            self.open_pending = false;
        }
        v.sort_by(|a, b| tag_order(&a.0).cmp(&tag_order(&b.0)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[(String, Histogram<u64>)]) -> Vec<&str> {
        v.iter().map(|(t, _)| t.as_str()).collect()
    }

    /// Cumulative histograms hold every episode, before and after the
    /// intervals taken; each interval only its own.
    #[test]
    fn cumulative_adds_up_the_intervals_taken_and_the_current_one() {
        let mut h = Histograms::new();
        for v in [10, 20, 30] {
            h.record_closed("srv", 80, v);
        }
        let count = |h: &Histograms| h.get("comm:srv").map(|x| x.len());
        assert_eq!(count(&h), Some(3));
        let first = h.take_interval();
        assert_eq!(first.iter().find(|(t, _)| t == "all").unwrap().1.len(), 3);
        assert_eq!(count(&h), Some(3));
        h.record_closed("srv", 80, 40_000);
        h.record_closed("other", 81, 50);
        assert_eq!(count(&h), Some(4));
        assert_eq!(h.get("all").map(|x| x.len()), Some(5));
        assert_eq!(
            h.get("all").unwrap().max(),
            h.get("comm:srv").unwrap().max()
        );
        let second = h.take_interval();
        let tags: Vec<(&str, u64)> = second.iter().map(|(t, x)| (t.as_str(), x.len())).collect();
        assert_eq!(
            tags,
            [
                ("all", 2),
                ("comm:srv", 1),
                ("comm:other", 1),
                ("port:80", 1),
                ("port:81", 1)
            ]
        );
        assert_eq!(h.summaries()[0].count, 5);
        assert_eq!(
            h.take_interval().iter().map(|(_, x)| x.len()).sum::<u64>(),
            0
        );
        assert_eq!(count(&h), Some(4));
    }

    /// The last-comm shortcut never files an episode under the previous
    /// comm: alternating closers each keep their own count.
    #[test]
    fn alternating_comms_keep_their_own_tags() {
        let mut h = Histograms::new();
        for comm in ["a", "b", "a", "ab", "a", "b"] {
            h.record_closed(comm, 80, 10);
        }
        let count = |tag: &str| {
            h.summaries()
                .into_iter()
                .find(|s| s.tag == tag)
                .map(|s| s.count)
        };
        assert_eq!(count("comm:a"), Some(3));
        assert_eq!(count("comm:b"), Some(2));
        assert_eq!(count("comm:ab"), Some(1));
        assert_eq!(count("all"), Some(6));
    }

    #[test]
    fn records_into_all_comm_and_port() {
        let mut h = Histograms::new();
        h.record_closed("nginx", 8080, 1_000);
        h.record_closed("nginx", 8080, 3_000);
        h.record_closed("python3", 5432, 2_000_000);
        assert_eq!(h.get("all").unwrap().len(), 3);
        assert_eq!(h.get("comm:nginx").unwrap().len(), 2);
        assert_eq!(h.get("comm:python3").unwrap().len(), 1);
        assert_eq!(h.get("port:8080").unwrap().len(), 2);
        assert_eq!(
            h.get("port:5432").unwrap().max(),
            h.get("all").unwrap().max()
        );
        assert!(h.get("open").is_none());
    }

    #[test]
    fn summaries_in_order_with_percentiles() {
        let mut h = Histograms::new();
        for v in 1..=1000 {
            h.record_closed("srv", 80, v);
        }
        h.record_closed("aaa", 9000, 5);
        h.set_open_ages(&[60_000_000]);
        let s = h.summaries();
        let order: Vec<&str> = s.iter().map(|s| s.tag.as_str()).collect();
        assert_eq!(
            order,
            [
                "all",
                "comm:aaa",
                "comm:srv",
                "port:80",
                "port:9000",
                "open"
            ]
        );
        let srv = &s[2];
        assert_eq!(srv.count, 1000);
        assert_eq!(srv.min_us, 1);
        assert_eq!(srv.p50_us, 500);
        assert_eq!(srv.p90_us, 900);
        assert_eq!(srv.p99_us, 990);
        assert_eq!(srv.p999_us, 999);
        assert_eq!(srv.max_us, 1000);
        assert!((srv.mean_us - 500.5).abs() < 0.01, "{}", srv.mean_us);
        // open ages never reach the closed-duration histograms
        assert_eq!(s[0].count, 1001);
        assert_eq!(s[5].count, 1);
        assert!(s[5].max_us >= 59_990_000);
    }

    #[test]
    fn empty_summary_is_zero() {
        let s = Histograms::new().summaries();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].tag, "all");
        assert_eq!(s[0].count, 0);
        assert_eq!(s[0].max_us, 0);
        let json = serde_json::to_value(&s[0]).unwrap();
        assert_eq!(json["p999_us"], 0);
        assert_eq!(json["tag"], "all");
    }

    #[test]
    fn intervals_reset_but_cumulative_does_not() {
        let mut h = Histograms::new();
        h.record_closed("a", 1, 10);
        h.record_closed("b", 2, 20);
        let first = h.take_interval();
        assert_eq!(
            tags(&first),
            ["all", "comm:a", "comm:b", "port:1", "port:2"]
        );
        assert_eq!(first[0].1.len(), 2);

        let empty = h.take_interval();
        assert_eq!(tags(&empty), ["all"]);
        assert_eq!(empty[0].1.len(), 0);

        h.record_closed("a", 1, 30);
        h.set_open_ages(&[5, 6, 7]);
        let third = h.take_interval();
        assert_eq!(tags(&third), ["all", "comm:a", "port:1", "open"]);
        assert_eq!(third[0].1.len(), 1);
        assert_eq!(third[3].1.len(), 3);
        // open is only handed out once per set_open_ages
        assert_eq!(tags(&h.take_interval()), ["all"]);

        assert_eq!(h.get("all").unwrap().len(), 3);
        assert_eq!(h.get("comm:a").unwrap().len(), 2);
    }

    #[test]
    fn set_open_ages_replaces() {
        let mut h = Histograms::new();
        h.set_open_ages(&[1, 2, 3]);
        h.set_open_ages(&[4]);
        assert_eq!(h.get("open").unwrap().len(), 1);
        assert_eq!(h.get("all").unwrap().len(), 0);
    }

    #[test]
    fn cardinality_is_bounded() {
        let mut h = Histograms::new();
        for i in 0..(MAX_TAGS_PER_KIND as u16 + 10) {
            h.record_closed(format!("c{i}"), 1000 + i, 7);
        }
        // a known comm keeps its own tag after the limit was reached
        h.record_closed("c0", 1000, 7);
        let tags: Vec<String> = h.summaries().into_iter().map(|s| s.tag).collect();
        let comms = tags.iter().filter(|t| t.starts_with("comm:")).count();
        let ports = tags.iter().filter(|t| t.starts_with("port:")).count();
        assert_eq!(comms, MAX_TAGS_PER_KIND + 1);
        assert_eq!(ports, MAX_TAGS_PER_KIND + 1);
        assert_eq!(h.get(TAG_COMM_OTHER).unwrap().len(), 10);
        assert_eq!(h.get(TAG_PORT_OTHER).unwrap().len(), 10);
        assert_eq!(h.get("comm:c0").unwrap().len(), 2);
        assert_eq!(h.get("all").unwrap().len(), MAX_TAGS_PER_KIND as u64 + 11);
    }

    #[test]
    fn comm_tags_are_log_safe() {
        assert_eq!(comm_tag("my prog,x"), "comm:my_prog_x");
        assert_eq!(comm_tag("a\nb"), "comm:a_b");
        assert_eq!(comm_tag(""), "comm:?");
        assert!(hdrhistogram::serialization::interval_log::Tag::new(&comm_tag("a b\r,")).is_some());
    }

    #[test]
    fn huge_values_do_not_panic() {
        let mut h = Histograms::new();
        h.record_closed("x", 1, u64::MAX);
        assert_eq!(h.get("all").unwrap().len(), 1);
    }
}
