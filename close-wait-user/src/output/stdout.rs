//! stdout and stderr that never block the event loop and never panic.
//!
//! `--events` lines go through a bounded buffer to a writer thread: when
//! the reader is too slow the buffer fills and further lines are dropped
//! and counted, never waited for. A closed reader (EPIPE, or a pipe whose
//! read end is gone) is noticed by the writer and reported to the event
//! loop, which then stops the run like SIGINT. The final summary goes the
//! same way with a bounded patience; if stdout cannot take it, the caller
//! prints it on stderr instead, so it is never lost.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Bytes of `--events` output waiting for the writer at most.
pub const DEFAULT_CAPACITY: usize = 256 * 1024;

/// How often an idle writer checks that its reader is still there.
const READER_CHECK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Vec<u8>>,
    bytes: usize,
    dropped_lines: u64,
    /// Why stdout cannot be written any more.
    closed: Option<String>,
    /// The writer has a chunk in hand.
    busy: bool,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
    /// Bytes written so far (progress, for the final patience).
    written: AtomicU64,
    /// When the writer last made progress (took a chunk or finished a
    /// write), in ms since `epoch`: a writer stuck in write() for longer
    /// than the final patience is not waited for again.
    progress_ms: AtomicU64,
    epoch: Instant,
    gone: tokio::sync::Notify,
    capacity: usize,
    fd: i32,
}

impl Shared {
    fn progressed(&self) {
        self.progress_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last_progress(&self) -> Instant {
        self.epoch + Duration::from_millis(self.progress_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, why: String) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(why);
        }
        q.chunks.clear();
        q.bytes = 0;
        drop(q);
        self.cv.notify_all();
        self.gone.notify_one();
    }
}

/// The writer side of stdout for one run.
pub struct Stdout {
    shared: Arc<Shared>,
}

/// Whether a pipe or terminal on `fd` has lost its reader (POLLERR/POLLHUP).
fn reader_gone(fd: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Writes all of `buf` to the shared fd, counting progress.
fn write_all_fd(shared: &Shared, buf: &[u8]) -> io::Result<()> {
    let fd = shared.fd;
    let mut rest = buf;
    while !rest.is_empty() {
        // SAFETY: writing from a valid buffer to a descriptor we were given.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        shared.written.fetch_add(n as u64, Ordering::Relaxed);
        shared.progressed();
        rest = &rest[n..];
    }
    Ok(())
}

fn writer(shared: Arc<Shared>, watch_reader: bool) {
    loop {
        let chunk = {
            let mut q = shared.lock();
            loop {
                if q.closed.is_some() {
                    return;
                }
                if let Some(c) = q.chunks.pop_front() {
                    q.bytes -= c.len();
                    q.busy = true;
                    shared.progressed();
                    break c;
                }
                if watch_reader {
                    let (g, _) = shared
                        .cv
                        .wait_timeout(q, READER_CHECK)
                        .unwrap_or_else(|e| e.into_inner());
                    q = g;
                    if q.chunks.is_empty() && q.closed.is_none() && reader_gone(shared.fd) {
                        drop(q);
                        shared.close("the reader of stdout went away".to_owned());
                        return;
                    }
                } else {
                    q = shared.cv.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            }
        };
        let r = write_all_fd(&shared, &chunk);
        shared.lock().busy = false;
        shared.cv.notify_all();
        if let Err(e) = r {
            let why = if e.kind() == io::ErrorKind::BrokenPipe {
                "stdout was closed (EPIPE)".to_owned()
            } else {
                format!("cannot write to stdout: {e}")
            };
            shared.close(why);
            return;
        }
    }
}

impl Stdout {
    /// Starts the writer thread. With `watch_reader`, an idle writer also
    /// notices a reader that went away without a write failing.
    pub fn spawn(capacity: usize, watch_reader: bool) -> io::Result<Stdout> {
        Stdout::spawn_on(1, capacity, watch_reader)
    }

    /// [`spawn`](Self::spawn) writing to `fd` instead of fd 1; `fd` must
    /// stay open for as long as the process lives.
    pub fn spawn_on(fd: i32, capacity: usize, watch_reader: bool) -> io::Result<Stdout> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
            written: AtomicU64::new(0),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            gone: tokio::sync::Notify::new(),
            capacity,
            fd,
        });
        let s2 = shared.clone();
        std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || writer(s2, watch_reader))?;
        Ok(Stdout { shared })
    }

    /// Queues one line (a newline is added); dropped and counted when the
    /// buffer is full. Returns whether it was queued.
    pub fn line(&self, text: &str) -> bool {
        let mut q = self.shared.lock();
        if q.closed.is_some() {
            return false;
        }
        if q.bytes + text.len() + 1 > self.shared.capacity {
            q.dropped_lines += 1;
            return false;
        }
        let mut b = Vec::with_capacity(text.len() + 1);
        b.extend_from_slice(text.as_bytes());
        b.push(b'\n');
        q.bytes += b.len();
        q.chunks.push_back(b);
        drop(q);
        self.shared.cv.notify_all();
        true
    }

    /// Lines dropped because the reader was too slow.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.lock().dropped_lines
    }

    /// Why stdout cannot be written any more, if so.
    pub fn closed(&self) -> Option<String> {
        self.shared.lock().closed.clone()
    }

    /// Resolves once stdout cannot be written any more.
    pub async fn gone(&self) {
        loop {
            // Register before checking, so a close in between is not missed.
            let n = self.shared.gone.notified();
            if self.closed().is_some() {
                return;
            }
            n.await;
        }
    }

    /// Writes `text` after everything queued, waiting while the reader
    /// makes progress, and giving up after `patience` without any. Returns
    /// why it could not be written, if so.
    pub fn finish(&self, text: &str, patience: Duration) -> Result<(), String> {
        let mut q = self.shared.lock();
        if let Some(why) = &q.closed {
            return Err(why.clone());
        }
        q.bytes += text.len();
        q.chunks.push_back(text.as_bytes().to_vec());
        self.shared.cv.notify_all();
        let mut last = self.shared.written.load(Ordering::Relaxed);
        // A writer already stuck in one write() has used its patience.
        let mut since = if q.busy {
            self.shared.last_progress()
        } else {
            Instant::now()
        };
        loop {
            if let Some(why) = &q.closed {
                return Err(why.clone());
            }
            if q.chunks.is_empty() && !q.busy {
                return Ok(());
            }
            let now = self.shared.written.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            }
            let left = patience.saturating_sub(since.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "stdout is not being read (nothing written for {} ms)",
                    patience.as_millis()
                ));
            }
            let (g, _) = self
                .shared
                .cv
                .wait_timeout(q, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner());
            q = g;
        }
    }
}

/// Writes `text` to stdout, blocking, without panicking on a closed pipe.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush())
}

/// Prints the report of `snapshot` or `report`. A closed stdout
/// (`| head -1`) is not an error (said at `-vv`); any other failure is
/// said on stderr, since the report is lost.
pub fn print_report(text: &str) {
    match print(text) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            log::debug!("stdout closed before the report was printed: {e}")
        }
        Err(e) => log::warn!("cannot print the report on stdout: {e}"),
    }
}

/// Writes one line to stderr; a closed or broken stderr is ignored rather
/// than a panic (`eprintln!` panics on EPIPE).
pub fn say(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(line.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

    fn pipe() -> (std::fs::File, OwnedFd) {
        let mut fds = [0i32; 2];
        // SAFETY: room for two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both were just created and are owned here only.
        unsafe {
            (
                std::fs::File::from_raw_fd(fds[0]),
                OwnedFd::from_raw_fd(fds[1]),
            )
        }
    }

    #[test]
    fn lines_and_summary_arrive_in_order() {
        let (mut r, w) = pipe();
        let out = Stdout::spawn_on(w.into_raw_fd(), 1024, false).unwrap();
        assert!(out.line("one"));
        assert!(out.line("two"));
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let mut buf = [0u8; 64];
            while !s.ends_with("summary\n") {
                let n = r.read(&mut buf).unwrap();
                s.push_str(std::str::from_utf8(&buf[..n]).unwrap());
            }
            s
        });
        out.finish("summary\n", Duration::from_secs(5)).unwrap();
        assert_eq!(reader.join().unwrap(), "one\ntwo\nsummary\n");
        assert_eq!(out.dropped_lines(), 0);
    }

    #[test]
    fn a_reader_that_never_reads_drops_lines_and_the_summary_gives_up() {
        let (r, w) = pipe();
        // SAFETY: shrinking our own pipe.
        unsafe { libc::fcntl(r.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
        let out = Stdout::spawn_on(w.into_raw_fd(), 8192, false).unwrap();
        let line = "x".repeat(99);
        let started = Instant::now();
        let queued = (0..1000).filter(|_| out.line(&line)).count();
        assert!(started.elapsed() < Duration::from_secs(1), "line() blocked");
        assert!((8192 / 100..1000).contains(&queued), "queued {queued}");
        assert_eq!(out.dropped_lines(), 1000 - queued as u64);
        let t = Instant::now();
        let e = out
            .finish("summary\n", Duration::from_millis(200))
            .unwrap_err();
        assert!(e.contains("not being read"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Stuck in write() for longer than the patience already: the next
        // summary gives up at once rather than waiting again.
        std::thread::sleep(Duration::from_millis(250));
        let t = Instant::now();
        assert!(out.finish("again\n", Duration::from_millis(200)).is_err());
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        drop(r);
    }

    #[test]
    fn a_closed_reader_is_noticed_without_a_write() {
        let (r, w) = pipe();
        let out = Stdout::spawn_on(w.into_raw_fd(), 1024, true).unwrap();
        drop(r);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), out.gone())
                .await
                .expect("closed reader noticed within 5 s");
        });
        assert!(out.closed().unwrap().contains("went away"));
        assert!(!out.line("late"));
        assert!(out.finish("summary", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn epipe_on_write_closes_stdout() {
        let (r, w) = pipe();
        let out = Stdout::spawn_on(w.into_raw_fd(), 1024, false).unwrap();
        drop(r);
        // A child forked by another test may hold the read end for a moment
        // (until its exec closes it): keep writing until EPIPE, bounded.
        let end = Instant::now() + Duration::from_secs(5);
        while out.closed().is_none() && Instant::now() < end {
            out.line("x");
            std::thread::sleep(Duration::from_millis(10));
        }
        let why = out.closed().expect("EPIPE noticed within 5 s");
        assert!(why.contains("EPIPE"), "{why}");
        assert!(out.finish("summary", Duration::from_secs(1)).is_err());
    }
}
