//! Decoding a SEG instance's pixel data and counting voxels, for the quality gate.
//!
//! - Native BINARY frames are unpacked here, not by dicom-pixeldata: the standard packs them
//!   back to back (LSB first), so a frame starts mid-byte when rows*cols is not a multiple of 8,
//!   which dicom-pixeldata 0.10 decodes wrongly. OHIF's uncompressed bitmap SEGs pad each frame
//!   to a whole byte instead; the Pixel Data length tells the two apart (see [`binary_layout`]).
//! - RLE Lossless frames (OHIF's label maps and bitmaps) are decoded by [`super::rle`].
//! - Other encapsulated frames (JPEG 2000) are decoded one at a time by dicom-pixeldata.
//!
//! Nothing here allocates more than the bytes present allow, and no input makes it panic.

use std::collections::BTreeMap;

use dicom_dictionary_std::tags;
use dicom_dictionary_std::uids::{self, RLE_LOSSLESS};
use dicom_object::mem::InMemDicomObject;
use dicom_object::DefaultDicomObject;

use super::reader::text;
use super::rle;

/// JPEG 2000 (lossless only, and lossy), and High-Throughput JPEG 2000.
const J2K: [&str; 5] = [
    uids::JPEG2000_LOSSLESS,
    uids::JPEG2000,
    uids::HTJ2K_LOSSLESS,
    uids::HTJ2K_LOSSLESS_RPCL,
    uids::HTJ2K,
];

/// One frame's place, from the per-frame functional groups.
#[derive(Debug, Clone, Default)]
pub struct FrameInfo {
    pub segment: Option<u32>,
    pub sources: Vec<String>,
    pub position: Option<[f64; 3]>,
}

/// What one SEG instance holds.
#[derive(Debug, Clone, Default)]
pub struct Counted {
    /// Voxels per segment number: the frame's segment (BINARY, FRACTIONAL), or the pixel value
    /// (LABELMAP, 0 included: it is the background).
    pub counts: BTreeMap<u32, u64>,
    pub frames: Vec<FrameInfo>,
    pub rows: u32,
    pub cols: u32,
    pub labelmap: bool,
    /// Worth saying (how an unusual layout was read).
    pub notes: Vec<String>,
}

pub(crate) use super::reader::{floats, items, uint};

/// Counts set bits in `[start, end)` of an LSB-first bit stream.
pub(crate) fn count_bits(data: &[u8], start: usize, end: usize) -> u64 {
    let end = end.max(start); // an empty range counts nothing
    let mut n = 0u64;
    let mut i = start;
    while i < end && !i.is_multiple_of(8) {
        n += u64::from((data[i / 8] >> (i % 8)) & 1);
        i += 1;
    }
    // whole bytes, eight at a time (a word's count is a few instructions even without POPCNT;
    // a byte at a time was a quarter of a gated backfill's CPU)
    let whole = &data[i / 8..i / 8 + (end - i) / 8];
    let mut words = whole.chunks_exact(8);
    for w in &mut words {
        let w: [u8; 8] = w.try_into().unwrap_or_default();
        n += u64::from(u64::from_le_bytes(w).count_ones());
    }
    n += words
        .remainder()
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum::<u64>();
    i += whole.len() * 8;
    while i < end {
        n += u64::from((data[i / 8] >> (i % 8)) & 1);
        i += 1;
    }
    n
}

/// Unpacks frame `frame` of natively encoded BINARY pixel data (frames back to back, LSB
/// first) to one byte (0 or 1) per pixel. Errors when the data is too short.
pub fn unpack_binary_frame(
    data: &[u8],
    rows: usize,
    cols: usize,
    frame: usize,
) -> Result<Vec<u8>, String> {
    let (start, end) = frame_bits(data, rows, cols, frame)?;
    Ok((start..end).map(|i| (data[i / 8] >> (i % 8)) & 1).collect())
}

/// The bit range of frame `frame` in back-to-back BINARY frames, checked against the data.
fn frame_bits(
    data: &[u8],
    rows: usize,
    cols: usize,
    frame: usize,
) -> Result<(usize, usize), String> {
    let n = rows.checked_mul(cols).ok_or("frame size overflows")?;
    let start = frame.checked_mul(n).ok_or("frame offset overflows")?;
    let end = start.checked_add(n).ok_or("frame end overflows")?;
    if end.div_ceil(8) > data.len() {
        return Err(format!(
            "truncated pixel data: frame {} needs {} bytes, there are {}",
            frame + 1,
            end.div_ceil(8),
            data.len()
        ));
    }
    Ok((start, end))
}

/// Voxels set in frame `frame` of natively encoded BINARY pixel data, counted from the packed
/// bits (the fast path). Equals the sum of [`unpack_binary_frame`].
pub fn binary_frame_voxels(
    data: &[u8],
    rows: usize,
    cols: usize,
    frame: usize,
) -> Result<u64, String> {
    let (start, end) = frame_bits(data, rows, cols, frame)?;
    Ok(count_bits(data, start, end))
}

/// How native 1-bit frames are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryLayout {
    /// The standard: frames back to back, a frame may start mid-byte.
    Contiguous,
    /// Each frame padded to a whole byte (OHIF's uncompressed bitmap SEGs).
    PerFrameBytes,
}

/// Decides how `frames` native 1-bit frames of `n` pixels lie in `data`, from its length:
/// the standard needs ceil(frames·n/8) bytes (plus one to make it even), OHIF's padded frames
/// frames·ceil(n/8). When the length fits both, the layout whose padding bits are all zero
/// wins; when both are zero, the standard, unless the file was written by dcmjs (OHIF).
/// A function of the bytes alone, so the same file always reads the same.
pub fn binary_layout(
    data: &[u8],
    frames: usize,
    n: usize,
    dcmjs: bool,
) -> Result<BinaryLayout, String> {
    let total = frames.checked_mul(n).ok_or("pixel data size overflows")?;
    let contiguous = total.div_ceil(8);
    let padded = frames
        .checked_mul(n.div_ceil(8))
        .ok_or("pixel data size overflows")?;
    if data.len() < contiguous {
        return Err(format!(
            "truncated pixel data: {} bytes, {frames} frames of {n} pixels need {contiguous}",
            data.len()
        ));
    }
    if n.is_multiple_of(8) || frames == 1 || data.len() < padded {
        return Ok(BinaryLayout::Contiguous);
    }
    let zero_bits = |from_bit: usize, to_bit: usize| count_bits(data, from_bit, to_bit) == 0;
    // OHIF: each frame's bits after its n pixels, and anything after the frames, are zero
    let frame_bytes = n.div_ceil(8);
    let padded_clean = (0..frames)
        .all(|f| zero_bits(f * frame_bytes * 8 + n, (f + 1) * frame_bytes * 8))
        && data[padded..].iter().all(|b| *b == 0);
    if !padded_clean {
        return Ok(BinaryLayout::Contiguous);
    }
    // the standard, padded to an even length, never needs more bytes than this
    let even = contiguous + contiguous % 2;
    if data.len() > even {
        return Ok(BinaryLayout::PerFrameBytes);
    }
    let contiguous_clean = zero_bits(total, data.len() * 8);
    if !contiguous_clean || dcmjs {
        Ok(BinaryLayout::PerFrameBytes)
    } else {
        Ok(BinaryLayout::Contiguous)
    }
}

/// Adds one frame's values: per pixel value for a label map, else the set pixels to the
/// frame's segment.
fn tally(c: &mut Counted, f: usize, values: impl Iterator<Item = u32>) -> Result<(), String> {
    if c.labelmap {
        let mut hist = [0u64; 256];
        for v in values {
            match usize::try_from(v).ok().filter(|v| *v < 256) {
                Some(i) => hist[i] += 1,
                None => *c.counts.entry(v).or_default() += 1,
            }
        }
        for (v, n) in hist.iter().enumerate().filter(|(_, n)| **n > 0) {
            *c.counts.entry(v as u32).or_default() += n;
        }
    } else {
        let seg = segment_of(c, f)?;
        let set = values.filter(|v| *v > 0).count() as u64;
        *c.counts.entry(seg).or_default() += set;
    }
    Ok(())
}

fn segment_of(c: &Counted, f: usize) -> Result<u32, String> {
    c.frames.get(f).and_then(|fi| fi.segment).ok_or_else(|| {
        format!(
            "frame {} names no segment (SegmentIdentificationSequence)",
            f + 1
        )
    })
}

/// The frames' places: segment, source instances, position.
fn frame_infos(obj: &InMemDicomObject, frames: usize) -> Vec<FrameInfo> {
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    let shared = items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE).first();
    let seg_of = |g: &InMemDicomObject| {
        items(g, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .first()
            .and_then(|s| uint(s, tags::REFERENCED_SEGMENT_NUMBER))
    };
    (0..frames)
        .map(|f| {
            let fg = per_frame.get(f);
            let segment = fg.and_then(seg_of).or_else(|| shared.and_then(seg_of));
            let mut sources = Vec::new();
            for g in fg.into_iter().chain(shared) {
                for d in items(g, tags::DERIVATION_IMAGE_SEQUENCE) {
                    for s in items(d, tags::SOURCE_IMAGE_SEQUENCE) {
                        let uid = text(s, tags::REFERENCED_SOP_INSTANCE_UID);
                        if !uid.is_empty() {
                            sources.push(uid);
                        }
                    }
                }
            }
            let position = fg
                .and_then(|g| items(g, tags::PLANE_POSITION_SEQUENCE).first())
                .and_then(|p| floats::<3>(p, tags::IMAGE_POSITION_PATIENT));
            FrameInfo {
                segment,
                sources,
                position,
            }
        })
        .collect()
}

/// Decodes one SEG instance and counts voxels per segment number. Never panics on bad input:
/// every problem is an error string naming what is wrong.
pub fn count_instance(obj: &DefaultDicomObject) -> Result<Counted, String> {
    let rows = uint(obj, tags::ROWS).ok_or("no Rows")?;
    let cols = uint(obj, tags::COLUMNS).ok_or("no Columns")?;
    let frames_declared = obj
        .get(tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<i64>().ok())
        .unwrap_or(1);
    if !(1..=100_000).contains(&frames_declared)
        || rows == 0
        || cols == 0
        || rows > 65535
        || cols > 65535
    {
        return Err(format!(
            "implausible size: {rows}x{cols}, {frames_declared} frames"
        ));
    }
    let frames = frames_declared as usize;
    let bits = uint(obj, tags::BITS_ALLOCATED).ok_or("no BitsAllocated")?;
    let seg_type = text(obj, tags::SEGMENTATION_TYPE);
    let labelmap = obj.meta().media_storage_sop_class_uid() == super::LABELMAP_SEG_SOP_CLASS
        || seg_type.eq_ignore_ascii_case("LABELMAP");
    let mut c = Counted {
        frames: frame_infos(obj, frames),
        rows,
        cols,
        labelmap,
        ..Default::default()
    };
    let pixel = obj.get(tags::PIXEL_DATA).ok_or("no Pixel Data")?;
    let (r, k) = (rows as usize, cols as usize);
    let n = r * k;
    let ts = obj.meta().transfer_syntax().trim_end_matches('\0');
    if let Some(fragments) = pixel.fragments() {
        if ts == RLE_LOSSLESS {
            if fragments.len() != frames {
                return Err(format!(
                    "RLE Lossless: {} fragments for {frames} frames (one fragment a frame)",
                    fragments.len()
                ));
            }
            for (f, frag) in fragments.iter().enumerate() {
                let d = rle::decode_frame(frag, r, k, bits)
                    .map_err(|e| format!("frame {}: {e}", f + 1))?;
                tally(&mut c, f, d.values())?;
            }
            return Ok(c);
        }
        if J2K.contains(&ts) {
            // the decoder writes what the codestream says: check that against the frame first
            let whole;
            let per_frame: Vec<&[u8]> = if fragments.len() == frames {
                fragments.iter().map(Vec::as_slice).collect()
            } else if frames == 1 {
                whole = fragments.concat();
                vec![&whole[..]]
            } else {
                return Err(format!(
                    "JPEG 2000: {} fragments for {frames} frames (one fragment a frame, or one frame)",
                    fragments.len()
                ));
            };
            for (f, frag) in per_frame.iter().enumerate() {
                super::j2k::check_frame(frag, rows, cols, bits)
                    .map_err(|e| format!("frame {}: {e}", f + 1))?;
            }
        }
        let codecs = for_codecs(obj, bits);
        for f in 0..frames {
            let d = decode_other(&codecs, f)?;
            let data = d.data();
            if bits == 1 && data.len() == n.div_ceil(8) {
                tally(
                    &mut c,
                    f,
                    (0..n).map(|i| u32::from((data[i / 8] >> (i % 8)) & 1)),
                )?;
            } else if bits == 16 && data.len() >= n * 2 {
                let v = data
                    .chunks_exact(2)
                    .take(n)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])));
                tally(&mut c, f, v)?;
            } else if data.len() >= n {
                tally(&mut c, f, data[..n].iter().map(|&b| u32::from(b)))?;
            } else {
                return Err(format!(
                    "frame {}: decoded {} bytes for {n} pixels",
                    f + 1,
                    data.len()
                ));
            }
        }
        return Ok(c);
    }
    let raw = pixel.to_bytes().map_err(|e| format!("Pixel Data: {e}"))?;
    match bits {
        1 => {
            let dcmjs = obj
                .meta()
                .implementation_version_name
                .as_deref()
                .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("dcmjs"));
            let layout = binary_layout(&raw, frames, n, dcmjs)?;
            let stride = match layout {
                BinaryLayout::Contiguous => n,
                BinaryLayout::PerFrameBytes => {
                    c.notes.push(format!(
                        "BINARY frames of {rows}x{cols} are each padded to a whole byte \
                         (OHIF's uncompressed bitmap), not packed back to back: read as such"
                    ));
                    n.div_ceil(8) * 8
                }
            };
            for f in 0..frames {
                if labelmap {
                    let v = (f * stride..f * stride + n)
                        .map(|i| u32::from((raw[i / 8] >> (i % 8)) & 1));
                    tally(&mut c, f, v)?;
                } else {
                    let seg = segment_of(&c, f)?;
                    let set = count_bits(&raw, f * stride, f * stride + n);
                    *c.counts.entry(seg).or_default() += set;
                }
            }
        }
        8 | 16 => {
            let width = bits as usize / 8;
            for f in 0..frames {
                let bytes = raw.get(f * n * width..(f + 1) * n * width).ok_or_else(|| {
                    format!(
                        "truncated pixel data: frame {} is missing ({} bytes)",
                        f + 1,
                        raw.len()
                    )
                })?;
                if width == 1 {
                    tally(&mut c, f, bytes.iter().map(|&b| u32::from(b)))?;
                } else {
                    let v = bytes
                        .chunks_exact(2)
                        .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])));
                    tally(&mut c, f, v)?;
                }
            }
        }
        b => return Err(format!("unsupported BitsAllocated {b}")),
    }
    Ok(c)
}

/// The object dicom-pixeldata decodes encapsulated frames (JPEG 2000 and the like) from. Its
/// codecs refuse BitsAllocated 1, and a compressed BINARY frame holds one sample per pixel in
/// its codestream, so such an object is decoded as 8-bit (one copy for all its frames).
fn for_codecs(obj: &DefaultDicomObject, bits: u32) -> std::borrow::Cow<'_, DefaultDicomObject> {
    if bits != 1 {
        return std::borrow::Cow::Borrowed(obj);
    }
    let mut o = obj.clone();
    for (tag, v) in [
        (tags::BITS_ALLOCATED, 8u16),
        (tags::BITS_STORED, 8),
        (tags::HIGH_BIT, 7),
    ] {
        o.put(dicom_core::DataElement::new(
            tag,
            dicom_core::VR::US,
            dicom_core::PrimitiveValue::from(v),
        ));
    }
    std::borrow::Cow::Owned(o)
}

/// One encapsulated frame decoded by dicom-pixeldata.
fn decode_other(
    o: &DefaultDicomObject,
    f: usize,
) -> Result<dicom_pixeldata::DecodedPixelData<'_>, String> {
    use dicom_pixeldata::PixelDecoder;
    o.decode_pixel_data_frame(f as u32).map_err(|e| {
        format!(
            "frame {}: cannot decode ({}): {}",
            f + 1,
            o.meta().transfer_syntax(),
            crate::util::error_chain(&e)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_frames_start_mid_byte() {
        // two 3x3 frames (9 bits each): frame 0 = all ones, frame 1 = only its last pixel
        let mut bits = vec![1u8; 9];
        bits.extend([0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut packed = vec![0u8; 3];
        for (i, b) in bits.iter().enumerate() {
            packed[i / 8] |= b << (i % 8);
        }
        assert_eq!(unpack_binary_frame(&packed, 3, 3, 0).unwrap(), vec![1; 9]);
        assert_eq!(
            unpack_binary_frame(&packed, 3, 3, 1).unwrap(),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(count_bits(&packed, 0, 9), 9);
        assert_eq!(count_bits(&packed, 9, 18), 1);
        assert!(unpack_binary_frame(&packed, 3, 3, 2)
            .unwrap_err()
            .contains("truncated"));
        assert!(unpack_binary_frame(&packed, usize::MAX, 2, 0).is_err());
    }

    #[test]
    fn count_bits_matches_unpacking_everywhere() {
        let data: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for start in 0..40 {
            for end in start..(start + 200).min(512) {
                let naive: u64 = (start..end)
                    .map(|i| u64::from((data[i / 8] >> (i % 8)) & 1))
                    .sum();
                assert_eq!(count_bits(&data, start, end), naive, "{start}..{end}");
            }
        }
    }

    /// Packs frames of 0/1 pixels, either back to back or each from a whole byte.
    fn pack(frames: &[Vec<u8>], per_frame: bool) -> Vec<u8> {
        let n = frames[0].len();
        let stride = if per_frame { n.div_ceil(8) * 8 } else { n };
        let mut out = vec![0u8; (stride * (frames.len() - 1) + n).div_ceil(8)];
        if per_frame {
            out.resize(frames.len() * n.div_ceil(8), 0);
        }
        for (f, px) in frames.iter().enumerate() {
            for (i, b) in px.iter().enumerate() {
                out[(f * stride + i) / 8] |= b << ((f * stride + i) % 8);
            }
        }
        out
    }

    #[test]
    fn the_length_tells_padded_frames_from_packed_ones() {
        // 13x13 = 169 pixels; 3 frames: 64 bytes back to back, 66 padded
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|f| (0..169).map(|i| u8::from((i + f) % 3 == 0)).collect())
            .collect();
        let std = pack(&frames, false);
        let ohif = pack(&frames, true);
        assert_eq!((std.len(), ohif.len()), (64, 66));
        assert_eq!(
            binary_layout(&std, 3, 169, false).unwrap(),
            BinaryLayout::Contiguous
        );
        assert_eq!(
            binary_layout(&ohif, 3, 169, false).unwrap(),
            BinaryLayout::PerFrameBytes
        );
        // the standard padded to an even length is still the standard
        let mut even = pack(&frames[..2], false);
        assert_eq!(even.len(), 43);
        even.push(0);
        // two padded frames are 44 bytes too: the padding bits decide; frame 1's last pixel
        // set makes the per-frame padding non-zero under the padded reading
        assert_eq!(
            binary_layout(&even, 2, 169, true).unwrap(),
            BinaryLayout::Contiguous
        );
        let ohif2 = pack(&frames[..2], true);
        assert_eq!(
            binary_layout(&ohif2, 2, 169, false).unwrap(),
            BinaryLayout::PerFrameBytes
        );
        assert!(binary_layout(&std[..60], 3, 169, false)
            .unwrap_err()
            .contains("truncated"));
        // multiples of 8 and single frames have one layout
        assert_eq!(
            binary_layout(&[0u8; 16], 2, 64, true).unwrap(),
            BinaryLayout::Contiguous
        );
    }
}
