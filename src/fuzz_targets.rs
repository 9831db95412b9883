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
    let _ = crate::source::dicom_json::segs_from_metadata(data, "fuzz");
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

/// The hook body parser.
pub fn hook(data: &[u8]) {
    let _ = crate::hook::parse_hook(data, false);
    let _ = crate::hook::parse_hook(data, true);
}
