//! Stacks folded for reading: the human report shows application frames and
//! collapses each run of standard-library and runtime frames (Python's
//! stdlib, Go's standard packages such as `runtime`, `net`, `syscall`,
//! libc and the dynamic loader, the CPython interpreter's own C code) into
//! one line. The JSON keeps every frame.
//!
//! Frames reach the report as text (`function+0xoff (file:line)`,
//! `function+0xoff [module]`, `0xaddr [module]` for native frames,
//! `qualname (file:line)` for Python frames), so they are classified from
//! that text.

use std::path::Path;

/// Folds runs of library frames for reading. The innermost frame is always
/// shown (where the stack was taken); after it, every run of library frames
/// becomes one line (`fold_line(run)`), application frames are shown. A
/// stack without any application frame is shown whole: folding would leave
/// nothing to read.
pub fn fold<T>(
    frames: &[T],
    is_lib: impl Fn(&T) -> bool,
    show: impl Fn(&T) -> String,
    fold_line: impl Fn(&[T]) -> String,
) -> Vec<String> {
    if frames.iter().all(&is_lib) {
        return frames.iter().map(show).collect();
    }
    let mut out = Vec::new();
    let mut start = None;
    for (i, f) in frames.iter().enumerate() {
        if i > 0 && is_lib(f) {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            out.push(fold_line(&frames[s..i]));
        }
        out.push(show(f));
    }
    if let Some(s) = start {
        out.push(fold_line(&frames[s..]));
    }
    out
}

/// What kind of library a native frame belongs to, None for application
/// code.
pub fn native_library(frame: &str) -> Option<&'static str> {
    let (function, place) = split_frame(frame);
    let module = place.module.map(basename);
    if let Some(m) = module {
        if m.starts_with("libc.so")
            || m.starts_with("libc-")
            || m.starts_with("libpthread")
            || m.starts_with("ld-linux")
            || m.starts_with("ld64.so")
            || m.starts_with("[vdso]")
        {
            return Some("libc");
        }
        if m.starts_with("libpython") || is_python_binary(m) {
            return Some("CPython");
        }
    }
    if let Some(file) = place.file {
        // glibc's debug info names its sources relative to its build tree.
        if file.starts_with("./") && (file.contains("sysdeps/") || file.contains("/nptl/")) {
            return Some("libc");
        }
        if in_goroot(file) && !function.starts_with("main.") {
            return Some("Go runtime");
        }
        if file.ends_with(".go") {
            return go_stdlib(function).then_some("Go runtime");
        }
    }
    if function.starts_with("__libc_") {
        return Some("libc");
    }
    None
}

/// Is a Go function from the standard library (`runtime.main`,
/// `net.(*netFD).connect`, `internal/poll.(*FD).Read`, `net/http.Get`)?
/// Packages whose path starts with a domain (`github.com/...`) and `main`
/// are the program's.
fn go_stdlib(function: &str) -> bool {
    let path_end = function.rfind('/').map_or(0, |i| i + 1);
    let first = function.split('/').next().unwrap_or("");
    let pkg = function[path_end..].split('.').next().unwrap_or("");
    !pkg.is_empty() && pkg != "main" && !first.contains('.') || first == "runtime"
}

/// Go's own sources (Debian's golang-go, an official tarball in /usr/local).
fn in_goroot(file: &str) -> bool {
    file.starts_with("/usr/lib/go-")
        || file.starts_with("/usr/lib/go/")
        || file.starts_with("/usr/local/go/")
}

fn is_python_binary(m: &str) -> bool {
    m.strip_prefix("python")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

fn basename(m: &str) -> &str {
    Path::new(m)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(m)
}

struct Place<'a> {
    file: Option<&'a str>,
    module: Option<&'a str>,
}

/// `function+0xoff (file:line)` -> (`function`, file); `... [module]` ->
/// (`function`, module).
fn split_frame(frame: &str) -> (&str, Place<'_>) {
    let frame = frame
        .strip_suffix(" [inferred from the call site below]")
        .unwrap_or(frame);
    let (head, place) = if let Some(rest) = frame.strip_suffix(']') {
        match rest.rfind(" [") {
            Some(i) => (
                &rest[..i],
                Place {
                    file: None,
                    module: Some(&rest[i + 2..]),
                },
            ),
            None => (
                frame,
                Place {
                    file: None,
                    module: None,
                },
            ),
        }
    } else if let Some(rest) = frame.strip_suffix(')') {
        match rest.rfind(" (") {
            Some(i) => {
                let loc = &rest[i + 2..];
                let file = loc.rsplit_once(':').map_or(loc, |(f, l)| {
                    if l.chars().all(|c| c.is_ascii_digit()) {
                        f
                    } else {
                        loc
                    }
                });
                (
                    &rest[..i],
                    Place {
                        file: Some(file),
                        module: None,
                    },
                )
            }
            None => (
                frame,
                Place {
                    file: None,
                    module: None,
                },
            ),
        }
    } else {
        (
            frame,
            Place {
                file: None,
                module: None,
            },
        )
    };
    let function = head.split_once('+').map_or(head, |(f, _)| f);
    (function, place)
}

/// The native frames of a creation stack as the human report shows them.
pub fn native(frames: &[String]) -> Vec<String> {
    fold(
        frames,
        |f| native_library(f).is_some(),
        |f| f.clone(),
        |run| {
            let mut kinds: Vec<&str> = Vec::new();
            for f in run {
                let k = native_library(f).unwrap_or("library");
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            format!(
                "... {} {} frame{}",
                run.len(),
                kinds.join("/"),
                if run.len() == 1 { "" } else { "s" }
            )
        },
    )
}

/// Python frames (`qualname (file:line)`) as the human report shows them:
/// standard-library files relative to the library, runs of stdlib frames
/// after the first folded.
pub fn python(frames: &[String]) -> Vec<String> {
    fold(
        frames,
        |f| python_file(f).is_some_and(crate::python::is_stdlib),
        |f| short_python(f),
        |run| {
            format!(
                "... {} Python stdlib frame{}",
                run.len(),
                if run.len() == 1 { "" } else { "s" }
            )
        },
    )
}

/// How many frames at the start of a creation stack are Python frames (the
/// kernel's Python walk comes first, then the native stack).
pub fn python_prefix(frames: &[String]) -> usize {
    frames
        .iter()
        .take_while(|f| {
            !f.contains("+0x")
                && python_file(f).is_some_and(|file| file.ends_with(".py") || file.starts_with('<'))
        })
        .count()
}

/// The file of a `qualname (file:line)` frame.
fn python_file(frame: &str) -> Option<&str> {
    split_frame(frame).1.file
}

/// `emit (/usr/lib/python3.11/logging/__init__.py:1113)` ->
/// `emit (logging/__init__.py:1113)`.
fn short_python(frame: &str) -> String {
    let Some(file) = python_file(frame) else {
        return frame.to_string();
    };
    match crate::python::stdlib_relative(file) {
        Some(rel) => frame.replacen(file, rel, 1),
        None => frame.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn go_client_stack_keeps_main_frames() {
        let stack = s(&[
            "syscall.Syscall+0x39 (/usr/lib/go-1.19/src/syscall/syscall_linux.go:68)",
            "syscall.connect+0x4d (/usr/lib/go-1.19/src/syscall/zsyscall_linux_amd64.go:1400)",
            "net.(*netFD).connect+0x91 (/usr/lib/go-1.19/src/net/fd_unix.go:59)",
            "net.(*sysDialer).dialTCP+0x6a (/usr/lib/go-1.19/src/net/tcpsock_posix.go:61)",
            "main.dialBackend+0x55 (/tmp/leak/main.go:12)",
            "main.poolGet+0x1a (/tmp/leak/main.go:18)",
            "main.main+0x25 (/tmp/leak/main.go:24)",
            "runtime.main+0x212 (/usr/lib/go-1.19/src/runtime/proc.go:250)",
            "runtime.goexit+0x1 (/usr/lib/go-1.19/src/runtime/asm_amd64.s:1594)",
        ]);
        assert_eq!(
            native(&stack),
            s(&[
                "syscall.Syscall+0x39 (/usr/lib/go-1.19/src/syscall/syscall_linux.go:68)",
                "... 3 Go runtime frames",
                "main.dialBackend+0x55 (/tmp/leak/main.go:12)",
                "main.poolGet+0x1a (/tmp/leak/main.go:18)",
                "main.main+0x25 (/tmp/leak/main.go:24)",
                "... 2 Go runtime frames",
            ])
        );
    }

    #[test]
    fn libc_and_c_application() {
        let stack = s(&[
            "__libc_connect+0x10 (./socket/../sysdeps/unix/sysv/linux/connect.c:26)",
            "open_leaky_connection+0x3e (/tmp/leaky.c:40)",
            "main+0x9 (/tmp/leaky.c:90)",
            "__libc_start_call_main+0x7a [libc.so.6]",
            "__libc_start_main+0x85 [libc.so.6]",
            "_start+0x21 [leaky]",
        ]);
        assert_eq!(
            native(&stack),
            s(&[
                "__libc_connect+0x10 (./socket/../sysdeps/unix/sysv/linux/connect.c:26)",
                "open_leaky_connection+0x3e (/tmp/leaky.c:40)",
                "main+0x9 (/tmp/leaky.c:90)",
                "... 2 libc frames",
                "_start+0x21 [leaky]",
            ])
        );
    }

    #[test]
    fn all_library_shown_whole() {
        let stack = s(&["__libc_connect+0x10 [libc.so.6]", "0x1234 [python3.11]"]);
        assert_eq!(native(&stack), stack);
    }

    #[test]
    fn third_party_go_is_application() {
        assert_eq!(
            native_library(
                "github.com/x/db.(*Pool).Get+0x10 (/root/go/pkg/mod/github.com/x/db/pool.go:3)"
            ),
            None
        );
        assert_eq!(
            native_library("net/http.(*Transport).dial+0x10 (/src/x.go:1)"),
            Some("Go runtime")
        );
        assert_eq!(native_library("main.main+0x10 (/src/x.go:1)"), None);
        assert_eq!(native_library("0x7f00 [unknown]"), None);
        assert_eq!(
            native_library("_PyEval_EvalFrameDefault+0x10 [libpython3.12.so.1.0]"),
            Some("CPython")
        );
    }

    #[test]
    fn python_stdlib_folded_after_the_first_frame() {
        let stack = s(&[
            "create_connection (/usr/lib/python3.11/socket.py:836)",
            "connect (/usr/lib/python3.11/http/client.py:941)",
            "fetch_quote (/srv/leak.py:3)",
            "handle_order (/srv/leak.py:7)",
            "_run (/usr/lib/python3.11/threading.py:975)",
            "<module> (/srv/leak.py:11)",
        ]);
        assert_eq!(
            python(&stack),
            s(&[
                "create_connection (socket.py:836)",
                "... 1 Python stdlib frame",
                "fetch_quote (/srv/leak.py:3)",
                "handle_order (/srv/leak.py:7)",
                "... 1 Python stdlib frame",
                "<module> (/srv/leak.py:11)",
            ])
        );
    }
}
