//! Function names of a stripped Go binary (`-ldflags "-s -w"`) from its
//! `.gopclntab` section, which the Go runtime needs and `-s -w` keeps: the
//! function table maps entry offsets from the text start to `_func`
//! records, whose name offsets index the function-name table. The header
//! layout read here is Go 1.18 and later (magic 0xfffffff0 / 0xfffffff1,
//! unchanged through 1.24); older tables are not read.

use object::{Object, ObjectKind, ObjectSection};

/// A parsed function table.
#[derive(Debug)]
pub struct GoTable {
    data: Vec<u8>,
    nfunc: usize,
    text_start: u64,
    funcname: usize,
    pcln: usize,
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

impl GoTable {
    /// The table of a 64-bit little-endian `.gopclntab` section.
    pub fn parse(data: Vec<u8>) -> Option<GoTable> {
        let magic = u32_at(&data, 0)?;
        if !matches!(magic, 0xffff_fff0 | 0xffff_fff1) || data.get(7) != Some(&8) {
            return None;
        }
        let word = |i: usize| u64_at(&data, 8 + 8 * i).map(|v| v as usize);
        let (nfunc, text_start, funcname, pcln) = (word(0)?, word(2)? as u64, word(3)?, word(7)?);
        // The function table: nfunc + 1 (entryoff, funcoff) pairs.
        data.get(pcln..pcln.checked_add((nfunc + 1).checked_mul(8)?)?)?;
        Some(GoTable {
            data,
            nfunc,
            text_start,
            funcname,
            pcln,
        })
    }

    /// The `.gopclntab` of an executable (ET_EXEC: addresses are link-time
    /// addresses) at `path`; None for other files or without the section.
    pub fn load(path: &str) -> Option<GoTable> {
        let bytes = crate::logged::io(std::fs::read(path), || path.to_string())?;
        let file = crate::logged::routine(object::File::parse(&*bytes), || {
            format!("{path}: not an object file")
        })?;
        if file.kind() != ObjectKind::Executable || !file.is_little_endian() || !file.is_64() {
            return None;
        }
        let section = file.section_by_name(".gopclntab")?;
        let data = crate::logged::ok(section.data(), || format!("{path}: .gopclntab"))?.to_vec();
        GoTable::parse(data)
    }

    /// The function holding `pc` and the offset of `pc` in it.
    pub fn lookup(&self, pc: u64) -> Option<(String, u64)> {
        let off = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        let entry = |i: usize| u32_at(&self.data, self.pcln + 8 * i);
        // The last entry marks the end of the text.
        if off >= entry(self.nfunc)? {
            return None;
        }
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if entry(mid)? <= off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let start = entry(lo)?;
        if start > off {
            return None;
        }
        let funcoff = u32_at(&self.data, self.pcln + 8 * lo + 4)? as usize;
        let func = self.pcln + funcoff;
        let name_off = u32_at(&self.data, func + 4)? as usize;
        let name = self.data.get(self.funcname + name_off..)?;
        let end = name.iter().position(|&b| b == 0)?;
        let name = std::str::from_utf8(&name[..end]).ok()?;
        (!name.is_empty()).then(|| (name.to_owned(), u64::from(off - start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn malformed_tables_are_refused() {
        assert!(GoTable::parse(Vec::new()).is_none());
        let mut h = vec![0u8; 72];
        h[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes());
        h[7] = 8;
        // nfunc 1000 with no room for its function table.
        h[8..16].copy_from_slice(&1000u64.to_le_bytes());
        assert!(GoTable::parse(h.clone()).is_none());
        h[7] = 4;
        assert!(GoTable::parse(h).is_none(), "32-bit tables are not read");
    }

    /// A Go program built with -ldflags "-s -w" (no symbol table, no DWARF)
    /// is named from its .gopclntab: main.main's own address.
    #[test]
    fn stripped_go_binary_is_named_from_gopclntab() {
        if Command::new("go").arg("version").output().is_err() {
            assert!(
                std::env::var_os("CI").is_none(),
                "go is missing (cargo xtask setup installs golang-go)"
            );
            eprintln!("skipping test - go is not installed");
            return;
        }
        let dir = crate::testutil::TempDir::new("gopclntab");
        let src = dir.0.join("main.go");
        std::fs::write(
            &src,
            "package main\n\nimport \"fmt\"\n\n//go:noinline\nfunc leakyDial(n int) int { return n * 7 }\n\n\
             func main() { fmt.Println(leakyDial(6)) }\n",
        )
        .unwrap();
        let bin = dir.0.join("stripped");
        let out = Command::new("go")
            .args(["build", "-ldflags", "-s -w", "-o"])
            .arg(&bin)
            .arg(&src)
            .env("GOCACHE", dir.0.join("cache"))
            .env("GOPATH", dir.0.join("gopath"))
            .env("GOFLAGS", "-mod=mod")
            .env("GO111MODULE", "off")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&bin).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        assert!(
            file.section_by_name(".symtab").is_none(),
            "-s -w leaves no symbol table"
        );
        let t = GoTable::load(bin.to_str().unwrap()).expect("a .gopclntab");
        // Every function's entry maps back to its own name.
        let main = (0..t.nfunc)
            .filter_map(|i| {
                let e = u32_at(&t.data, t.pcln + 8 * i)?;
                let (name, off) = t.lookup(t.text_start + u64::from(e) + 1)?;
                assert_eq!(off, 1, "{name}");
                Some(name)
            })
            .collect::<Vec<_>>();
        assert!(main.iter().any(|n| n == "main.main"), "{main:?}");
        assert!(main.iter().any(|n| n == "main.leakyDial"), "{main:?}");
        assert!(main.iter().any(|n| n == "runtime.main"), "{main:?}");
        assert!(t.lookup(0).is_none());
        assert!(t.lookup(u64::MAX).is_none());
    }
}
