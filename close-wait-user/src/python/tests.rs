use super::mem::FakeMem;
use super::*;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// A compact ASCII `str` object at `addr` (3.12 layout: 40-byte header).
fn put_str(m: &mut FakeMem, addr: u64, s: &str) {
    m.put_u64(addr + 16, s.len() as u64);
    let state: u32 = (1 << 2) | (1 << 5) | (1 << 6); // kind 1, compact, ascii
    m.put(addr + 32, &state.to_ne_bytes());
    m.put(addr + 40, s.as_bytes());
}

/// A code object of 3.12 at `addr` whose line table gives line
/// `first + unit` to code unit `unit` (one "no columns" entry per unit).
fn put_code(m: &mut FakeMem, addr: u64, code_type: u64, name: &str, file: &str, first: i32) {
    m.put_u64(addr + 8, code_type);
    m.put(addr + 68, &first.to_ne_bytes());
    put_str(m, addr + 0x1000, name);
    put_str(m, addr + 0x2000, file);
    m.put_u64(addr + 128, addr + 0x1000);
    m.put_u64(addr + 112, addr + 0x2000);
    let lt = addr + 0x3000;
    m.put_u64(addr + 136, lt);
    // First entry: +0, then +1 per unit.
    let mut table = vec![0x80 | (13 << 3), 0x00];
    for _ in 0..15 {
        table.extend_from_slice(&[0x80 | (13 << 3), 0x02]);
    }
    m.put_u64(lt + 16, table.len() as u64);
    m.put(lt + 32, &table);
}

fn found(runtime: u64, code_type: u64) -> elf::Found {
    elf::Found {
        path: "/opt/py/lib/libpython3.12.so.1.0".into(),
        runtime,
        py_version: None,
        code_type: Some(code_type),
    }
}

/// 3.12 walk on memory laid out by hand: two threads, a C-stack shim
/// frame skipped, lines from the instruction pointer, a non-code pointer
/// stopping the walk with a note.
#[test]
fn walk_of_a_hand_made_3_12_process() {
    let mut m = FakeMem::default();
    let (rt, interp, ts1, ts2, cf1, cf2) =
        (0x1_0000, 0x2_0000, 0x3_0000, 0x3_8000, 0x4_0000, 0x4_8000);
    let code_type = 0x9_0000;
    m.put_u64(rt + 48, interp);
    m.put_u64(interp, 0); // next interpreter
    m.put_u64(interp + 72, ts1);
    m.put_u64(ts1 + 8, ts2);
    m.put_u64(ts1 + 144, 101);
    m.put_u64(ts1 + 56, cf1);
    m.put_u64(ts2 + 8, 0);
    m.put_u64(ts2 + 144, 102);
    m.put_u64(ts2 + 56, cf2);
    let (f1, shim, f2, fbad) = (0x5_0000, 0x5_1000, 0x5_2000, 0x5_3000);
    let (c_inner, c_outer) = (0x10_0000, 0x20_0000);
    put_code(
        &mut m,
        c_inner,
        code_type,
        "Pool.fetch_quote",
        "/srv/app/leak.py",
        10,
    );
    put_code(
        &mut m,
        c_outer,
        code_type,
        "<module>",
        "/srv/app/leak.py",
        1,
    );
    m.put_u64(cf1, f1);
    // f1: code c_inner at unit 3, previous = shim.
    m.put_u64(f1, c_inner);
    m.put_u64(f1 + 8, shim);
    m.put_u64(f1 + 56, c_inner + 192 + 3 * 2);
    m.put(f1 + 70, &[0]);
    // shim (owner 3): skipped.
    m.put_u64(shim, 0x7777);
    m.put_u64(shim + 8, f2);
    m.put_u64(shim + 56, 0);
    m.put(shim + 70, &[3]);
    // f2: code c_outer at unit 0, last frame.
    m.put_u64(f2, c_outer);
    m.put_u64(f2 + 8, 0);
    m.put_u64(f2 + 56, c_outer + 192);
    m.put(f2 + 70, &[0]);
    // Thread 2: a frame whose "code" is not a code object.
    m.put_u64(cf2, fbad);
    m.put_u64(fbad, 0x6_0000);
    m.put_u64(0x6_0000 + 8, 0xdead);
    m.put_u64(fbad + 8, f2);
    m.put_u64(fbad + 56, 0);
    m.put(fbad + 70, &[0]);

    let p = PyProcess::with_memory(7, found(rt, code_type), Some(0x030c01f0), m).unwrap();
    assert_eq!(p.version, (3, 12, 1));
    let t = p.threads().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].tid, 101);
    assert_eq!(
        t[0].frames
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>(),
        [
            "Pool.fetch_quote (/srv/app/leak.py:13)",
            "<module> (/srv/app/leak.py:1)"
        ]
    );
    assert_eq!(t[0].note, None);
    assert_eq!(t[1].tid, 102);
    assert!(t[1].frames.is_empty());
    assert!(
        t[1].note
            .as_deref()
            .unwrap()
            .contains("without a code object"),
        "{:?}",
        t[1].note
    );
}

#[test]
fn version_from_file_name_when_py_version_is_missing() {
    let mut m = FakeMem::default();
    m.put_u64(0x1000 + 48, 0);
    let p = PyProcess::with_memory(1, found(0x1000, 0x2000), None, m).unwrap();
    assert_eq!(p.version, (3, 12, 0));
    assert!(p.threads().unwrap().is_empty());
    let mut f = found(0x1000, 0x2000);
    f.path = "/usr/bin/python3.10".into();
    let err = PyProcess::with_memory(1, f, None, FakeMem::default()).unwrap_err();
    assert!(err.to_string().contains("3.10"), "{err}");
}

#[test]
fn stdlib_and_folding() {
    assert!(is_stdlib("/usr/lib/python3.11/logging/__init__.py"));
    assert!(is_stdlib(
        "/root/.pyenv/versions/3.13.0/lib/python3.13/threading.py"
    ));
    assert!(is_stdlib("<frozen importlib._bootstrap>"));
    assert!(!is_stdlib("/usr/lib/python3/dist-packages/requests/api.py"));
    assert!(!is_stdlib(
        "/x/lib/python3.12/site-packages/urllib3/pool.py"
    ));
    assert!(!is_stdlib("/srv/app/server.py"));
    let f = |func: &str, file: &str, line| PyFrame {
        function: func.into(),
        file: file.into(),
        line: Some(line),
    };
    let lg = "/usr/lib/python3.11/logging/__init__.py";
    let frames = [
        f("StreamHandler.emit", lg, 1113),
        f("Handler.handle", lg, 978),
        f("Logger.info", lg, 1489),
        f("Handler.do_GET", "/srv/app/server.py", 20),
        f(
            "BaseHTTPRequestHandler.handle_one_request",
            "/usr/lib/python3.11/http/server.py",
            421,
        ),
        f("Thread.run", "/usr/lib/python3.11/threading.py", 975),
    ];
    assert_eq!(
        one_line(&frames),
        "StreamHandler.emit (logging/__init__.py:1113) <- 2 stdlib frames <- Handler.do_GET (/srv/app/server.py:20) <- 2 stdlib frames"
    );
    // Only library frames: nothing to fold toward, shown whole.
    assert_eq!(one_line(&frames[..2]).matches(" <- ").count(), 1);
    let g = group_threads(
        "3.11.2".into(),
        &[
            PyThread {
                tid: 9,
                frames: frames.to_vec(),
                note: None,
            },
            PyThread {
                tid: 3,
                frames: Vec::new(),
                note: None,
            },
            PyThread {
                tid: 5,
                frames: frames.to_vec(),
                note: None,
            },
        ],
    );
    assert_eq!(g.groups[0].tids, [5, 9]);
    assert_eq!(g.groups[0].stack.len(), 6);
    assert!(
        g.text
            .starts_with("2 of 3 threads in StreamHandler.emit (logging/__init__.py:1113) <- "),
        "{}",
        g.text
    );
    assert!(
        g.text
            .ends_with("; 1 of 3 in no Python frame (idle or in C code)"),
        "{}",
        g.text
    );
}

/// CPython interpreters of this machine: Debian's python3 always, other
/// versions where the machine has them (pyenv builds, with libpython).
pub(crate) fn interpreters() -> Vec<String> {
    let mut v = vec!["/usr/bin/python3".to_string()];
    for minor in [11, 12, 13] {
        let found = std::fs::read_dir("/root/.pyenv/versions")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("3.{minor}.")))
            })
            .map(|p| p.join(format!("bin/python3.{minor}")))
            .find(|p| p.exists());
        match found {
            Some(p) => v.push(p.display().to_string()),
            None => eprintln!("CPython 3.{minor}: not on this machine (no pyenv build), not tested beyond Debian's python3"),
        }
    }
    v
}

const SCRIPT: &str = "\
import sys, threading
def blocked_in_here(ev):
    ev.wait()
def middle_layer(ev):
    blocked_in_here(ev)
ev = threading.Event()
ts = [threading.Thread(target=middle_layer, args=(ev,)) for _ in range(3)]
for t in ts: t.start()
print(threading.get_native_id(), flush=True)
sys.stdin.readline()
ev.set()
";

/// Every CPython of the machine, walked live: three threads blocked in
/// `blocked_in_here` (line 3) called from `middle_layer` (line 5), and the
/// main thread in `<module>` at line 10.
#[test]
fn live_threads_of_every_cpython_here() {
    let dir = std::env::temp_dir().join(format!("cw-py-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("blocked_threads.py");
    std::fs::write(&script, SCRIPT).unwrap();
    for py in interpreters() {
        let mut child = Command::new(&py)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{py}: {e}"));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let main_tid: u32 = line.trim().parse().unwrap();
        // The workers may still be on their way into wait(): retry a little.
        let mut last = None;
        for _ in 0..50 {
            let p = PyProcess::attach(child.id()).unwrap_or_else(|e| panic!("{py}: {e}"));
            let threads = p.threads().unwrap();
            let ok = threads
                .iter()
                .filter(|t| {
                    t.frames
                        .iter()
                        .any(|f| f.function == "blocked_in_here" && f.line == Some(3))
                        && t.frames
                            .iter()
                            .any(|f| f.function == "middle_layer" && f.line == Some(5))
                })
                .count()
                == 3;
            let main_ok = threads.iter().any(|t| {
                t.tid == main_tid
                    && t.frames
                        .last()
                        .is_some_and(|f| f.function == "<module>" && f.line == Some(10))
            });
            if ok && main_ok {
                eprintln!(
                    "{py} {}: {}",
                    p.version_text(),
                    group_threads(p.version_text(), &threads).text
                );
                last = None;
                break;
            }
            last = Some((p.version_text(), threads));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = child.stdin.take().unwrap().write_all(b"\n");
        let _ = child.wait();
        assert!(last.is_none(), "{py}: {last:#?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
