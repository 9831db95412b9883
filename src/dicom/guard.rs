//! A bounded pre-scan of a Part-10 stream, run before the full parser sees it.
//!
//! dicom-object trusts declared lengths (a 4 GiB length is a 4 GiB allocation) and recurses once
//! per nested sequence (10,000 nested sequences overflow the stack and abort the process, which
//! no `catch_unwind` can stop). This walk checks, without allocating values:
//! - every defined length fits in what is left of the file;
//! - sequences nest at most [`MAX_DEPTH`] deep;
//! - the element stream is well formed to its end (Pixel Data is walked, not read).
//!
//! It understands explicit and implicit VR little endian, explicit VR big endian, and deflated
//! data sets (inflated under a cap first); the meta group is always explicit little endian.

use std::io::{Read, Seek, SeekFrom};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::uids;
use dicom_dictionary_std::StandardDataDictionary;

/// How deep sequences may nest. Real SEGs nest 4 or 5 deep.
pub const MAX_DEPTH: usize = 64;

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQ_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);
const UNDEFINED: u32 = 0xFFFF_FFFF;

struct Walker<R> {
    r: R,
    pos: u64,
    len: u64,
    /// The data set's byte order (the meta group is always little endian).
    big: bool,
    /// End the walk at the top-level Pixel Data element (a header read, whose parser stops
    /// there too, and is given no byte beyond it).
    stop_at_pixels: bool,
}

fn bad(msg: String) -> String {
    msg
}

impl<R: Read + Seek> Walker<R> {
    fn read<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| bad(format!("truncated at byte {}", self.pos)))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn skip(&mut self, n: u64, what: Tag) -> Result<(), String> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(bad(format!(
                "element {what} declares {n} bytes but only {} are left in the file",
                self.len.saturating_sub(self.pos)
            )));
        }
        self.r
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| e.to_string())?;
        self.pos += n;
        Ok(())
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn header(&mut self, explicit: bool) -> Result<(Tag, Option<VR>, u32), String> {
        let t = self.read::<4>()?;
        let tag = Tag(self.u16([t[0], t[1]]), self.u16([t[2], t[3]]));
        if tag.group() == 0xFFFE || !explicit {
            let l = self.read::<4>()?;
            return Ok((tag, None, self.u32(l)));
        }
        let vr_bytes = self.read::<2>()?;
        let vr = VR::from_binary(vr_bytes);
        let long = matches!(
            vr,
            Some(
                VR::OB
                    | VR::OD
                    | VR::OF
                    | VR::OL
                    | VR::OV
                    | VR::OW
                    | VR::SQ
                    | VR::SV
                    | VR::UC
                    | VR::UN
                    | VR::UR
                    | VR::UT
                    | VR::UV
            )
        );
        let l = if long {
            self.read::<2>()?;
            let b = self.read::<4>()?;
            self.u32(b)
        } else if vr.is_none() {
            return Err(bad(format!(
                "element {tag} at byte {} has an unknown VR {:?}",
                self.pos - 6,
                String::from_utf8_lossy(&vr_bytes)
            )));
        } else {
            let b = self.read::<2>()?;
            u32::from(self.u16(b))
        };
        Ok((tag, vr, l))
    }

    fn is_sequence(tag: Tag, vr: Option<VR>) -> bool {
        match vr {
            Some(v) => v == VR::SQ,
            None => StandardDataDictionary
                .by_tag(tag)
                .is_some_and(|e| e.vr().relaxed() == VR::SQ),
        }
    }

    /// Walks elements until `end` (a byte position) or, with `end == None`, until a delimiter.
    /// The whole data set is walked, Pixel Data and what follows it included (a full read parses
    /// it all), but values are skipped, never read.
    fn data_set(&mut self, explicit: bool, end: Option<u64>, depth: usize) -> Result<bool, String> {
        let mut last: Option<Tag> = None;
        loop {
            if let Some(e) = end {
                if self.pos >= e {
                    return Ok(false);
                }
            } else if self.pos >= self.len {
                return Err(bad("an undefined-length item never ends".into()));
            }
            if end.is_none() && self.pos >= self.len {
                return Ok(false);
            }
            let (tag, vr, l) = self.header(explicit)?;
            if tag == ITEM_END || tag == SEQ_END {
                if depth == 0 {
                    // the parser would read on past it: so must the guard, so it refuses
                    return Err(bad(format!(
                        "a delimiter {tag} outside any sequence at byte {}",
                        self.pos - 8
                    )));
                }
                return Ok(true);
            }
            // a data set's elements come in ascending order, and never from the command (0000)
            // or file meta (0002) groups: the parser does odd things with such streams (found
            // by fuzzing: a 3 GB allocation)
            if tag.group() == 0x0000 || tag.group() == 0x0002 {
                return Err(bad(format!(
                    "element {tag} of a command or meta group inside the data set at byte {}",
                    self.pos - 8
                )));
            }
            if last.is_some_and(|t| t >= tag) {
                return Err(bad(format!(
                    "element {tag} at byte {} is out of order (after {})",
                    self.pos - 8,
                    last.unwrap_or(tag)
                )));
            }
            last = Some(tag);
            if tag == PIXEL_DATA && depth == 0 && self.stop_at_pixels {
                return Ok(false);
            }
            if tag == PIXEL_DATA && l == UNDEFINED {
                // encapsulated: items of raw bytes (fragments); walked, never read
                self.fragments(tag)?;
                continue;
            }
            if Self::is_sequence(tag, vr) || l == UNDEFINED {
                if depth + 1 > MAX_DEPTH {
                    return Err(bad(format!(
                        "sequences nested more than {MAX_DEPTH} deep (at {tag}, byte {})",
                        self.pos
                    )));
                }
                self.sequence(explicit, l, depth + 1, tag)?;
            } else {
                // the parser reads binary values in whole units: a length that is not a
                // multiple of the unit leaves it misaligned, reading garbage as lengths (found
                // by fuzzing: a 1.7 GB read from an FL element of length 2)
                let vr =
                    vr.or_else(|| StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()));
                if let Some(size) = vr.and_then(unit) {
                    if l % size != 0 {
                        return Err(bad(format!(
                            "element {tag} ({}) declares {l} bytes, not a multiple of {size}",
                            vr.map(|v| v.to_string()).unwrap_or_default()
                        )));
                    }
                }
                self.skip(u64::from(l), tag)?;
            }
        }
    }

    /// The fragments of encapsulated Pixel Data: items whose values are raw bytes.
    fn fragments(&mut self, tag: Tag) -> Result<(), String> {
        loop {
            if self.pos >= self.len {
                return Err(bad(format!("the fragments of {tag} never end")));
            }
            let t = self.read::<4>()?;
            let t = Tag(self.u16([t[0], t[1]]), self.u16([t[2], t[3]]));
            let l = self.read::<4>()?;
            let l = self.u32(l);
            match t {
                SEQ_END => return Ok(()),
                ITEM if l != UNDEFINED => self.skip(u64::from(l), tag)?,
                other => {
                    return Err(bad(format!(
                        "the fragments of {tag} hold {other} where a fragment was expected"
                    )))
                }
            }
        }
    }

    fn sequence(&mut self, explicit: bool, l: u32, depth: usize, tag: Tag) -> Result<(), String> {
        let end = if l == UNDEFINED {
            None
        } else {
            if u64::from(l) > self.len.saturating_sub(self.pos) {
                return Err(bad(format!(
                    "sequence {tag} declares {l} bytes but only {} are left in the file",
                    self.len.saturating_sub(self.pos)
                )));
            }
            Some(self.pos + u64::from(l))
        };
        loop {
            if let Some(e) = end {
                if self.pos >= e {
                    return Ok(());
                }
            }
            if self.pos >= self.len {
                return Err(bad(format!("sequence {tag} never ends")));
            }
            let (t, _, il) = self.header(explicit)?;
            match t {
                SEQ_END => return Ok(()),
                ITEM if il == UNDEFINED => {
                    let closed = self.data_set(explicit, None, depth)?;
                    if !closed {
                        return Err(bad(format!("an item of {tag} never ends")));
                    }
                }
                ITEM => {
                    if u64::from(il) > self.len.saturating_sub(self.pos) {
                        return Err(bad(format!(
                            "an item of {tag} declares {il} bytes but only {} are left",
                            self.len.saturating_sub(self.pos)
                        )));
                    }
                    let item_end = self.pos + u64::from(il);
                    self.data_set(explicit, Some(item_end), depth)?;
                    if self.pos != item_end {
                        return Err(bad(format!("an item of {tag} overruns its length")));
                    }
                }
                other => {
                    return Err(bad(format!(
                        "sequence {tag} holds {other} where an item was expected"
                    )))
                }
            }
        }
    }
}

/// Largest inflated data set a deflated file may hold.
const MAX_INFLATED: u64 = 64 * 1024 * 1024;

/// The value unit of binary VRs, whose values the parser reads in whole units.
fn unit(vr: VR) -> Option<u32> {
    match vr {
        VR::SS | VR::US | VR::OW => Some(2),
        VR::FL | VR::SL | VR::UL | VR::AT | VR::OF | VR::OL => Some(4),
        VR::FD | VR::SV | VR::UV | VR::OD | VR::OV => Some(8),
        _ => None,
    }
}

/// Pre-scans a Part-10 stream positioned right after `DICM` (offset 132). `len` is the total
/// length of the file. Errors name what is wrong and where.
pub fn prescan<R: Read + Seek>(r: R, len: u64) -> Result<(), String> {
    walk(r, len, false)
}

/// [`prescan`] up to the top-level Pixel Data element (included), for a header read: the
/// stream is read no further.
pub fn prescan_header<R: Read + Seek>(r: R, len: u64) -> Result<(), String> {
    walk(r, len, true)
}

fn walk<R: Read + Seek>(r: R, len: u64, stop_at_pixels: bool) -> Result<(), String> {
    let mut w = Walker {
        r,
        pos: 132,
        len,
        big: false,
        stop_at_pixels,
    };
    // the meta group: explicit VR little endian, group 0002 only
    let mut ts = String::new();
    loop {
        let mut peek = [0u8; 2];
        if w.r.read_exact(&mut peek).is_err() {
            return Err("no data set after the file meta group".into());
        }
        w.r.seek(SeekFrom::Current(-2)).map_err(|e| e.to_string())?;
        if u16::from_le_bytes(peek) != 0x0002 {
            break;
        }
        let (tag, _, l) = w.header(true)?;
        if l == UNDEFINED || u64::from(l) > 1024 {
            return Err(format!("file meta element {tag} declares {l} bytes"));
        }
        if tag == Tag(0x0002, 0x0010) {
            let mut v = vec![0u8; l as usize];
            w.r.read_exact(&mut v)
                .map_err(|_| "truncated file meta group".to_string())?;
            w.pos += u64::from(l);
            ts = String::from_utf8_lossy(&v)
                .trim_end_matches(['\0', ' '])
                .to_string();
        } else {
            w.skip(u64::from(l), tag)?;
        }
    }
    match ts.as_str() {
        uids::IMPLICIT_VR_LITTLE_ENDIAN => w.data_set(false, Some(len), 0).map(|_| ()),
        #[allow(deprecated)] // retired, but files written with it still exist
        uids::EXPLICIT_VR_BIG_ENDIAN => {
            w.big = true;
            w.data_set(true, Some(len), 0).map(|_| ())
        }
        uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            // deflated: inflate (capped) and walk what the parser will see
            let mut inflated = Vec::new();
            flate2::read::DeflateDecoder::new(&mut w.r)
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut inflated)
                .map_err(|e| format!("deflated data set: {e}"))?;
            if inflated.len() as u64 > MAX_INFLATED {
                return Err(format!(
                    "deflated data set inflates past {MAX_INFLATED} bytes"
                ));
            }
            let n = inflated.len() as u64;
            let mut inner = Walker {
                r: std::io::Cursor::new(inflated),
                pos: 0,
                len: n,
                big: false,
                stop_at_pixels: false,
            };
            inner.data_set(true, Some(n), 0).map(|_| ())
        }
        // explicit VR little endian and every encapsulated syntax
        _ => w.data_set(true, Some(len), 0).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn meta(ts: &str) -> Vec<u8> {
        let mut v = vec![0u8; 128];
        v.extend_from_slice(b"DICM");
        let mut ts = ts.as_bytes().to_vec();
        if ts.len() % 2 == 1 {
            ts.push(0);
        }
        v.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        v.extend_from_slice(&(ts.len() as u16).to_le_bytes());
        v.extend_from_slice(&ts);
        v
    }

    fn el(v: &mut Vec<u8>, g: u16, e: u16, vr: &[u8; 2], long: bool, len: u32, value: &[u8]) {
        v.extend_from_slice(&g.to_le_bytes());
        v.extend_from_slice(&e.to_le_bytes());
        v.extend_from_slice(vr);
        if long {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&len.to_le_bytes());
        } else {
            v.extend_from_slice(&(len as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
    }

    fn scan(v: &[u8]) -> Result<(), String> {
        let mut c = Cursor::new(v);
        c.set_position(132);
        prescan(c, v.len() as u64)
    }

    #[test]
    fn a_plain_data_set_passes() {
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x0020, 0x000E, b"UI", false, 6, b"1.2.3\0");
        el(&mut v, 0x7FE0, 0x0010, b"OB", true, 4, b"\0\0\0\0");
        assert_eq!(scan(&v), Ok(()));
    }

    #[test]
    fn huge_declared_lengths_are_refused_without_allocating() {
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x0029, 0x0010, b"UN", true, 0xFFFF_FFF0, b"abcd");
        let e = scan(&v).unwrap_err();
        assert!(e.contains("declares 4294967280 bytes"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut v = meta("1.2.840.10008.1.2.1");
        for _ in 0..10_000 {
            el(&mut v, 0x0008, 0x1115, b"SQ", true, UNDEFINED, b"");
            v.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let e = scan(&v).unwrap_err();
        assert!(e.contains("nested more than 64 deep"), "{e}");
    }

    #[test]
    fn never_ending_items_are_refused() {
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x0008, 0x1115, b"SQ", true, UNDEFINED, b"");
        v.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        el(&mut v, 0x0020, 0x000E, b"UI", false, 6, b"1.2.3\0");
        assert!(scan(&v).is_err());
    }

    #[test]
    fn a_stray_delimiter_does_not_end_the_walk_early() {
        // found by fuzzing: a top-level delimiter ended the walk, the parser read on into a
        // 3.7 GB declared length
        let mut v = meta("1.2.840.10008.1.2");
        v.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        v.extend_from_slice(&[0x08, 0x00, 0x00, 0x01, 0xF0, 0xFF, 0xFF, 0xDD]);
        assert!(scan(&v).is_err());
    }

    #[test]
    fn elements_after_pixel_data_are_checked_too() {
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x7FE0, 0x0010, b"OB", true, 4, b"\0\0\0\0");
        el(&mut v, 0xFFFC, 0xFFFC, b"OB", true, 0xFFFF_0000, b"");
        assert!(scan(&v).unwrap_err().contains("declares"));
    }

    #[test]
    fn command_groups_and_disorder_are_refused() {
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x0020, 0x000E, b"UI", false, 6, b"1.2.3\0");
        el(&mut v, 0x0000, 0x0000, b"UL", false, 4, b"\0\0\0\0");
        assert!(scan(&v).unwrap_err().contains("command or meta group"));
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x0020, 0x000E, b"UI", false, 6, b"1.2.3\0");
        el(&mut v, 0x0008, 0x0016, b"UI", false, 6, b"1.2.3\0");
        assert!(scan(&v).unwrap_err().contains("out of order"));
    }

    #[test]
    fn binary_values_must_fill_whole_units() {
        let mut v = meta("1.2.840.10008.1.2.1");
        el(&mut v, 0x0062, 0x0004, b"FL", false, 2, b"\x0c\0");
        assert!(scan(&v).unwrap_err().contains("not a multiple of 4"));
    }

    #[test]
    fn big_endian_lengths_are_checked_too() {
        // found by fuzzing: a big-endian data set went unchecked to a 4 GiB allocation
        let mut v = meta("1.2.840.10008.1.2.2");
        v.extend_from_slice(&[
            0x00, 0x29, 0x00, 0x10, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0x00,
        ]);
        assert!(scan(&v).unwrap_err().contains("declares"));
    }

    #[test]
    fn deflated_data_sets_are_inflated_and_checked() {
        use std::io::Write;
        let mut inner = Vec::new();
        el(
            &mut inner,
            0x0029,
            0x0010,
            b"UN",
            true,
            0xFFFF_FFF0,
            b"abcd",
        );
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&inner).unwrap();
        let mut v = meta("1.2.840.10008.1.2.1.99");
        v.extend_from_slice(&z.finish().unwrap());
        assert!(scan(&v).unwrap_err().contains("declares"));
        // a bomb: a few kilobytes that inflate past the cap
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..80 {
            z.write_all(&zeros).unwrap();
        }
        let mut v = meta("1.2.840.10008.1.2.1.99");
        v.extend_from_slice(&z.finish().unwrap());
        assert!(scan(&v).unwrap_err().contains("inflates past"));
    }

    #[test]
    fn implicit_vr_sequences_are_found_by_the_dictionary() {
        let mut v = meta("1.2.840.10008.1.2");
        // (0008,1115) ReferencedSeriesSequence, implicit VR, defined length nested 100 deep
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..100 {
            let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
            item.extend_from_slice(&(inner.len() as u32 + 8).to_le_bytes());
            let mut sq = vec![0x08, 0x00, 0x15, 0x11];
            sq.extend_from_slice(&(inner.len() as u32).to_le_bytes());
            sq.extend_from_slice(&inner);
            item.extend_from_slice(&sq);
            inner = item;
        }
        let mut top = vec![0x08, 0x00, 0x15, 0x11];
        top.extend_from_slice(&(inner.len() as u32).to_le_bytes());
        top.extend_from_slice(&inner);
        v.extend_from_slice(&top);
        let e = scan(&v).unwrap_err();
        assert!(e.contains("nested more than"), "{e}");
    }
}
