//! The programs `close-wait demo` runs, each in a process of its own: the
//! binary re-executes itself as `close-wait demo-child ROLE ...`, so the demo
//! needs nothing but the installed binary (no scripts, no interpreter).
//!
//! Every role talks only to 127.0.0.1, names its process after itself
//! (`/proc/PID/comm`, which is what the report prints), prints one line per
//! step on stdout for the demo to read, and dies with its parent
//! (PR_SET_PDEATHSIG, set by the demo before exec).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    thread,
    time::Duration,
};

/// A role and its arguments, as the demo passes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Well-behaved server: answers, closes when the client leaves, closes
    /// idle connections after a keep-alive timeout.
    GoodServer,
    /// Client that never closes: a connection pool that keeps every
    /// connection it opened, also those the server has closed.
    PoolClient { port: u16, connections: u32 },
    /// Server whose workers stop reading: each blocks writing a log line to
    /// a pipe nobody drains before it reads the request.
    StalledServer,
    /// Listener that never accepts.
    BacklogServer { backlog: i32 },
    /// The clients of the three servers: they send a request and close.
    Load {
        good: u16,
        stalled: u16,
        backlog: u16,
        good_requests: u32,
        stalled_requests: u32,
        backlog_requests: u32,
    },
}

/// Process names (15 bytes at most: the kernel's comm).
pub const GOOD_SERVER: &str = "demo-api";
pub const POOL_CLIENT: &str = "demo-pool";
pub const STALLED_SERVER: &str = "demo-uploads";
pub const BACKLOG_SERVER: &str = "demo-backlog";
pub const LOAD: &str = "demo-load";

/// How long the good server keeps an idle connection open.
pub const KEEPALIVE: Duration = Duration::from_millis(300);

impl Role {
    pub fn comm(&self) -> &'static str {
        match self {
            Role::GoodServer => GOOD_SERVER,
            Role::PoolClient { .. } => POOL_CLIENT,
            Role::StalledServer => STALLED_SERVER,
            Role::BacklogServer { .. } => BACKLOG_SERVER,
            Role::Load { .. } => LOAD,
        }
    }

    /// The command-line words after `demo-child`.
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![self.comm().to_string()];
        match self {
            Role::GoodServer | Role::StalledServer => {}
            Role::PoolClient { port, connections } => {
                v.extend([port.to_string(), connections.to_string()])
            }
            Role::BacklogServer { backlog } => v.push(backlog.to_string()),
            Role::Load {
                good,
                stalled,
                backlog,
                good_requests,
                stalled_requests,
                backlog_requests,
            } => v.extend(
                [
                    *good as u32,
                    *stalled as u32,
                    *backlog as u32,
                    *good_requests,
                    *stalled_requests,
                    *backlog_requests,
                ]
                .map(|n| n.to_string()),
            ),
        }
        v
    }

    pub fn parse(words: &[String]) -> Result<Role, String> {
        let n = |i: usize| -> Result<u32, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("demo-child: argument {i} missing or not a number"))
        };
        let port = |i: usize| -> Result<u16, String> {
            u16::try_from(n(i)?).map_err(|_| format!("demo-child: argument {i} is not a port"))
        };
        match words.first().map(String::as_str) {
            Some(GOOD_SERVER) => Ok(Role::GoodServer),
            Some(POOL_CLIENT) => Ok(Role::PoolClient {
                port: port(1)?,
                connections: n(2)?,
            }),
            Some(STALLED_SERVER) => Ok(Role::StalledServer),
            Some(BACKLOG_SERVER) => Ok(Role::BacklogServer {
                backlog: n(1)? as i32,
            }),
            Some(LOAD) => Ok(Role::Load {
                good: port(1)?,
                stalled: port(2)?,
                backlog: port(3)?,
                good_requests: n(4)?,
                stalled_requests: n(5)?,
                backlog_requests: n(6)?,
            }),
            other => Err(format!("demo-child: unknown role {other:?}")),
        }
    }
}

fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Waits for the demo's `go` line on stdin (it comes once the tracer is
/// attached, so that connect() and accept() are traced).
fn wait_for_go() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn listen_loopback() -> std::io::Result<TcpListener> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    say(&format!("listening {}", l.local_addr()?.port()));
    Ok(l)
}

fn sleep_forever() -> ! {
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs a role; never returns for the servers and the pool client (the
/// demo kills them).
pub fn run(role: &Role) -> std::io::Result<()> {
    set_comm(role.comm());
    match role {
        Role::GoodServer => good_server(),
        Role::PoolClient { port, connections } => pool_client(*port, *connections),
        Role::StalledServer => stalled_server(),
        Role::BacklogServer { backlog } => backlog_server(*backlog),
        Role::Load {
            good,
            stalled,
            backlog,
            good_requests,
            stalled_requests,
            backlog_requests,
        } => load(
            (*good, *good_requests),
            (*stalled, *stalled_requests),
            (*backlog, *backlog_requests),
        ),
    }
}

fn good_server() -> std::io::Result<()> {
    let l = listen_loopback()?;
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        thread::spawn(move || {
            let mut req = [0u8; 256];
            if s.read(&mut req).unwrap_or(0) == 0 {
                return;
            }
            let _ = s.write_all(b"ok\n");
            // Keep-alive: wait for the next request or the client's EOF,
            // and close an idle connection after KEEPALIVE. Either way the
            // socket is closed.
            let _ = s.set_read_timeout(Some(KEEPALIVE));
            while let Ok(n) = s.read(&mut req) {
                if n == 0 {
                    break;
                }
            }
        });
    }
    Ok(())
}

fn pool_client(port: u16, connections: u32) -> std::io::Result<()> {
    wait_for_go();
    let mut pool = Vec::new();
    for _ in 0..connections {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.write_all(b"GET /price HTTP/1.1\r\n\r\n")?;
        let mut reply = [0u8; 3];
        s.read_exact(&mut reply)?;
        // Back into the pool, never checked again, never closed.
        pool.push(s);
    }
    say(&format!("holding {}", pool.len()));
    sleep_forever()
}

/// A pipe whose buffer is full and that nobody reads: a write to it blocks.
fn full_pipe() -> std::io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let chunk = [b'.'; 4096];
    loop {
        // SAFETY: writing from a live buffer to our own pipe.
        let n = unsafe { libc::write(fds[1], chunk.as_ptr().cast(), chunk.len()) };
        if n < 0 {
            break;
        }
    }
    // Back to blocking, so that the next write waits for a reader.
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, 0) };
    Ok((fds[0], fds[1]))
}

fn stalled_server() -> std::io::Result<()> {
    let (_log_reader, log_writer) = full_pipe()?;
    let l = listen_loopback()?;
    for conn in l.incoming() {
        let Ok(mut s) = conn else { continue };
        thread::Builder::new()
            .name("demo-worker".into())
            .spawn(move || {
                // Log the request before handling it: the log pipe is full,
                // so the worker never gets to read it.
                let line = b"request accepted\n";
                // SAFETY: writing from a live buffer to our own pipe.
                unsafe { libc::write(log_writer, line.as_ptr().cast(), line.len()) };
                let mut req = Vec::new();
                let _ = s.read_to_end(&mut req);
            })?;
    }
    Ok(())
}

fn backlog_server(backlog: i32) -> std::io::Result<()> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    // listen() again only sets the backlog of a listening socket.
    // SAFETY: listen on our own socket.
    if unsafe { libc::listen(l.as_raw_fd(), backlog) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    say(&format!("listening {}", l.local_addr()?.port()));
    // Never accepts: a startup that never finished, a thread that died.
    sleep_forever()
}

fn request_and_close(port: u16, body: &[u8], wait_reply: bool) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(body)?;
    if wait_reply {
        let mut r = BufReader::new(&s);
        let mut line = String::new();
        r.read_line(&mut line)?;
    }
    s.shutdown(Shutdown::Both)?;
    Ok(())
}

fn load(good: (u16, u32), stalled: (u16, u32), backlog: (u16, u32)) -> std::io::Result<()> {
    wait_for_go();
    for _ in 0..good.1 {
        request_and_close(good.0, b"GET /health HTTP/1.1\r\n\r\n", true)?;
    }
    for _ in 0..stalled.1 {
        request_and_close(
            stalled.0,
            b"POST /upload HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            false,
        )?;
    }
    for _ in 0..backlog.1 {
        request_and_close(backlog.0, b"GET / HTTP/1.1\r\n\r\n", false)?;
    }
    say("done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_arguments() {
        for r in [
            Role::GoodServer,
            Role::PoolClient {
                port: 8080,
                connections: 3,
            },
            Role::StalledServer,
            Role::BacklogServer { backlog: 2 },
            Role::Load {
                good: 1,
                stalled: 2,
                backlog: 3,
                good_requests: 4,
                stalled_requests: 5,
                backlog_requests: 6,
            },
        ] {
            assert_eq!(Role::parse(&r.to_args()), Ok(r.clone()));
            assert!(r.comm().len() <= 15, "{} too long for comm", r.comm());
        }
        assert!(Role::parse(&["nope".into()]).is_err());
        assert!(Role::parse(&[POOL_CLIENT.into(), "x".into()]).is_err());
    }
}
