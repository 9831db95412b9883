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
    for kind in crate::app::serve::HookKind::ALL {
        let _ = crate::app::serve::parse_hook(data, kind);
    }
}

/// The quality gate's whole pixel path on one SEG object, every decoder included: the first
/// six bytes choose the transfer syntax (native, RLE Lossless, JPEG 2000 lossless or lossy),
/// BitsAllocated, BINARY or LABELMAP, rows, columns and frames; the rest is the Pixel Data,
/// one fragment a frame when encapsulated, so RLE and JPEG 2000 headers come from the fuzzer.
/// Must return an error or counts, never panic, hang or allocate beyond what is there.
pub fn pixels(data: &[u8]) {
    use dicom_core::value::{PixelFragmentSequence, PrimitiveValue};
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::mem::InMemDicomObject;
    use dicom_object::FileMetaTableBuilder;

    if data.len() < 6 {
        return;
    }
    let ts = [
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
    ][usize::from(data[0] % 4)];
    let bits = [1u16, 8, 16][usize::from(data[1] % 3)];
    let labelmap = data[1] & 0x80 != 0;
    let rows = 1 + u16::from(data[2] % 64);
    let cols = 1 + u16::from(data[3] % 64);
    let frames = 1 + usize::from(data[4] % 4);
    let body = &data[6..];
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    let sq = |tag, items: Vec<InMemDicomObject>| {
        DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
    };
    let segment = |n: u16| {
        InMemDicomObject::from_element_iter([
            us(tags::SEGMENT_NUMBER, n),
            DataElement::new(tags::SEGMENT_LABEL, VR::LO, PrimitiveValue::from("s")),
        ])
    };
    let shared = InMemDicomObject::from_element_iter([sq(
        tags::SEGMENT_IDENTIFICATION_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([us(
            tags::REFERENCED_SEGMENT_NUMBER,
            1,
        )])],
    )]);
    let sop_class = if labelmap {
        crate::dicom::LABELMAP_SEG_SOP_CLASS
    } else {
        crate::dicom::SEG_SOP_CLASS
    };
    let pixel_data = if ts == "1.2.840.10008.1.2.1" {
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(body.to_vec()),
        )
    } else {
        let per = body.len().div_ceil(frames).max(1);
        let fragments: Vec<Vec<u8>> = body.chunks(per).map(<[u8]>::to_vec).collect();
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PixelFragmentSequence::new(Vec::<u32>::new(), fragments),
        )
    };
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(sop_class)),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3"),
        ),
        us(tags::SAMPLES_PER_PIXEL, 1),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME2"),
        ),
        DataElement::new(
            tags::NUMBER_OF_FRAMES,
            VR::IS,
            PrimitiveValue::from(frames.to_string()),
        ),
        us(tags::ROWS, rows),
        us(tags::COLUMNS, cols),
        us(tags::BITS_ALLOCATED, bits),
        us(tags::BITS_STORED, bits),
        us(tags::HIGH_BIT, bits - 1),
        us(tags::PIXEL_REPRESENTATION, 0),
        DataElement::new(
            tags::SEGMENTATION_TYPE,
            VR::CS,
            PrimitiveValue::from(if labelmap { "LABELMAP" } else { "BINARY" }),
        ),
        sq(tags::SEGMENT_SEQUENCE, vec![segment(1), segment(2)]),
        sq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]),
        pixel_data,
    ]);
    let Ok(file) = obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(ts)
            .media_storage_sop_class_uid(sop_class)
            .media_storage_sop_instance_uid("1.2.3"),
    ) else {
        return;
    };
    let _ = crate::dicom::pixels::count_instance(&file);
}
