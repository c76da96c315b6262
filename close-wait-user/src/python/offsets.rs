//! Where CPython keeps what a stack walk needs, per version.
//!
//! 3.13 publishes these offsets itself in `_Py_DebugOffsets`, the first
//! member of `_PyRuntime` (cookie `xdebugpy`, then `PY_VERSION_HEX`, then
//! groups of u64 offsets, each group led by the size of its struct). 3.11
//! and 3.12 do not; their table below was derived from CPython's headers at
//! those tags (`Include/internal/pycore_runtime.h`, `pycore_interp.h`,
//! `pycore_frame.h`, `Include/cpython/pystate.h`, `code.h`,
//! `unicodeobject.h`) for x86-64/aarch64 (LP64), and checked against the
//! interpreters on this project's machines (`_PyRuntime.interpreters.head`
//! is the interpreter `PyInterpreterState_Get()` returns, its thread list
//! starts at `PyThreadState_Get()`, `native_thread_id` equals
//! `threading.get_native_id()`).

use super::PyError;

/// Byte offsets of the fields a walk reads. All relative to the start of
/// their struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// `_PyRuntimeState.interpreters.head`.
    pub runtime_interp_head: u64,
    /// `PyInterpreterState.next`.
    pub interp_next: u64,
    /// `PyInterpreterState.threads.head`.
    pub interp_threads_head: u64,
    /// `PyThreadState.next`.
    pub tstate_next: u64,
    /// `PyThreadState.native_thread_id` (an `unsigned long`).
    pub tstate_native_thread_id: u64,
    /// 3.11/3.12: `PyThreadState.cframe` (a `_PyCFrame *`); 3.13:
    /// `PyThreadState.current_frame` (the frame itself).
    pub tstate_frame: u64,
    /// 3.11/3.12: `_PyCFrame.current_frame`; None when `tstate_frame`
    /// already points at the frame.
    pub cframe_current_frame: Option<u64>,
    /// `_PyInterpreterFrame.previous`.
    pub frame_previous: u64,
    /// `_PyInterpreterFrame.f_code` (3.11/3.12) or `.f_executable` (3.13).
    pub frame_code: u64,
    /// `.prev_instr` (3.11/3.12: the last instruction started) or
    /// `.instr_ptr` (3.13: the one executing).
    pub frame_instr: u64,
    /// `_PyInterpreterFrame.owner` (a char).
    pub frame_owner: u64,
    /// The `owner` value of the shim frames the interpreter pushes for
    /// calls from C (`FRAME_OWNED_BY_CSTACK`, 3.12+): not Python code.
    pub owner_cstack: Option<u8>,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_firstlineno: u64,
    /// `co_code_adaptive`: the instructions, in 2-byte code units.
    pub code_adaptive: u64,
    /// `PyObject.ob_type`.
    pub ob_type: u64,
    /// `PyASCIIObject.length` and `.state` (a bit field: `interned:2,
    /// kind:3, compact:1, ascii:1`).
    pub unicode_length: u64,
    pub unicode_state: u64,
    /// Size of `PyASCIIObject` (a compact ASCII string's data follows it).
    pub unicode_ascii_size: u64,
    /// Size of `PyCompactUnicodeObject` (a compact non-ASCII string's data
    /// follows it).
    pub unicode_compact_size: u64,
    /// `PyBytesObject.ob_size` (`PyVarObject`) and `.ob_sval`.
    pub bytes_size: u64,
    pub bytes_sval: u64,
}

/// The table for 3.11 and 3.12; None for other versions (3.13+ describe
/// themselves, see [`from_debug_offsets`]).
pub fn table(minor: u8) -> Option<Layout> {
    match minor {
        // _PyRuntimeState: five ints, then `_finalizing` (8 bytes at 24),
        // then `interpreters {mutex, head, main, next_id}`: head at 40.
        // PyInterpreterState: `next` first, then `threads {next_unique_id,
        // head, ..}`: head at 16. PyThreadState: prev, next, interp, six
        // ints, `cframe` at 56, ... `native_thread_id` at 160.
        // _PyCFrame {uint8_t use_tracing; current_frame; previous}.
        // _PyInterpreterFrame: f_func, f_globals, f_builtins, f_locals,
        // f_code (32), frame_obj, previous (48), prev_instr (56), stacktop
        // (int), is_entry (bool, 68), owner (char, 69).
        // PyCodeObject: PyObject_VAR_HEAD (24), three pointers, co_flags,
        // two shorts, nine ints (co_firstlineno at 72), pointers from 96:
        // localsplusnames, localspluskinds, filename (112), name (120),
        // qualname (128), linetable (136), weakreflist, _co_code,
        // _co_linearray, _co_firsttraceable, co_extra, co_code_adaptive
        // (184). PyASCIIObject keeps a `wstr` pointer in 3.11: 48 bytes;
        // PyCompactUnicodeObject adds utf8_length, utf8, wstr_length: 72.
        11 => Some(Layout {
            runtime_interp_head: 40,
            interp_next: 0,
            interp_threads_head: 16,
            tstate_next: 8,
            tstate_native_thread_id: 160,
            tstate_frame: 56,
            cframe_current_frame: Some(8),
            frame_previous: 48,
            frame_code: 32,
            frame_instr: 56,
            frame_owner: 69,
            owner_cstack: None,
            code_filename: 112,
            code_name: 120,
            code_qualname: 128,
            code_linetable: 136,
            code_firstlineno: 72,
            code_adaptive: 184,
            ob_type: 8,
            unicode_length: 16,
            unicode_state: 32,
            unicode_ascii_size: 48,
            unicode_compact_size: 72,
            bytes_size: 16,
            bytes_sval: 32,
        }),
        // _PyRuntimeState gains `_finalizing_id` after `_finalizing`:
        // interpreters.head at 48. PyInterpreterState: next, id,
        // id_refcount, requires_idref, id_mutex, _initialized, finalizing,
        // monitoring_version, last_restart_version, then threads
        // {next_unique_id, head}: head at 72. PyThreadState: prev, next,
        // interp, `_status` bit field, py_recursion_*, c_recursion_remaining,
        // recursion_headroom, tracing, what_event, `cframe` at 56, ...
        // `native_thread_id` at 144. _PyCFrame {current_frame; previous}.
        // _PyInterpreterFrame: f_code (0), previous (8), f_funcobj,
        // f_globals, f_builtins, f_locals, frame_obj, prev_instr (56),
        // stacktop (int), return_offset (u16, 68), owner (char, 70); owner 3
        // is FRAME_OWNED_BY_CSTACK. PyCodeObject: co_flags then ten ints
        // (co_firstlineno at 68) and co_version, pointers from 96 as in
        // 3.11 up to linetable (136), then weakreflist, _co_cached,
        // _co_instrumentation_version, _co_monitoring, _co_firsttraceable,
        // co_extra, co_code_adaptive (192). No `wstr` any more:
        // PyASCIIObject is 40 bytes, PyCompactUnicodeObject 56.
        12 => Some(Layout {
            runtime_interp_head: 48,
            interp_next: 0,
            interp_threads_head: 72,
            tstate_next: 8,
            tstate_native_thread_id: 144,
            tstate_frame: 56,
            cframe_current_frame: Some(0),
            frame_previous: 8,
            frame_code: 0,
            frame_instr: 56,
            frame_owner: 70,
            owner_cstack: Some(3),
            code_filename: 112,
            code_name: 120,
            code_qualname: 128,
            code_linetable: 136,
            code_firstlineno: 68,
            code_adaptive: 192,
            ob_type: 8,
            unicode_length: 16,
            unicode_state: 32,
            unicode_ascii_size: 40,
            unicode_compact_size: 56,
            bytes_size: 16,
            bytes_sval: 32,
        }),
        _ => None,
    }
}

/// How many bytes of `_PyRuntime` [`from_debug_offsets`] reads.
pub const DEBUG_OFFSETS_LEN: usize = 71 * 8;

/// Reads 3.13's `_Py_DebugOffsets` (the start of `_PyRuntime`). Returns the
/// layout and the `PY_VERSION_HEX` it carries.
///
/// 3.13 order of the u64 fields after cookie and version: free_threaded;
/// runtime_state {size, finalizing, interpreters_head}; interpreter_state
/// {size, id, next, threads_head, gc, imports_modules, sysdict, builtins,
/// ceval_gil, gil_runtime_state, gil_runtime_state_enabled,
/// gil_runtime_state_locked, gil_runtime_state_holder}; thread_state {size,
/// prev, next, interp, current_frame, thread_id, native_thread_id,
/// datastack_chunk, status}; interpreter_frame {size, previous, executable,
/// instr_ptr, localsplus, owner}; code_object {size, filename, name,
/// qualname, linetable, firstlineno, argcount, localsplusnames,
/// localspluskinds, co_code_adaptive}; pyobject {size, ob_type};
/// type_object {size, tp_name, tp_repr, tp_flags}; tuple_object {size,
/// ob_item, ob_size}; list_object {size, ob_item, ob_size}; dict_object
/// {size, ma_keys, ma_values}; float_object {size, ob_fval}; long_object
/// {size, lv_tag, ob_digit}; bytes_object {size, ob_size, ob_sval};
/// unicode_object {size, state, length, asciiobject_size}; ...
pub fn from_debug_offsets(raw: &[u8]) -> Result<(Layout, u64), PyError> {
    if raw.len() < DEBUG_OFFSETS_LEN || &raw[..8] != b"xdebugpy" {
        return Err(PyError::NoDebugOffsets);
    }
    let f = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
    let version = f(1);
    let (major, minor) = ((version >> 24) & 0xff, (version >> 16) & 0xff);
    if (major, minor) != (3, 13) {
        return Err(PyError::Unsupported(format!(
            "CPython {major}.{minor} (its _Py_DebugOffsets layout is not known to this build)"
        )));
    }
    if f(2) != 0 {
        return Err(PyError::Unsupported(
            "free-threaded CPython 3.13t".to_string(),
        ));
    }
    let layout = Layout {
        runtime_interp_head: f(5),
        interp_next: f(8),
        interp_threads_head: f(9),
        tstate_next: f(21),
        tstate_native_thread_id: f(25),
        tstate_frame: f(23),
        cframe_current_frame: None,
        frame_previous: f(29),
        frame_code: f(30),
        frame_instr: f(31),
        frame_owner: f(33),
        owner_cstack: Some(3),
        code_filename: f(35),
        code_name: f(36),
        code_qualname: f(37),
        code_linetable: f(38),
        code_firstlineno: f(39),
        code_adaptive: f(43),
        ob_type: f(45),
        bytes_size: f(65),
        bytes_sval: f(66),
        unicode_state: f(68),
        unicode_length: f(69),
        unicode_ascii_size: f(70),
        // PyCompactUnicodeObject = PyASCIIObject + utf8_length + utf8.
        unicode_compact_size: f(70) + 16,
    };
    let sane = [
        layout.runtime_interp_head,
        layout.interp_threads_head,
        layout.tstate_frame,
        layout.code_adaptive,
    ]
    .iter()
    .all(|&o| o < 1 << 20);
    if !sane {
        return Err(PyError::NoDebugOffsets);
    }
    Ok((layout, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 71 u64s of `_PyRuntime` of CPython 3.13.0 (x86-64), as
    /// read from a live interpreter on this project's machine.
    pub(crate) fn debug_offsets_3_13_0() -> Vec<u8> {
        let words: [u64; 70] = [
            0x30d00f0, 0, 0x452b8, 608, 632, 0x2f998, 0x1c68, 0x1c60, 0x1cb0, 0x1ce8, 0x1de8,
            0x1dd8, 0x1de0, 16, 0x1e48, 0, 0x1e58, 0x1e50, 304, 0, 8, 16, 72, 152, 160, 232, 32,
            80, 8, 0, 56, 72, 70, 208, 112, 120, 128, 136, 68, 52, 96, 104, 200, 16, 8, 416, 24,
            88, 168, 32, 24, 16, 40, 24, 16, 48, 32, 40, 24, 16, 32, 16, 24, 40, 16, 32, 64, 32,
            16, 40,
        ];
        let mut raw = b"xdebugpy".to_vec();
        for w in words {
            raw.extend_from_slice(&w.to_le_bytes());
        }
        raw
    }

    #[test]
    fn debug_offsets_of_3_13_0() {
        let (l, version) = from_debug_offsets(&debug_offsets_3_13_0()).unwrap();
        assert_eq!(version, 0x030d00f0);
        assert_eq!(l.runtime_interp_head, 632);
        assert_eq!(l.interp_threads_head, 0x1cb0);
        assert_eq!(l.interp_next, 0x1c60);
        assert_eq!((l.tstate_next, l.tstate_frame), (8, 72));
        assert_eq!(l.tstate_native_thread_id, 160);
        assert_eq!(
            (l.frame_previous, l.frame_code, l.frame_instr, l.frame_owner),
            (8, 0, 56, 70)
        );
        assert_eq!(
            (l.code_filename, l.code_qualname, l.code_linetable),
            (112, 128, 136)
        );
        assert_eq!((l.code_firstlineno, l.code_adaptive), (68, 200));
        assert_eq!((l.bytes_size, l.bytes_sval), (16, 32));
        assert_eq!(
            (l.unicode_state, l.unicode_length, l.unicode_ascii_size),
            (32, 16, 40)
        );
        assert_eq!(l.cframe_current_frame, None);
    }

    #[test]
    fn debug_offsets_refused() {
        let mut raw = debug_offsets_3_13_0();
        assert!(matches!(
            from_debug_offsets(&raw[..100]),
            Err(PyError::NoDebugOffsets)
        ));
        raw[8..16].copy_from_slice(&0x030e00f0u64.to_le_bytes());
        assert!(matches!(
            from_debug_offsets(&raw),
            Err(PyError::Unsupported(m)) if m.contains("3.14")
        ));
        raw[8..16].copy_from_slice(&0x030d00f0u64.to_le_bytes());
        raw[16..24].copy_from_slice(&1u64.to_le_bytes());
        assert!(matches!(
            from_debug_offsets(&raw),
            Err(PyError::Unsupported(m)) if m.contains("free-threaded")
        ));
        raw[0] = b'y';
        assert!(from_debug_offsets(&raw).is_err());
    }

    #[test]
    fn tables_for_3_11_and_3_12_only() {
        assert!(table(10).is_none());
        assert!(table(13).is_none());
        assert_eq!(table(11).unwrap().code_adaptive, 184);
        assert_eq!(table(12).unwrap().code_adaptive, 192);
    }
}
