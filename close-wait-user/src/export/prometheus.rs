//! Prometheus `/metrics` over HTTP, in the OpenMetrics text format that
//! Prometheus scrapes.
//!
//! Base unit seconds, cumulative `_bucket{le=...}`, `_sum` and `_count`,
//! labels of bounded cardinality (comm, container and port, never pid), and
//! the tool's own health (lost events, map evictions):
//!
//! | series | type |
//! |---|---|
//! | `close_wait_duration_seconds{comm,container,port}` | histogram of closed CLOSE_WAIT episodes |
//! | `close_wait_sockets` | gauge: sockets in CLOSE_WAIT now |
//! | `close_wait_stuck_sockets` | gauge: of those, the ones over the stuck threshold |
//! | `close_wait_holder_stuck_sockets{comm,container}` | gauge: the stuck ones by holder |
//! | `close_wait_entered_total` | counter: sockets that entered CLOSE_WAIT |
//! | `close_wait_closed_total{how}` | counter by `graceful`, `abort`, `peer_reset`, `timeout` |
//! | `close_wait_lost_events_total` | counter: events the kernel could not deliver |
//! | `close_wait_map_evictions_total` | counter: tracked sockets evicted from a full map |
//!
//! `container` is the 12-character id of the process's container (from its
//! cgroup path); the label is absent outside containers (Prometheus reads
//! an absent label as `""`).
//!
//! The HTTP side is hyper's HTTP/1 server, one task per connection, with a
//! header read timeout and a cap on concurrent connections.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Errors while setting up the `/metrics` endpoint.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    #[error(
        "invalid listen address '{input}': {reason} (use PORT, :PORT, IP:PORT or [IPv6]:PORT)"
    )]
    ListenAddr { input: String, reason: &'static str },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Upper bounds (seconds) of the duration histogram buckets, 1 ms to 1 h.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 900.0, 1800.0,
    3600.0,
];
/// Distinct (comm, container, port) label sets of the duration histogram;
/// further ones are counted under `comm="other",port="other"`.
pub const MAX_DURATION_SERIES: usize = 256;
/// Distinct (comm, container) series of `close_wait_holder_stuck_sockets`
/// at one checkpoint; the other holders are added up under `comm="other"`.
pub const MAX_HOLDER_SERIES: usize = 256;
/// Value of the labels for series beyond the bounds.
pub const OTHER: &str = "other";
/// Content type of the response (OpenMetrics text, as prometheus-client
/// encodes it).
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

const MAX_CONNECTIONS: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Values of the `how` label of `close_wait_closed_total`: how a CLOSE_WAIT
/// episode ended (the owner closed it, the owner closed it with unread data
/// and the kernel sent a reset, the peer reset it, a kernel timer gave up
/// on the peer). Anything else is counted
/// under `other`, so the label set stays bounded.
pub const CLOSE_HOWS: [&str; 4] = ["graceful", "abort", "peer_reset", "timeout"];

fn how_label(how: &str) -> &'static str {
    CLOSE_HOWS
        .iter()
        .find(|h| **h == how)
        .copied()
        .unwrap_or(OTHER)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DurationLabels {
    comm: String,
    container: String,
    port: String,
}

/// `comm`, then `container` when not empty.
fn encode_comm_container(
    comm: &str,
    container: &str,
    encoder: &mut LabelSetEncoder,
) -> Result<(), std::fmt::Error> {
    ("comm", comm).encode(encoder.encode_label())?;
    if !container.is_empty() {
        ("container", container).encode(encoder.encode_label())?;
    }
    Ok(())
}

impl EncodeLabelSet for DurationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_comm_container(&self.comm, &self.container, encoder)?;
        ("port", self.port.as_str()).encode(encoder.encode_label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct HolderLabels {
    comm: String,
    container: String,
}

impl EncodeLabelSet for HolderLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        encode_comm_container(&self.comm, &self.container, encoder)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HowLabels {
    how: &'static str,
}

fn new_duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// (comm, container) -> ports with a duration series of their own.
type SeriesPorts = HashMap<(String, String), HashSet<u16>>;

/// The metrics, cheap to update from the event loop and shared with the
/// HTTP server through an `Arc`.
pub struct Metrics {
    registry: Registry,
    duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    sockets: Gauge,
    stuck: Gauge,
    holder_stuck: Family<HolderLabels, Gauge>,
    entered: Counter,
    closed: Family<HowLabels, Counter>,
    lost: Counter,
    evictions: Counter,
    /// (comm, container) -> ports that have their own duration series.
    series: Mutex<(usize, SeriesPorts)>,
    /// Label sets of `holder_stuck` set at the last checkpoint.
    holders_shown: Mutex<HashSet<HolderLabels>>,
    /// Container ids of closers, by pid.
    containers: Mutex<crate::cgroup::ContainerCache>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("close_wait");
        let duration: Family<DurationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(new_duration_histogram);
        let sockets = Gauge::default();
        let stuck = Gauge::default();
        let holder_stuck = Family::<HolderLabels, Gauge>::default();
        let entered = Counter::default();
        let closed = Family::<HowLabels, Counter>::default();
        let lost = Counter::default();
        let evictions = Counter::default();
        registry.register_with_unit(
            "duration",
            "Time sockets spent in CLOSE_WAIT before being closed",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register("sockets", "Sockets in CLOSE_WAIT now", sockets.clone());
        registry.register(
            "stuck_sockets",
            "Sockets in CLOSE_WAIT for longer than the stuck threshold",
            stuck.clone(),
        );
        registry.register(
            "holder_stuck_sockets",
            "Stuck sockets by the comm and container of their holder (of the listener for a socket never accepted)",
            holder_stuck.clone(),
        );
        registry.register(
            "entered",
            "Sockets that entered CLOSE_WAIT",
            entered.clone(),
        );
        registry.register(
            "closed",
            "Sockets that left CLOSE_WAIT, by how they were closed",
            closed.clone(),
        );
        registry.register(
            "lost_events",
            "Events the kernel side could not deliver (ring buffer full)",
            lost.clone(),
        );
        registry.register(
            "map_evictions",
            "Tracked sockets evicted from a full kernel map",
            evictions.clone(),
        );
        for how in CLOSE_HOWS {
            // Export zeros from the start so rate() works on the first event.
            let _ = closed.get_or_create(&HowLabels { how });
        }
        Metrics {
            registry,
            duration,
            sockets,
            stuck,
            holder_stuck,
            entered,
            closed,
            lost,
            evictions,
            series: Mutex::new((0, HashMap::new())),
            holders_shown: Mutex::new(HashSet::new()),
            containers: Mutex::new(Default::default()),
        }
    }

    /// Labels for `(comm, container, port)`, folded into `other` once
    /// [`MAX_DURATION_SERIES`] label sets exist.
    fn labels(&self, comm: &str, container: &str, port: u16) -> DurationLabels {
        let comm = if comm.is_empty() { "?" } else { comm };
        let mut guard = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let (count, pairs) = &mut *guard;
        let key = (comm.to_owned(), container.to_owned());
        let known = pairs.get(&key).is_some_and(|p| p.contains(&port));
        if !known {
            if *count >= MAX_DURATION_SERIES {
                return DurationLabels {
                    comm: OTHER.to_owned(),
                    container: String::new(),
                    port: OTHER.to_owned(),
                };
            }
            *count += 1;
            pairs.entry(key).or_default().insert(port);
        }
        DurationLabels {
            comm: comm.to_owned(),
            container: container.to_owned(),
            port: port.to_string(),
        }
    }

    /// The short container id of process `pid` for the `container` label
    /// (empty outside containers), cached per process.
    pub fn container_of(&self, pid: u32) -> String {
        if pid == 0 {
            return String::new();
        }
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .short_id(pid)
    }

    /// Records a closed episode of `comm` (in `container`, `""` for none)
    /// on service port `port` that spent `secs` in CLOSE_WAIT (`None` when
    /// its start was not seen: counted, not observed) and ended `how` (one
    /// of [`CLOSE_HOWS`]).
    pub fn observe_closed(
        &self,
        comm: &str,
        container: &str,
        port: u16,
        secs: Option<f64>,
        how: &str,
    ) {
        if let Some(secs) = secs {
            self.duration
                .get_or_create(&self.labels(comm, container, port))
                .observe(secs);
        }
        self.closed
            .get_or_create(&HowLabels {
                how: how_label(how),
            })
            .inc();
    }

    /// Sets the sockets in CLOSE_WAIT now, and how many of them are stuck.
    pub fn set_gauges(&self, now: u64, stuck: u64) {
        self.sockets.set(i64::try_from(now).unwrap_or(i64::MAX));
        self.stuck.set(i64::try_from(stuck).unwrap_or(i64::MAX));
    }

    /// Replaces `close_wait_holder_stuck_sockets` with the stuck sockets of
    /// this checkpoint, counted by (comm, container) of their holder; past
    /// [`MAX_HOLDER_SERIES`] holders the rest go under `comm="other"`.
    pub fn set_stuck_holders(&self, stuck: &[crate::model::StuckSocket]) {
        let mut counts: HashMap<HolderLabels, i64> = HashMap::new();
        for s in stuck {
            let comm = s
                .holders
                .first()
                .or_else(|| s.listener.as_ref().and_then(|l| l.holders.first()))
                .map(|h| h.comm.as_str())
                .filter(|c| !c.is_empty())
                .unwrap_or("?");
            let container = s
                .container
                .as_ref()
                .map(|c| c.short_id().to_owned())
                .unwrap_or_default();
            let mut key = HolderLabels {
                comm: comm.to_owned(),
                container,
            };
            if !counts.contains_key(&key) && counts.len() >= MAX_HOLDER_SERIES {
                key = HolderLabels {
                    comm: OTHER.to_owned(),
                    container: String::new(),
                };
            }
            *counts.entry(key).or_default() += 1;
        }
        // Set the new values first, then drop the series of holders gone: a
        // scrape in between never sees a holder that is still there vanish.
        let mut shown = self.holders_shown.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, n) in &counts {
            self.holder_stuck.get_or_create(labels).set(*n);
        }
        for gone in shown.iter().filter(|l| !counts.contains_key(*l)) {
            self.holder_stuck.remove(gone);
        }
        *shown = counts.into_keys().collect();
    }

    /// One more socket entered CLOSE_WAIT.
    pub fn inc_entered(&self) {
        self.entered.inc();
    }

    /// Sets the lost-event total read from the kernel counters. A counter
    /// never goes down: a smaller value is ignored.
    pub fn set_lost(&self, n: u64) {
        self.lost.inner().fetch_max(n, Ordering::Relaxed);
    }

    /// Sets the map-eviction total read from the kernel counters (never
    /// goes down, like [`set_lost`](Self::set_lost)).
    pub fn set_evictions(&self, n: u64) {
        self.evictions.inner().fetch_max(n, Ordering::Relaxed);
    }

    /// The exposition text, as served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String fails only if a label's encoder does: the
        // text is then cut short, and said at -v.
        crate::logged::ok(encode(&mut out, &self.registry), || {
            "encoding the metrics".to_string()
        });
        out
    }
}

/// Parses the `--metrics` listen address: `PORT` or `:PORT` listen on
/// 127.0.0.1 only; `IP:PORT` and `[IPv6]:PORT` as given (e.g. `0.0.0.0:9100`
/// to expose it); `localhost:PORT` is 127.0.0.1.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, PrometheusError> {
    let err = |reason| PrometheusError::ListenAddr {
        input: s.to_owned(),
        reason,
    };
    let t = s.trim();
    let bare = t.strip_prefix(':').unwrap_or(t);
    let bare = bare.strip_prefix("localhost:").unwrap_or(bare);
    let addr = if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
        let port = bare.parse::<u16>().map_err(|_| err("port out of range"))?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        t.parse::<SocketAddr>()
            .map_err(|_| err("not an address and port"))?
    };
    if addr.port() == 0 {
        return Err(err("port 0 would pick a random port"));
    }
    Ok(addr)
}

/// Binds the metrics listener (before anything is attached, so a busy port
/// fails early).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, PrometheusError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| PrometheusError::Bind { addr, source })
}

/// Binds `addr` and serves `/metrics` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), PrometheusError> {
    let listener = bind(addr).await?;
    serve_on(listener, metrics).await;
    Ok(())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn handle(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            respond(StatusCode::OK, CONTENT_TYPE_OPENMETRICS, metrics.encode())
        }
        (&Method::GET | &Method::HEAD, "/") => respond(
            StatusCode::OK,
            TEXT,
            "close-wait exporter: metrics are at /metrics\n".to_owned(),
        ),
        (_, "/metrics" | "/") => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET is supported\n".to_owned(),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found; try /metrics\n".to_owned(),
        ),
    }
}

/// Serves `/metrics` on an already bound listener, forever. Accept errors
/// (such as running out of file descriptors) are logged and retried.
pub async fn serve_on(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                log::warn!("metrics server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            log::debug!("metrics server: too many connections, dropping {peer}");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = handle(&metrics, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("metrics server: connection from {peer}: {e}"),
                Err(_) => log::debug!("metrics server: connection from {peer} timed out"),
            }
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .expect("response within 10 s")
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn has_line(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    #[tokio::test]
    async fn serves_metrics_over_http() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::new());
        let server = tokio::spawn(serve_on(listener, metrics.clone()));

        metrics.inc_entered();
        metrics.inc_entered();
        metrics.inc_entered();
        metrics.observe_closed("nginx", "", 8080, Some(0.002), "graceful");
        metrics.observe_closed("nginx", "", 8080, Some(120.0), "abort");
        metrics.observe_closed("my \"app\"", "", 9000, Some(0.5), "peer_reset");
        // start not seen: counted, not observed
        metrics.observe_closed("nginx", "", 8080, None, "graceful");
        metrics.observe_closed("nginx", "", 8080, None, "bogus");
        metrics.set_gauges(4, 1);
        metrics.set_lost(7);
        metrics.set_lost(3); // never goes down
        metrics.set_evictions(2);

        let resp = get(addr, "/metrics").await;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        has_line(body, "# TYPE close_wait_duration_seconds histogram");
        has_line(body, "# UNIT close_wait_duration_seconds seconds");
        has_line(
            body,
            "close_wait_duration_seconds_bucket{le=\"0.001\",comm=\"nginx\",port=\"8080\"} 0",
        );
        has_line(
            body,
            "close_wait_duration_seconds_bucket{le=\"0.005\",comm=\"nginx\",port=\"8080\"} 1",
        );
        has_line(
            body,
            "close_wait_duration_seconds_bucket{le=\"60.0\",comm=\"nginx\",port=\"8080\"} 1",
        );
        has_line(
            body,
            "close_wait_duration_seconds_bucket{le=\"300.0\",comm=\"nginx\",port=\"8080\"} 2",
        );
        has_line(
            body,
            "close_wait_duration_seconds_bucket{le=\"+Inf\",comm=\"nginx\",port=\"8080\"} 2",
        );
        has_line(
            body,
            "close_wait_duration_seconds_count{comm=\"nginx\",port=\"8080\"} 2",
        );
        has_line(
            body,
            "close_wait_duration_seconds_sum{comm=\"nginx\",port=\"8080\"} 120.002",
        );
        has_line(
            body,
            "close_wait_duration_seconds_count{comm=\"my \\\"app\\\"\",port=\"9000\"} 1",
        );
        has_line(body, "close_wait_sockets 4");
        has_line(body, "close_wait_stuck_sockets 1");
        has_line(body, "close_wait_entered_total 3");
        has_line(body, "close_wait_closed_total{how=\"graceful\"} 2");
        has_line(body, "close_wait_closed_total{how=\"other\"} 1");
        has_line(body, "close_wait_closed_total{how=\"abort\"} 1");
        has_line(body, "close_wait_closed_total{how=\"peer_reset\"} 1");
        has_line(body, "close_wait_lost_events_total 7");
        has_line(body, "close_wait_map_evictions_total 2");
        assert!(body.ends_with("# EOF\n"), "{body}");

        let resp = get(addr, "/nope").await;
        assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");

        server.abort();
    }

    #[test]
    fn closed_counters_start_at_zero() {
        let body = Metrics::new().encode();
        for how in CLOSE_HOWS {
            has_line(
                &body,
                &format!("close_wait_closed_total{{how=\"{how}\"}} 0"),
            );
        }
        has_line(&body, "close_wait_lost_events_total 0");
    }

    #[test]
    fn duration_series_are_bounded() {
        let m = Metrics::new();
        for i in 0..(MAX_DURATION_SERIES as u16 + 50) {
            m.observe_closed(&format!("c{}", i % 7), "", 1000 + i, Some(1.0), "graceful");
        }
        // a known pair keeps its labels after the limit
        m.observe_closed("c0", "", 1000, Some(1.0), "graceful");
        let body = m.encode();
        let series = body
            .lines()
            .filter(|l| l.starts_with("close_wait_duration_seconds_count{"))
            .count();
        assert_eq!(series, MAX_DURATION_SERIES + 1, "{body}");
        has_line(
            &body,
            "close_wait_duration_seconds_count{comm=\"other\",port=\"other\"} 50",
        );
        has_line(
            &body,
            "close_wait_duration_seconds_count{comm=\"c0\",port=\"1000\"} 2",
        );
    }

    #[test]
    fn container_label_only_inside_containers() {
        let m = Metrics::new();
        m.observe_closed("nginx", "4f9c2b7d1e3a", 80, Some(0.5), "graceful");
        m.observe_closed("nginx", "", 80, Some(0.5), "graceful");
        let body = m.encode();
        has_line(
            &body,
            "close_wait_duration_seconds_count{comm=\"nginx\",container=\"4f9c2b7d1e3a\",port=\"80\"} 1",
        );
        has_line(
            &body,
            "close_wait_duration_seconds_count{comm=\"nginx\",port=\"80\"} 1",
        );
        assert_eq!(m.container_of(0), "");
        assert_eq!(m.container_of(std::process::id()).len() % 12, 0);
    }

    #[test]
    fn holder_stuck_sockets_by_comm_and_container() {
        use crate::model::Origin;
        use crate::report::tests_support::stuck;
        let holder = |comm: &str| crate::sockets::Holder {
            pid: 7,
            fd: 3,
            comm: comm.into(),
            cmdline: String::new(),
        };
        let mut a = stuck("127.0.0.1:9099", Origin::Accept);
        a.holders = vec![holder("python3")];
        a.container = crate::cgroup::container_of(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_4a1b_9c2d_3e4f5a6b7c8d.slice/cri-containerd-4f9c2b7d1e3a5c6b8d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e.scope",
        );
        let host = {
            let mut s = stuck("127.0.0.1:9098", Origin::Accept);
            s.holders = vec![holder("python3")];
            s
        };
        let m = Metrics::new();
        m.set_stuck_holders(&[a.clone(), a.clone(), host.clone()]);
        let body = m.encode();
        has_line(&body, "# TYPE close_wait_holder_stuck_sockets gauge");
        has_line(
            &body,
            "close_wait_holder_stuck_sockets{comm=\"python3\",container=\"4f9c2b7d1e3a\"} 2",
        );
        has_line(&body, "close_wait_holder_stuck_sockets{comm=\"python3\"} 1");
        // a holder gone at the next checkpoint leaves no series behind
        m.set_stuck_holders(std::slice::from_ref(&host));
        let body = m.encode();
        assert!(!body.contains("container=\"4f9c2b7d1e3a\""), "{body}");
        has_line(&body, "close_wait_holder_stuck_sockets{comm=\"python3\"} 1");
        // bounded: a thousand distinct holders make at most MAX + 1 series
        let many: Vec<_> = (0..1000)
            .map(|i| {
                let mut s = host.clone();
                s.holders = vec![holder(&format!("w{i}"))];
                s
            })
            .collect();
        m.set_stuck_holders(&many);
        let body = m.encode();
        let series = body
            .lines()
            .filter(|l| l.starts_with("close_wait_holder_stuck_sockets{"))
            .count();
        assert_eq!(series, MAX_HOLDER_SERIES + 1, "{body}");
        has_line(
            &body,
            &format!(
                "close_wait_holder_stuck_sockets{{comm=\"other\"}} {}",
                1000 - MAX_HOLDER_SERIES
            ),
        );
    }

    #[test]
    fn listen_addresses() {
        let lo = |p: u16| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p);
        assert_eq!(parse_listen_addr("9100").unwrap(), lo(9100));
        assert_eq!(parse_listen_addr(":9100").unwrap(), lo(9100));
        assert_eq!(parse_listen_addr("localhost:9100").unwrap(), lo(9100));
        assert_eq!(
            parse_listen_addr("0.0.0.0:9100").unwrap(),
            "0.0.0.0:9100".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_listen_addr("[::1]:9100").unwrap(),
            "[::1]:9100".parse::<SocketAddr>().unwrap()
        );
        for bad in ["", ":", "99999", "abc", "1.2.3.4", "0", "host:80"] {
            let e = parse_listen_addr(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("'{bad}'")), "{e}");
        }
    }
}
