//! The bodies of the fuzz targets (`fuzz/`), shared with the test that replays their corpus on
//! every CI run. Each takes arbitrary bytes and must return without panicking, hanging or
//! allocating without bound; the binary unpacker also checks its fast path against the slow one.

use crate::dicom::quality::{binary_frame_voxels, unpack_binary_frame};

/// The Part-10 header reader.
pub fn header(data: &[u8]) {
    let _ = crate::dicom::reader::read_instance_from_bytes(data);
    let _ = crate::dicom::quality::parse_full(data);
}

/// The DICOM JSON (WADO-RS metadata) reader.
pub fn metadata(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = crate::source::dicomweb::segs_from_metadata(v, "fuzz");
    }
}

/// The BINARY unpacker: the first four bytes choose rows, columns and frame.
pub fn binary(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let rows = usize::from(data[0] % 64);
    let cols = usize::from(data[1] % 64);
    let frame = usize::from(data[2] % 16);
    let pixels = &data[4..];
    let fast = binary_frame_voxels(pixels, rows, cols, frame);
    let slow = unpack_binary_frame(pixels, rows, cols, frame);
    match (fast, slow) {
        (Ok(n), Ok(v)) => {
            assert_eq!(v.len(), rows * cols);
            assert_eq!(
                n,
                v.iter().map(|b| u64::from(*b)).sum::<u64>(),
                "fast and slow counts differ"
            );
        }
        (Err(_), Err(_)) => {}
        (a, b) => panic!("fast {a:?} and slow {:?} disagree", b.map(|v| v.len())),
    }
}

/// The RLE Lossless decoder and the native 1-bit layout choice: the first four bytes choose
/// bits, rows, columns and the frame count; the rest is one fragment. A decoded frame always
/// has exactly rows × columns pixels, whatever the header claims.
pub fn rle(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let bits = [1, 8, 16, 12][usize::from(data[0] % 4)];
    let scale = if data[3] & 0x40 != 0 { 64 } else { 1 };
    let rows = usize::from(data[1] % 64) * scale;
    let cols = usize::from(data[2] % 64);
    let fragment = &data[4..];
    if let Ok(f) = crate::dicom::rle::decode_frame(fragment, rows, cols, bits) {
        assert_eq!(f.len(), rows * cols, "decoded frame size");
    }
    let frames = usize::from(data[3] % 8) + 1;
    let n = rows * cols;
    match crate::dicom::pixels::binary_layout(fragment, frames, n, data[3] & 0x80 != 0) {
        Ok(crate::dicom::pixels::BinaryLayout::PerFrameBytes) => {
            assert!(
                fragment.len() >= frames * n.div_ceil(8),
                "padded frames fit"
            );
        }
        Ok(crate::dicom::pixels::BinaryLayout::Contiguous) => {
            assert!(
                fragment.len() >= (frames * n).div_ceil(8),
                "packed frames fit"
            );
        }
        Err(_) => {}
    }
}

/// The hook body parser.
pub fn hook(data: &[u8]) {
    let _ = crate::hook::parse_hook(data, false);
    let _ = crate::hook::parse_hook(data, true);
}
