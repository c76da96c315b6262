//! Kernel struct member offsets from BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF has no CO-RE relocations, so offsets of kernel struct fields
//! the eBPF side reads with `bpf_probe_read_kernel` are computed here, from
//! the running kernel's BTF, and handed to the programs as load-time
//! globals. Only the part of BTF needed for that is parsed: type records,
//! their names, struct/union members (bitfields included), and the
//! modifiers (typedef, const, volatile, restrict, type tag) between a
//! member and the struct it names.
//!
//! ```no_run
//! use close_wait::btf::Btf;
//! let btf = Btf::load()?;
//! // byte offset of sk->__sk_common.skc_net inside struct sock
//! let net = btf.member_offset("sock", &["__sk_common", "skc_net"])?;
//! let inum = btf.member_offset("net", &["ns", "inum"])?;
//! # let _ = (net, inum);
//! # Ok::<(), close_wait::btf::BtfError>(())
//! ```
//!
//! A path names members one after the other; members of anonymous structs
//! and unions are found through them, as C does (`skc_daddr` lives in an
//! anonymous struct inside an anonymous union of `struct sock_common`).

use std::collections::HashMap;
use std::path::Path;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF from {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("not BTF data (bad magic or header)")]
    BadHeader,
    #[error("BTF data truncated at byte {0}")]
    Truncated(usize),
    #[error("BTF type {id} has unknown kind {kind}")]
    UnknownKind { id: u32, kind: u32 },
    #[error("BTF has no struct or union named {0}")]
    NoStruct(String),
    #[error("BTF: {ty} has no member {member}")]
    NoMember { ty: String, member: String },
    #[error("BTF: member {member} is not a struct or union, cannot look inside it")]
    NotComposite { member: String },
    #[error("BTF: {member} is a bitfield (bit offset {bit_offset}), it has no byte offset")]
    Bitfield { member: String, bit_offset: u32 },
    #[error("BTF: type id {0} out of range")]
    BadTypeId(u32),
}

/// A member found by [`Btf::member`], relative to the start of the outer
/// struct the path started from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Offset in bits from the start of the outer struct.
    pub bit_offset: u32,
    /// Width in bits when the member is a bitfield, `None` otherwise.
    pub bitfield_size: Option<u32>,
    /// Size in bytes of the member's type (modifiers resolved; 0 if unknown).
    pub byte_size: u32,
}

impl Member {
    /// Offset in bytes, when the member is byte-aligned and not a bitfield.
    pub fn byte_offset(&self) -> Option<u32> {
        (self.bitfield_size.is_none() && self.bit_offset.is_multiple_of(8))
            .then_some(self.bit_offset / 8)
    }
}

#[derive(Debug, Clone, Copy)]
struct TypeRec {
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
    /// Byte position of the kind-specific data in `types`.
    data: usize,
}

/// Parsed BTF: the type section indexed by type id, and the string section.
pub struct Btf {
    big_endian: bool,
    types: Vec<u8>,
    strings: Vec<u8>,
    /// `recs[id - 1]` is type `id` (id 0 is void).
    recs: Vec<TypeRec>,
    /// Named structs and unions, name -> first type id with that name.
    composites: HashMap<String, u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.recs.len())
            .finish()
    }
}

impl Btf {
    /// The running kernel's BTF, from [`VMLINUX`].
    pub fn load() -> Result<Btf, BtfError> {
        Btf::from_file(Path::new(VMLINUX))
    }

    /// BTF read from a file (raw BTF, as under /sys/kernel/btf).
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Btf::parse(&data)
    }

    /// Parses raw BTF bytes (either byte order).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        if data.len() < HEADER_MIN {
            return Err(BtfError::BadHeader);
        }
        let big_endian = match [data[0], data[1]] {
            b if u16::from_le_bytes(b) == MAGIC => false,
            b if u16::from_be_bytes(b) == MAGIC => true,
            _ => return Err(BtfError::BadHeader),
        };
        let rd = |at: usize| read_u32(data, at, big_endian);
        let hdr_len = rd(4)? as usize;
        if hdr_len < HEADER_MIN {
            return Err(BtfError::BadHeader);
        }
        let (type_off, type_len) = (rd(8)? as usize, rd(12)? as usize);
        let (str_off, str_len) = (rd(16)? as usize, rd(20)? as usize);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or(BtfError::BadHeader)?;
            let end = start.checked_add(len).ok_or(BtfError::BadHeader)?;
            data.get(start..end)
                .map(<[u8]>::to_vec)
                .ok_or(BtfError::Truncated(end))
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut btf = Btf {
            big_endian,
            types,
            strings,
            recs: Vec::new(),
            composites: HashMap::new(),
        };
        btf.index()?;
        Ok(btf)
    }

    fn index(&mut self) -> Result<(), BtfError> {
        let mut at = 0;
        while at < self.types.len() {
            let id = self.recs.len() as u32 + 1;
            let name_off = self.u32_at(at)?;
            let info = self.u32_at(at + 4)?;
            let size_or_type = self.u32_at(at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let data = at + 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                _ => return Err(BtfError::UnknownKind { id, kind }),
            };
            at = data + extra;
            if at > self.types.len() {
                return Err(BtfError::Truncated(at));
            }
            let rec = TypeRec {
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                data,
            };
            if matches!(kind, KIND_STRUCT | KIND_UNION) && name_off != 0 {
                let name = self.str_at(name_off).to_owned();
                self.composites.entry(name).or_insert(id);
            }
            self.recs.push(rec);
        }
        Ok(())
    }

    /// Number of types (not counting void).
    pub fn type_count(&self) -> usize {
        self.recs.len()
    }

    /// Size in bytes of the struct or union `name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        let id = self.composite(name)?;
        Ok(self.rec(id)?.size_or_type)
    }

    /// Byte offset of the member at `path` inside struct (or union)
    /// `outer`. A bitfield or a member not on a byte boundary is an error.
    pub fn member_offset(&self, outer: &str, path: &[&str]) -> Result<u32, BtfError> {
        let m = self.member(outer, path)?;
        m.byte_offset().ok_or_else(|| BtfError::Bitfield {
            member: join(outer, path),
            bit_offset: m.bit_offset,
        })
    }

    /// The member at `path` inside struct (or union) `outer`: its bit
    /// offset from the start of `outer`, bitfield width and size.
    pub fn member(&self, outer: &str, path: &[&str]) -> Result<Member, BtfError> {
        let mut id = self.composite(outer)?;
        let mut found = Member {
            bit_offset: 0,
            bitfield_size: None,
            byte_size: self.rec(id)?.size_or_type,
        };
        for (i, name) in path.iter().enumerate() {
            let rec = self.rec(id)?;
            if !matches!(rec.kind, KIND_STRUCT | KIND_UNION) {
                return Err(BtfError::NotComposite {
                    member: join(outer, &path[..i]),
                });
            }
            let (bits, bitfield, ty) =
                self.find_member(id, name)?
                    .ok_or_else(|| BtfError::NoMember {
                        ty: join(outer, &path[..i]),
                        member: (*name).to_owned(),
                    })?;
            let ty = self.strip_modifiers(ty)?;
            found = Member {
                bit_offset: found.bit_offset + bits,
                bitfield_size: bitfield,
                byte_size: self.type_size(ty)?,
            };
            id = ty;
        }
        Ok(found)
    }

    /// Member `name` of composite `id`, searching anonymous members too:
    /// (bit offset, bitfield width, member type id).
    fn find_member(
        &self,
        id: u32,
        name: &str,
    ) -> Result<Option<(u32, Option<u32>, u32)>, BtfError> {
        let rec = self.rec(id)?;
        for i in 0..rec.vlen as usize {
            let at = rec.data + 12 * i;
            let name_off = self.u32_at(at)?;
            let ty = self.u32_at(at + 4)?;
            let raw = self.u32_at(at + 8)?;
            let (mut bits, mut bitfield) = if rec.kind_flag {
                let size = raw >> 24;
                (raw & 0x00ff_ffff, (size != 0).then_some(size))
            } else {
                (raw, None)
            };
            if name_off != 0 {
                if self.str_at(name_off) != name {
                    continue;
                }
                // Old-style bitfields (no kind_flag) live in the int encoding.
                let base = self.strip_modifiers(ty)?;
                if bitfield.is_none() && base != 0 {
                    let r = self.rec(base)?;
                    if r.kind == KIND_INT {
                        let enc = self.u32_at(r.data)?;
                        let nr_bits = enc & 0xff;
                        let int_off = (enc >> 16) & 0xff;
                        if nr_bits != r.size_or_type * 8 || int_off != 0 {
                            bits += int_off;
                            bitfield = Some(nr_bits);
                        }
                    }
                }
                return Ok(Some((bits, bitfield, ty)));
            }
            let inner = self.strip_modifiers(ty)?;
            if inner != 0 && matches!(self.rec(inner)?.kind, KIND_STRUCT | KIND_UNION) {
                if let Some((b, f, t)) = self.find_member(inner, name)? {
                    return Ok(Some((bits + b, f, t)));
                }
            }
        }
        Ok(None)
    }

    /// Follows typedef/const/volatile/restrict/type-tag to the named type.
    fn strip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..64 {
            if id == 0 {
                return Ok(0);
            }
            let rec = self.rec(id)?;
            match rec.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = rec.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::BadTypeId(id))
    }

    fn type_size(&self, id: u32) -> Result<u32, BtfError> {
        if id == 0 {
            return Ok(0);
        }
        let rec = self.rec(id)?;
        Ok(match rec.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                rec.size_or_type
            }
            KIND_PTR => 8,
            KIND_ARRAY => {
                let elem = self.strip_modifiers(self.u32_at(rec.data)?)?;
                let n = self.u32_at(rec.data + 8)?;
                self.type_size(elem)?.saturating_mul(n)
            }
            _ => 0,
        })
    }

    fn composite(&self, name: &str) -> Result<u32, BtfError> {
        self.composites
            .get(name)
            .copied()
            .ok_or_else(|| BtfError::NoStruct(name.to_owned()))
    }

    fn rec(&self, id: u32) -> Result<&TypeRec, BtfError> {
        id.checked_sub(1)
            .and_then(|i| self.recs.get(i as usize))
            .ok_or(BtfError::BadTypeId(id))
    }

    fn u32_at(&self, at: usize) -> Result<u32, BtfError> {
        read_u32(&self.types, at, self.big_endian)
    }

    fn str_at(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }
}

fn read_u32(data: &[u8], at: usize, big_endian: bool) -> Result<u32, BtfError> {
    let b: [u8; 4] = data
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(BtfError::Truncated(at + 4))?;
    Ok(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

fn join(outer: &str, path: &[&str]) -> String {
    std::iter::once(outer)
        .chain(path.iter().copied())
        .collect::<Vec<_>>()
        .join(".")
}

/// Offsets the eBPF side needs to read a socket's identity and network
/// namespace from a `struct sock *`, all in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockOffsets {
    /// `sock.__sk_common.skc_net` (a `possible_net_t`: the `struct net *`).
    pub skc_net: u32,
    /// `net.ns.inum`: the namespace's inode number, as /proc/PID/ns/net shows.
    pub net_ns_inum: u32,
    pub skc_family: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_rcv_saddr: u32,
    pub skc_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
}

impl SockOffsets {
    /// Reads every offset from `btf`; any missing one is an error.
    pub fn from_btf(btf: &Btf) -> Result<SockOffsets, BtfError> {
        let sk = |m: &str| btf.member_offset("sock", &["__sk_common", m]);
        Ok(SockOffsets {
            skc_net: sk("skc_net")?,
            net_ns_inum: btf.member_offset("net", &["ns", "inum"])?,
            skc_family: sk("skc_family")?,
            skc_num: sk("skc_num")?,
            skc_dport: sk("skc_dport")?,
            skc_rcv_saddr: sk("skc_rcv_saddr")?,
            skc_daddr: sk("skc_daddr")?,
            skc_v6_rcv_saddr: sk("skc_v6_rcv_saddr")?,
            skc_v6_daddr: sk("skc_v6_daddr")?,
        })
    }

    /// The running kernel's offsets, from [`VMLINUX`].
    pub fn load() -> Result<SockOffsets, BtfError> {
        SockOffsets::from_btf(&Btf::load()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds raw BTF (little endian) from type records, for fixtures.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                strings: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn push(
            &mut self,
            name: &str,
            kind: u32,
            vlen: u32,
            flag: bool,
            st: u32,
            extra: &[u32],
        ) -> u32 {
            let n = self.s(name);
            let info = (kind << 24) | vlen | (u32::from(flag) << 31);
            for w in [n, info, st].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, size: u32, enc: u32) -> u32 {
            self.push(name, KIND_INT, 0, false, size, &[enc])
        }
        /// members: (name, type, offset word)
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            flag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for (m, ty, off) in members {
                let n = self.s(m);
                extra.extend([n, *ty, *off]);
            }
            self.push(name, kind, members.len() as u32, flag, size, &extra)
        }
        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend([1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// struct inner { u32 a; union { u64 whole; struct { u32 lo; u32 hi; }; }; };
    /// struct outer { u8 flags:3, kind:5 (kind_flag); const inner_t in; u16 old:4 (int enc) };
    fn fixture() -> Vec<u8> {
        let mut b = Builder::new();
        let u32t = b.int("u32", 4, 32);
        let u64t = b.int("u64", 8, 64);
        let u8t = b.int("u8", 1, 8);
        let lohi = b.composite(
            KIND_STRUCT,
            "",
            8,
            false,
            &[("lo", u32t, 0), ("hi", u32t, 32)],
        );
        let un = b.composite(
            KIND_UNION,
            "",
            8,
            false,
            &[("whole", u64t, 0), ("", lohi, 0)],
        );
        let inner = b.composite(
            KIND_STRUCT,
            "inner",
            16,
            false,
            &[("a", u32t, 0), ("", un, 64)],
        );
        let td = b.push("inner_t", KIND_TYPEDEF, 0, false, inner, &[]);
        let cst = b.push("", KIND_CONST, 0, false, td, &[]);
        // old-style bitfield: int with 4 bits at bit offset 2 in its encoding
        let u16bf = b.int("u16", 2, (2 << 16) | 4);
        b.composite(
            KIND_STRUCT,
            "outer",
            40,
            true,
            &[
                ("flags", u8t, 3 << 24),
                ("kind", u8t, (5 << 24) | 3),
                ("in", cst, 64),
                ("old", u16bf, 256),
                ("ptr_next", 0, 0),
            ],
        );
        b.bytes()
    }

    #[test]
    fn nested_and_anonymous_members() {
        let btf = Btf::parse(&fixture()).unwrap();
        assert_eq!(btf.member_offset("inner", &["a"]).unwrap(), 0);
        assert_eq!(btf.member_offset("inner", &["whole"]).unwrap(), 8);
        assert_eq!(btf.member_offset("inner", &["lo"]).unwrap(), 8);
        assert_eq!(btf.member_offset("inner", &["hi"]).unwrap(), 12);
        // through a const typedef'd member
        assert_eq!(btf.member_offset("outer", &["in", "hi"]).unwrap(), 8 + 12);
        let m = btf.member("outer", &["in"]).unwrap();
        assert_eq!((m.bit_offset, m.byte_size), (64, 16));
        assert_eq!(btf.struct_size("outer").unwrap(), 40);
        assert_eq!(btf.member("inner", &["whole"]).unwrap().byte_size, 8);
    }

    #[test]
    fn bitfields() {
        let btf = Btf::parse(&fixture()).unwrap();
        let kind = btf.member("outer", &["kind"]).unwrap();
        assert_eq!((kind.bit_offset, kind.bitfield_size), (3, Some(5)));
        let flags = btf.member("outer", &["flags"]).unwrap();
        assert_eq!((flags.bit_offset, flags.bitfield_size), (0, Some(3)));
        assert!(matches!(
            btf.member_offset("outer", &["kind"]),
            Err(BtfError::Bitfield { bit_offset: 3, .. })
        ));
        let old = btf.member("outer", &["old"]).unwrap();
        assert_eq!((old.bit_offset, old.bitfield_size), (258, Some(4)));
    }

    #[test]
    fn errors_name_what_is_missing() {
        let btf = Btf::parse(&fixture()).unwrap();
        let e = btf.member_offset("outer", &["in", "nope"]).unwrap_err();
        assert_eq!(e.to_string(), "BTF: outer.in has no member nope");
        assert!(matches!(
            btf.member_offset("nostruct", &["a"]),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.member_offset("inner", &["a", "x"]),
            Err(BtfError::NotComposite { .. })
        ));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(Btf::parse(&[]), Err(BtfError::BadHeader)));
        assert!(matches!(Btf::parse(&[0u8; 24]), Err(BtfError::BadHeader)));
        let good = fixture();
        for cut in [30, good.len() - 1] {
            assert!(Btf::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        // a type record cut in the middle
        let mut b = Builder::new();
        b.int("u32", 4, 32);
        let mut bytes = b.bytes();
        bytes[12..16].copy_from_slice(&10u32.to_le_bytes()); // type_len 16 -> 10
        assert!(Btf::parse(&bytes).is_err());
        let mut unknown = Builder::new();
        unknown.push("x", 31, 0, false, 0, &[]);
        assert!(matches!(
            Btf::parse(&unknown.bytes()),
            Err(BtfError::UnknownKind { id: 1, kind: 31 })
        ));
    }

    #[test]
    fn big_endian_header_is_read() {
        // Same fixture, every u32/u16 word swapped.
        let le = fixture();
        let mut be = Vec::with_capacity(le.len());
        be.extend_from_slice(&MAGIC.to_be_bytes());
        be.extend([1, 0]);
        let types_end = 24 + u32::from_le_bytes(le[12..16].try_into().unwrap()) as usize;
        for w in le[4..types_end].chunks(4) {
            let v = u32::from_le_bytes(w.try_into().unwrap());
            be.extend_from_slice(&v.to_be_bytes());
        }
        be.extend_from_slice(&le[types_end..]);
        let btf = Btf::parse(&be).unwrap();
        assert_eq!(btf.member_offset("outer", &["in", "hi"]).unwrap(), 20);
    }

    /// The running kernel's vmlinux BTF: the socket fields whose layout has
    /// been the same on every 64-bit kernel since sock_common appeared.
    #[test]
    fn running_kernel_sock_offsets() {
        if !Path::new(VMLINUX).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{VMLINUX} missing under CI=true"
            );
            eprintln!("skipping: {VMLINUX} is missing (kernel without CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let btf = Btf::load().unwrap();
        assert!(btf.type_count() > 10_000, "{} types", btf.type_count());
        let o = SockOffsets::from_btf(&btf).unwrap();
        eprintln!("{o:?}");
        assert_eq!(btf.member_offset("sock", &["__sk_common"]).unwrap(), 0);
        assert_eq!(o.skc_daddr, 0);
        assert_eq!(o.skc_rcv_saddr, 4);
        assert_eq!(o.skc_dport, 12);
        assert_eq!(o.skc_num, 14);
        assert_eq!(o.skc_family, 16);
        assert_eq!(
            btf.member("sock", &["__sk_common", "skc_num"])
                .unwrap()
                .byte_size,
            2
        );
        assert_eq!(
            btf.member("sock", &["__sk_common", "skc_v6_daddr"])
                .unwrap()
                .byte_size,
            16
        );
        assert_eq!(
            btf.member("sock", &["__sk_common", "skc_net"])
                .unwrap()
                .byte_size,
            8
        );
        assert_eq!(btf.member("net", &["ns", "inum"]).unwrap().byte_size, 4);
        assert!(o.skc_net > o.skc_family && o.skc_net < btf.struct_size("sock_common").unwrap());
        assert!(o.skc_v6_daddr < o.skc_v6_rcv_saddr);
        assert!(o.net_ns_inum < btf.struct_size("net").unwrap());
        // sk_protocol is a plain u16 since 5.6, a bitfield before: either way found.
        let proto = btf.member("sock", &["sk_protocol"]).unwrap();
        assert!(proto.bit_offset > 8 * 16);
    }
}
