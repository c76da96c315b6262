//! Why a socket is stuck, drawn only from what was measured. Pure.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Diagnosis {
    /// Entered CLOSE_WAIT while still in the listener's accept queue.
    Unaccepted,
    /// The process that created it closed it; another process still holds it.
    HeldElsewhere,
    /// Data arrived that the application never read.
    NeverRead,
    /// The request was read, but the holder's threads are blocked in a
    /// call on other work (an upstream, a full pipe): the handler has not
    /// got as far as close().
    HandlerBlocked,
    /// Nothing unread, descriptor still open: a forgotten close() or a pool
    /// holding dead connections.
    ReadNotClosed,
    /// Closed, but only after more than the threshold.
    ClosedLate,
}

impl Diagnosis {
    pub fn as_str(self) -> &'static str {
        match self {
            Diagnosis::Unaccepted => "unaccepted",
            Diagnosis::HeldElsewhere => "held-elsewhere",
            Diagnosis::NeverRead => "never-read",
            Diagnosis::HandlerBlocked => "handler-blocked",
            Diagnosis::ReadNotClosed => "read-not-closed",
            Diagnosis::ClosedLate => "closed-late",
        }
    }
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one stuck socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// No file refers to the socket (inode 0): it was never accepted.
    pub unaccepted: bool,
    /// Data bytes received and never read.
    pub unread_bytes: u64,
    /// The owner has not even read the EOF.
    pub eof_unread: bool,
    /// The process that created the descriptor called close() on it, or no
    /// longer holds it, while others still do.
    pub creator_let_go: bool,
    /// Processes holding the socket.
    pub holders: usize,
    /// Other established connections from this host to the same peer IP,
    /// or the peer's own listener when it runs on this host (None when not
    /// checked).
    pub peer_live_connections: Option<usize>,
    /// For an accepted socket: what its holder's threads are blocked in,
    /// when they are blocked on other work (None when they are idle).
    pub blocked: Option<String>,
    /// For an unaccepted socket: the listener's holders are busy on other
    /// work, so it is not that the application never calls accept().
    pub listener_holders_busy: bool,
}

pub fn diagnose(e: &Evidence) -> Diagnosis {
    if e.unaccepted {
        Diagnosis::Unaccepted
    } else if e.creator_let_go && e.holders > 0 {
        Diagnosis::HeldElsewhere
    } else if e.unread_bytes > 0 {
        Diagnosis::NeverRead
    } else if e.blocked.is_some() {
        Diagnosis::HandlerBlocked
    } else {
        Diagnosis::ReadNotClosed
    }
}

/// One-line reason for a single socket, naming the evidence.
pub fn explain(d: Diagnosis, e: &Evidence) -> String {
    match d {
        Diagnosis::Unaccepted => format!(
            "peer closed while the connection waited in the listener's accept queue; \
             {} ({} unread bytes)",
            if e.listener_holders_busy {
                "no holder of the listener accepted it in time (see accepting)"
            } else {
                "the application never called accept()"
            },
            e.unread_bytes
        ),
        Diagnosis::HeldElsewhere => format!(
            "the process that created it let go of it, but {} other process(es) still hold \
             the descriptor (inherited across fork?)",
            e.holders
        ),
        Diagnosis::NeverRead => format!(
            "{} bytes arrived and were never read: the application stopped reading, \
             so it never saw EOF or called close()",
            e.unread_bytes
        ),
        Diagnosis::HandlerBlocked => format!(
            "{}, but the handler has not finished: {}; the descriptor is closed only when \
             that call returns (a slow or dead upstream, a full pipe?)",
            if e.eof_unread {
                "the request was read, nothing unread but the EOF"
            } else {
                "the request was read, and the EOF"
            },
            e.blocked.as_deref().unwrap_or("blocked")
        ),
        Diagnosis::ReadNotClosed => {
            let eof = if e.eof_unread {
                "nothing unread but the EOF"
            } else {
                // rx_queue 0: the FIN was consumed, by a read that returned
                // EOF or with the last data, which the kernel merges it into.
                "the application read everything including EOF (or the data the FIN came with)"
            };
            let peer = match e.peer_live_connections {
                Some(0) => "; no live connection to that peer remains (peer gone or scaled away?)",
                _ => "",
            };
            format!("{eof}, yet the descriptor is still open: a forgotten close() or a pool keeping dead connections{peer}")
        }
        Diagnosis::ClosedLate => "closed only after the threshold".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities() {
        let base = Evidence {
            holders: 1,
            ..Default::default()
        };
        assert_eq!(diagnose(&base), Diagnosis::ReadNotClosed);
        let blocked = Evidence {
            blocked: Some("1 of 1 thread asleep via poll(2) on fd 5".into()),
            ..base.clone()
        };
        assert_eq!(diagnose(&blocked), Diagnosis::HandlerBlocked);
        assert!(explain(Diagnosis::HandlerBlocked, &blocked)
            .contains("handler has not finished: 1 of 1 thread asleep via poll(2) on fd 5;"));
        // Unread data is said first: the handler never read it.
        let blocked_unread = Evidence {
            unread_bytes: 3,
            ..blocked
        };
        assert_eq!(diagnose(&blocked_unread), Diagnosis::NeverRead);
        let unread = Evidence {
            unread_bytes: 78,
            ..base.clone()
        };
        assert_eq!(diagnose(&unread), Diagnosis::NeverRead);
        let forked = Evidence {
            creator_let_go: true,
            ..unread.clone()
        };
        assert_eq!(diagnose(&forked), Diagnosis::HeldElsewhere);
        let queued = Evidence {
            unaccepted: true,
            holders: 0,
            ..forked
        };
        assert_eq!(diagnose(&queued), Diagnosis::Unaccepted);
    }

    #[test]
    fn let_go_without_holders_is_not_held_elsewhere() {
        let e = Evidence {
            creator_let_go: true,
            holders: 0,
            ..Default::default()
        };
        assert_eq!(diagnose(&e), Diagnosis::ReadNotClosed);
    }

    #[test]
    fn explanations_name_evidence() {
        let e = Evidence {
            unread_bytes: 78,
            holders: 1,
            ..Default::default()
        };
        assert!(explain(Diagnosis::NeverRead, &e).contains("78 bytes"));
        let gone = Evidence {
            peer_live_connections: Some(0),
            holders: 1,
            ..Default::default()
        };
        assert!(explain(Diagnosis::ReadNotClosed, &gone).contains("no live connection"));
        assert_eq!(
            serde_json::to_string(&Diagnosis::HeldElsewhere).unwrap(),
            "\"held-elsewhere\""
        );
    }
}
