//! A small, bounded decoder for RLE Lossless frames (DICOM PS3.5 Annex G), for the SEGs OHIF
//! writes: label maps (8 or 16 bits) and bitmaps (1 bit).
//!
//! A frame is one fragment: a 64-byte header of 16 little-endian u32 (the segment count, 1 to
//! 15, then each segment's offset), then the segments, each a PackBits-encoded byte plane. For
//! 8 bits there is one segment, for 16 bits two (the high bytes, then the low bytes). For a
//! 1-bit frame, dcmjs (through @cornerstonejs/adapters 5.x, OHIF 3.x) writes one segment whose
//! decoded bytes are the frame bit-packed on its own (LSB first, from bit 0, the last byte
//! padded); a plane of one byte per pixel is accepted too.
//!
//! Every output is bounded by the frame's size (rows × columns × bytes per sample), never by
//! what the header claims, and grows only as decoded bytes appear: PackBits expands two input
//! bytes into at most 128, so a hostile fragment cannot make it allocate more than its own size
//! allows.

/// A decoded frame, one entry per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One byte per pixel (8 bits, or a 1-bit frame unpacked to 0/1).
    U8(Vec<u8>),
    /// One sample per pixel (16 bits).
    U16(Vec<u16>),
}

impl Frame {
    pub fn len(&self) -> usize {
        match self {
            Frame::U8(v) => v.len(),
            Frame::U16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of every pixel, widened.
    pub fn values(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            Frame::U8(v) => Box::new(v.iter().map(|&b| u32::from(b))),
            Frame::U16(v) => Box::new(v.iter().map(|&b| u32::from(b))),
        }
    }
}

/// The segment offsets of an RLE frame header, checked: a count of 1..=15, the first segment
/// right after the header, offsets strictly increasing and inside the fragment. Each returned
/// range is one segment's encoded bytes.
pub fn segments(fragment: &[u8]) -> Result<Vec<std::ops::Range<usize>>, String> {
    if fragment.len() < 64 {
        return Err(format!(
            "RLE fragment of {} bytes is shorter than its 64-byte header",
            fragment.len()
        ));
    }
    let word = |i: usize| {
        let b = &fragment[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
    };
    let count = word(0);
    if !(1..=15).contains(&count) {
        return Err(format!(
            "RLE header names {count} segments (1 to 15 allowed)"
        ));
    }
    let offsets: Vec<usize> = (1..=count).map(word).collect();
    if offsets[0] != 64 {
        return Err(format!(
            "RLE segment 1 starts at byte {}, not right after the 64-byte header",
            offsets[0]
        ));
    }
    let mut out = Vec::with_capacity(count);
    for (i, &start) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(fragment.len());
        if start >= fragment.len() || end > fragment.len() || end <= start {
            return Err(format!(
                "RLE segment {} offsets {start}..{end} do not lie, increasing, inside the {}-byte fragment",
                i + 1,
                fragment.len()
            ));
        }
        out.push(start..end);
    }
    Ok(out)
}

/// Decodes one PackBits segment, stopping at `cap` bytes. A run cut by the end of the input
/// yields what is there (an odd segment is padded with one byte to an even length).
pub fn packbits(input: &[u8], cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() && out.len() < cap {
        let h = input[i] as i8;
        i += 1;
        if h >= 0 {
            let n = (h as usize + 1).min(input.len() - i).min(cap - out.len());
            out.extend_from_slice(&input[i..i + n]);
            i += h as usize + 1;
        } else if h != -128 {
            let Some(&v) = input.get(i) else { break };
            i += 1;
            let n = (1 - isize::from(h)) as usize;
            let n = n.min(cap - out.len());
            out.resize(out.len() + n, v);
        }
    }
    out
}

/// Decodes one RLE Lossless frame of `rows` × `cols` pixels with `bits` bits allocated
/// (1, 8 or 16; one sample per pixel).
pub fn decode_frame(fragment: &[u8], rows: usize, cols: usize, bits: u32) -> Result<Frame, String> {
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| format!("frame size {rows}x{cols} overflows"))?;
    let segs = segments(fragment)?;
    let want = match bits {
        1 | 8 => 1,
        16 => 2,
        b => return Err(format!("RLE with BitsAllocated {b} is not supported")),
    };
    if segs.len() != want {
        return Err(format!(
            "RLE header names {} segments; BitsAllocated {bits} with one sample per pixel needs {want}",
            segs.len()
        ));
    }
    let plane = |k: usize| packbits(&fragment[segs[k].clone()], n);
    match bits {
        1 => {
            let p = plane(0);
            let packed = n.div_ceil(8);
            if p.len() == n {
                Ok(Frame::U8(p.into_iter().map(|b| u8::from(b != 0)).collect()))
            } else if p.len() == packed || p.len() == packed + 1 {
                Ok(Frame::U8(
                    (0..n).map(|i| (p[i / 8] >> (i % 8)) & 1).collect(),
                ))
            } else {
                Err(format!(
                    "RLE 1-bit segment decodes to {} bytes; {rows}x{cols} needs {packed} (bit-packed) or {n}",
                    p.len()
                ))
            }
        }
        8 => {
            let p = plane(0);
            if p.len() != n {
                return Err(format!(
                    "RLE segment decodes to {} bytes, {rows}x{cols} needs {n}",
                    p.len()
                ));
            }
            Ok(Frame::U8(p))
        }
        _ => {
            let (hi, lo) = (plane(0), plane(1));
            if hi.len() != n || lo.len() != n {
                return Err(format!(
                    "RLE segments decode to {} and {} bytes, {rows}x{cols} needs {n} each",
                    hi.len(),
                    lo.len()
                ));
            }
            Ok(Frame::U16(
                hi.iter()
                    .zip(&lo)
                    .map(|(&h, &l)| u16::from_be_bytes([h, l]))
                    .collect(),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain PackBits encoder (literal runs of up to 128, replicate runs of 2 to 128), for
    /// round trips.
    pub(crate) fn encode(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let mut run = 1;
            while i + run < data.len() && run < 128 && data[i + run] == data[i] {
                run += 1;
            }
            if run >= 2 {
                out.push((257 - run) as u8);
                out.push(data[i]);
                i += run;
                continue;
            }
            let start = i;
            i += 1;
            while i < data.len()
                && i - start < 128
                && !(i + 1 < data.len() && data[i + 1] == data[i])
            {
                i += 1;
            }
            out.push((i - start - 1) as u8);
            out.extend_from_slice(&data[start..i]);
        }
        out
    }

    pub(crate) fn fragment(planes: &[&[u8]]) -> Vec<u8> {
        let enc: Vec<Vec<u8>> = planes
            .iter()
            .map(|p| {
                let mut e = encode(p);
                if e.len() % 2 == 1 {
                    e.push(0);
                }
                e
            })
            .collect();
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(&(enc.len() as u32).to_le_bytes());
        let mut off = 64u32;
        for (k, e) in enc.iter().enumerate() {
            header[4 + 4 * k..8 + 4 * k].copy_from_slice(&off.to_le_bytes());
            off += e.len() as u32;
        }
        header
            .into_iter()
            .chain(enc.into_iter().flatten())
            .collect()
    }

    #[test]
    fn packbits_runs_literals_and_noops() {
        // 2 literal bytes, a run of 3, a no-op, a run of 128
        let enc = [1, 7, 8, 0xFE, 9, 0x80, 0x81, 4];
        let mut want = vec![7, 8, 9, 9, 9];
        want.extend([4; 128]);
        assert_eq!(packbits(&enc, 1000), want);
        // capped, and a literal cut by the end of the input
        assert_eq!(packbits(&enc, 4), vec![7, 8, 9, 9]);
        assert_eq!(packbits(&[5, 1, 2], 100), vec![1, 2]);
        assert_eq!(packbits(&[0xFF], 100), Vec::<u8>::new());
    }

    #[test]
    fn round_trips_8_and_16_bits() {
        let data: Vec<u8> = (0..13 * 13).map(|i| ((i / 7) % 3) as u8).collect();
        let f = fragment(&[&data]);
        assert_eq!(
            decode_frame(&f, 13, 13, 8).unwrap(),
            Frame::U8(data.clone())
        );
        let wide: Vec<u16> = (0..6 * 5).map(|i| (i * 997) as u16).collect();
        let hi: Vec<u8> = wide.iter().map(|v| (v >> 8) as u8).collect();
        let lo: Vec<u8> = wide.iter().map(|v| *v as u8).collect();
        let f = fragment(&[&hi, &lo]);
        assert_eq!(decode_frame(&f, 6, 5, 16).unwrap(), Frame::U16(wide));
        // the segment count must fit the bits
        assert!(decode_frame(&f, 6, 5, 8).unwrap_err().contains("needs 1"));
    }

    #[test]
    fn one_bit_frames_bit_packed_or_per_byte() {
        // 13x13 = 169 pixels: 22 packed bytes, the last one padded
        let px: Vec<u8> = (0..169).map(|i| u8::from(i % 5 == 0 || i == 168)).collect();
        let mut packed = vec![0u8; 22];
        for (i, b) in px.iter().enumerate() {
            packed[i / 8] |= b << (i % 8);
        }
        assert_eq!(
            decode_frame(&fragment(&[&packed]), 13, 13, 1).unwrap(),
            Frame::U8(px.clone())
        );
        assert_eq!(
            decode_frame(&fragment(&[&px]), 13, 13, 1).unwrap(),
            Frame::U8(px.clone())
        );
        let e = decode_frame(&fragment(&[&packed[..20]]), 13, 13, 1).unwrap_err();
        assert!(e.contains("needs 22"), "{e}");
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A 64-byte header naming `offsets`, as hex, followed by `body` (hex).
    fn with_header(offsets: &[u32], body: &str) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&(offsets.len() as u32).to_le_bytes());
        for (k, o) in offsets.iter().enumerate() {
            h[4 + 4 * k..8 + 4 * k].copy_from_slice(&o.to_le_bytes());
        }
        h.extend(unhex(body));
        h
    }

    /// Frames encoded by the real OHIF writer: `encodeFrameToRle` of @cornerstonejs/adapters
    /// 5.6.8 (the code path of OHIF 3.13's "Store segmentation", over dcmjs 0.52.0), run in
    /// node on the frames rebuilt here.
    #[test]
    fn frames_written_by_ohifs_encoder_decode_to_what_it_was_given() {
        // 13x13 bitmap: a rectangle and the last pixel (columns % 8 != 0: one PackBits run
        // over the whole packed frame)
        let mut bin13 = vec![0u8; 169];
        for r in 2..9 {
            for c in 3..8 {
                bin13[r * 13 + c] = 1;
            }
        }
        bin13[168] = 1;
        let f = with_header(&[64], "fe000ae0037c800ff0013ec007f8fa000001");
        assert_eq!(decode_frame(&f, 13, 13, 1).unwrap(), Frame::U8(bin13));
        // 16x16 bitmap (columns % 8 == 0: PackBits row by row of the packed bytes)
        let bin16: Vec<u8> = (0..256)
            .map(|i| u8::from(i % 7 == 0 || (41..90).contains(&i)))
            .collect();
        let f = with_header(
            &[64],
            "0181400120100108feffffffff01ff0b010402018140012010010804010281014020011008010402018140012010",
        );
        assert_eq!(decode_frame(&f, 16, 16, 1).unwrap(), Frame::U8(bin16));
        // 8-bit label map, 6x5
        let lm8: Vec<u8> = (0..30).map(|i| [0, 0, 1, 1, 1, 2, 0, 3][i % 8]).collect();
        let f = with_header(
            &[64],
            "ff00fe0102020003ff00fe010102000003ff00ff010401020003000000fe01000200",
        );
        assert_eq!(decode_frame(&f, 6, 5, 8).unwrap(), Frame::U8(lm8));
        // 16-bit label map: two segments, the high bytes first
        let lm16: Vec<u16> = (0..30)
            .map(|i| [0, 0, 1, 1, 300, 300, 0, 2][i % 8])
            .collect();
        let f = with_header(
            &[64, 88],
            "fd0000010001fd00ff00ff010000fc00ff01fe00fe00ff01ff00ff01002c022c0002ff00ff01ff2c00000002ff00ff01ff2c020002000000ff01ff2c",
        );
        assert_eq!(decode_frame(&f, 6, 5, 16).unwrap(), Frame::U16(lm16));
    }

    #[test]
    fn bad_headers_are_refused() {
        let good = fragment(&[&[1, 2, 3, 4]]);
        assert!(segments(&good[..63])
            .unwrap_err()
            .contains("64-byte header"));
        let mut h = good.clone();
        h[0] = 0;
        assert!(segments(&h).unwrap_err().contains("0 segments"));
        h[0] = 16;
        assert!(segments(&h).unwrap_err().contains("16 segments"));
        let mut h = good.clone();
        h[4] = 60;
        assert!(segments(&h).unwrap_err().contains("right after"));
        // two segments, the second before the first
        let mut h = fragment(&[&[1, 2], &[3, 4]]);
        h[8..12].copy_from_slice(&10u32.to_le_bytes());
        assert!(segments(&h).unwrap_err().contains("increasing"));
        // an offset past the end
        let mut h = fragment(&[&[1, 2], &[3, 4]]);
        h[8..12].copy_from_slice(&9999u32.to_le_bytes());
        assert!(segments(&h).unwrap_err().contains("inside"));
        // a short frame
        let e = decode_frame(&fragment(&[&[1, 2, 3]]), 2, 2, 8).unwrap_err();
        assert!(e.contains("needs 4"), "{e}");
    }

    /// cargo-fuzz is not on every machine: mutated fragments through the fuzz target's body,
    /// on every test run (a decoded frame always has rows × columns pixels).
    #[test]
    fn mutated_fragments_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let bin: Vec<u8> = (0..169).map(|i| u8::from(i % 3 == 0)).collect();
        let seeds = [
            fragment(&[&bin]),
            fragment(&[&[7u8; 40]]),
            fragment(&[&[1, 2, 3, 4, 5, 6], &[9, 9, 9, 9, 9, 9]]),
        ];
        for round in 0..20_000 {
            let mut d = seeds[round % seeds.len()].clone();
            for _ in 0..(next() % 6) {
                let i = (next() as usize) % d.len();
                d[i] = next() as u8;
            }
            if next() % 4 == 0 {
                d.truncate((next() as usize) % (d.len() + 1));
            }
            let mut input = vec![(next() % 4) as u8, (next() % 64) as u8, (next() % 64) as u8];
            input.push(next() as u8);
            input.extend(d);
            crate::fuzz_targets::rle(&input);
        }
    }

    #[test]
    fn a_huge_claimed_size_allocates_only_what_decodes() {
        // a replicate run of 128, claimed 65535x65535: decoding stops at the input's end
        let f = fragment(&[&[0u8; 128]]);
        let e = decode_frame(&f, 65535, 65535, 8).unwrap_err();
        assert!(e.contains("decodes to 128 bytes"), "{e}");
    }
}
