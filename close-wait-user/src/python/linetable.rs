//! CPython 3.11+ location tables (`co_linetable`, PEP 657 format).
//!
//! Facts used (CPython's `Objects/locations.md`): the table is a sequence of
//! entries; the first byte of an entry has bit 7 set, bits 3-6 hold a code
//! and bits 0-2 the number of code units covered, minus one. The code says
//! how the line moves from the previous entry's line (starting at
//! `co_firstlineno`): 15 = no location (the line is not changed), 14 = long
//! form (signed varint line delta, then end-line delta, column, end column
//! as varints), 13 = signed varint line delta and no columns, 10-12 = line
//! delta `code - 10` and two column bytes, 0-9 = same line and one column
//! byte. Varints are little-endian groups of 6 bits, bit 6 set on all but
//! the last; a signed varint keeps the sign in its lowest bit.

/// The line of the code unit at index `unit` (instruction offset / 2), or
/// None when the table gives it no line or does not reach that far.
pub fn line_at(table: &[u8], firstlineno: i32, unit: u32) -> Option<u32> {
    let mut pos = 0usize;
    let mut start = 0u32;
    let mut line = i64::from(firstlineno);
    // One entry per code unit at most: bounded by the table length.
    while pos < table.len() {
        let first = table[pos];
        if first & 0x80 == 0 {
            return None; // not at an entry start: corrupt or misread table
        }
        pos += 1;
        let code = (first >> 3) & 0x0f;
        let len = u32::from(first & 7) + 1;
        let mut this_line = Some(line);
        match code {
            15 => this_line = None,
            14 => {
                line += svarint(table, &mut pos)?;
                this_line = Some(line);
                for _ in 0..3 {
                    varint(table, &mut pos)?;
                }
            }
            13 => {
                line += svarint(table, &mut pos)?;
                this_line = Some(line);
            }
            10..=12 => {
                line += i64::from(code - 10);
                this_line = Some(line);
                pos += 2;
            }
            _ => pos += 1,
        }
        let end = start + len;
        if unit < end {
            return this_line
                .and_then(|l| u32::try_from(l).ok())
                .filter(|&l| l > 0);
        }
        start = end;
    }
    None
}

fn varint(table: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let b = *table.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x3f) << shift;
        if b & 0x40 == 0 {
            return Some(value);
        }
        shift += 6;
        if shift > 60 {
            return None;
        }
    }
}

fn svarint(table: &[u8], pos: &mut usize) -> Option<i64> {
    let v = varint(table, pos)?;
    let mag = (v >> 1) as i64;
    Some(if v & 1 == 1 { -mag } else { mag })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables printed by CPython itself for small functions are checked in
    /// the integration tests (against real processes); these are built by
    /// hand from the format description.
    #[test]
    fn short_one_line_no_column_long_and_none_entries() {
        let table = [
            0x80 | (13 << 3),     // no columns, 1 unit: line delta varint
            0x02,                 // svarint +1 -> firstlineno + 1
            0x80 | (11 << 3) | 2, // one-line form, delta +1, 3 units
            0x04,
            0x08,
            0x80 | 1, // short form (same line), 2 units
            0x10,
            0x80 | (15 << 3), // no location, 1 unit
            0x80 | (14 << 3), // long form, 1 unit
            0x4a,             // svarint continuation: 0x0a | (0x01 << 6)
            0x01,             //   = 74 -> +37
            0x00,
            0x01,
            0x02,
            0x80 | (13 << 3), // no columns, 1 unit: -3
            0x07,
        ];
        let first = 10;
        assert_eq!(line_at(&table, first, 0), Some(11));
        for u in 1..4 {
            assert_eq!(line_at(&table, first, u), Some(12), "unit {u}");
        }
        assert_eq!(line_at(&table, first, 4), Some(12));
        assert_eq!(line_at(&table, first, 5), Some(12));
        assert_eq!(line_at(&table, first, 6), None, "no-location entry");
        assert_eq!(line_at(&table, first, 7), Some(49));
        assert_eq!(line_at(&table, first, 8), Some(46));
        assert_eq!(line_at(&table, first, 9), None, "past the end");
    }

    #[test]
    fn truncated_or_corrupt_tables_give_none() {
        assert_eq!(line_at(&[], 1, 0), None);
        assert_eq!(line_at(&[0x80 | (13 << 3)], 1, 0), None);
        assert_eq!(line_at(&[0x80 | (14 << 3), 0x40], 1, 0), None);
        assert_eq!(line_at(&[0x01, 0x02], 1, 0), None);
    }
}
