//! A JPEG 2000 frame's header, checked before any decoder sees the frame.
//!
//! The decoder sizes its output from Rows/Columns but writes what the codestream's SIZ marker
//! says, so a codestream larger than the frame, or with more than one component, made
//! dicom-transfer-syntax-registry 0.10 index past its buffer (found by fuzzing). A codestream
//! whose size, components or sampling do not match the frame is refused with the reason, and
//! its size also bounds what the decoder may allocate.

/// The JP2 file signature box: some writers wrap the codestream in a JP2 file.
const JP2_SIGNATURE: [u8; 12] = [
    0, 0, 0, 0x0C, b'j', b'P', b' ', b' ', 0x0D, 0x0A, 0x87, 0x0A,
];

/// The codestream of a fragment: the fragment itself, or the `jp2c` box of a JP2 file.
fn codestream(frag: &[u8]) -> Result<&[u8], String> {
    if !frag.starts_with(&JP2_SIGNATURE) {
        return Ok(frag);
    }
    let mut rest = frag;
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as u64;
        let kind = &rest[4..8];
        let (header, len) = match len {
            0 => (8, rest.len() as u64),
            1 if rest.len() >= 16 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&rest[8..16]);
                (16, u64::from_be_bytes(b))
            }
            l => (8, l),
        };
        if len < header as u64 || len > rest.len() as u64 {
            return Err(format!(
                "JP2 box {:?} of {len} bytes overruns the fragment",
                kind
            ));
        }
        if kind == b"jp2c" {
            return Ok(&rest[header..len as usize]);
        }
        rest = &rest[len as usize..];
    }
    Err("JP2 file without a codestream (jp2c) box".into())
}

fn be16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks that a JPEG 2000 frame is a codestream of `cols` × `rows` samples in one component
/// of at most `bits` bits (at most 8 for a BINARY frame, which holds one byte per pixel).
pub fn check_frame(frag: &[u8], rows: u32, cols: u32, bits: u32) -> Result<(), String> {
    let cs = codestream(frag)?;
    // SOC, then SIZ: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz
    if cs.len() < 4 + 38 || cs[0..2] != [0xFF, 0x4F] || cs[2..4] != [0xFF, 0x51] {
        return Err("not a JPEG 2000 codestream (no SOC and SIZ markers)".into());
    }
    let siz = &cs[4..];
    let lsiz = be16(siz, 0) as usize;
    let comps = be16(siz, 36) as usize;
    if comps == 0 || lsiz != 38 + 3 * comps || siz.len() < lsiz {
        return Err(format!(
            "JPEG 2000 SIZ marker is malformed (length {lsiz}, {comps} components)"
        ));
    }
    let (x, y, xo, yo) = (be32(siz, 4), be32(siz, 8), be32(siz, 12), be32(siz, 16));
    let (xt, yt, xto, yto) = (be32(siz, 20), be32(siz, 24), be32(siz, 28), be32(siz, 32));
    if x <= xo || y <= yo || xt == 0 || yt == 0 || xto > xo || yto > yo {
        return Err(format!(
            "JPEG 2000 SIZ marker is inconsistent (image {x}x{y} from {xo},{yo}; tiles {xt}x{yt} from {xto},{yto})"
        ));
    }
    let (w, h) = (x - xo, y - yo);
    if (w, h) != (cols, rows) {
        return Err(format!(
            "the JPEG 2000 codestream is {w}x{h} pixels, Rows/Columns say {cols}x{rows}"
        ));
    }
    if comps != 1 {
        return Err(format!(
            "the JPEG 2000 codestream has {comps} components, a SEG frame has one"
        ));
    }
    let (ssiz, xr, yr) = (siz[38], siz[39], siz[40]);
    let depth = u32::from(ssiz & 0x7F) + 1;
    if xr != 1 || yr != 1 {
        return Err(format!("JPEG 2000 component subsampled ({xr}x{yr})"));
    }
    if depth > bits.max(8) {
        return Err(format!(
            "JPEG 2000 samples of {depth} bits do not fit BitsAllocated {bits}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal SOC + SIZ header of one component.
    fn header(w: u32, h: u32, comps: u16, depth: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0x4F, 0xFF, 0x51];
        v.extend((38 + 3 * comps).to_be_bytes());
        v.extend(0u16.to_be_bytes());
        for n in [w, h, 0, 0, w, h, 0, 0] {
            v.extend(n.to_be_bytes());
        }
        v.extend(comps.to_be_bytes());
        for _ in 0..comps {
            v.extend([depth - 1, 1, 1]);
        }
        v
    }

    #[test]
    fn sizes_components_and_depth_are_checked() {
        assert!(check_frame(&header(11, 13, 1, 8), 13, 11, 8).is_ok());
        assert!(check_frame(&header(11, 13, 1, 8), 13, 11, 1).is_ok());
        let e = check_frame(&header(12, 13, 1, 8), 13, 11, 8).unwrap_err();
        assert!(e.contains("12x13") && e.contains("11x13"), "{e}");
        assert!(check_frame(&header(11, 13, 3, 8), 13, 11, 8)
            .unwrap_err()
            .contains("3 components"));
        assert!(check_frame(&header(11, 13, 1, 12), 13, 11, 8)
            .unwrap_err()
            .contains("12 bits"));
        assert!(check_frame(&header(11, 13, 1, 12), 13, 11, 16).is_ok());
        assert!(check_frame(b"\xFF\x4F\xFF\x51", 13, 11, 8).is_err());
        assert!(check_frame(b"", 13, 11, 8).is_err());
    }

    #[test]
    fn a_jp2_file_is_read_through_its_codestream_box() {
        let cs = header(4, 4, 1, 8);
        let mut jp2 = JP2_SIGNATURE.to_vec();
        jp2.extend((8 + cs.len() as u32).to_be_bytes());
        jp2.extend(b"jp2c");
        jp2.extend(&cs);
        assert!(check_frame(&jp2, 4, 4, 8).is_ok());
        let mut bad = JP2_SIGNATURE.to_vec();
        bad.extend(1000u32.to_be_bytes());
        bad.extend(b"jp2c");
        assert!(check_frame(&bad, 4, 4, 8).unwrap_err().contains("overruns"));
    }
}
