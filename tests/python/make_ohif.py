"""OHIF-style SEGs for segbridge's quality-gate tests, with the voxel counts they must give.

OHIF 3.x stores SEGs through @cornerstonejs/adapters 5.x + dcmjs. Its three layouts are rebuilt
here from highdicom SEGs, byte for byte the way the adapters' encodePixelData.js writes them:
- bitmap, RLE Lossless: BINARY, 1 bit, each frame bit-packed on its own (LSB first, the last
  byte padded) and PackBits-encoded as the one segment of its fragment (row by row of packed
  bytes when columns % 8 == 0, else over the whole frame);
- bitmap, uncompressed: each frame bit-packed on its own, frames concatenated (a whole byte per
  frame, which breaks the standard's packing when rows*cols % 8 != 0);
- label map, RLE Lossless: 8 bits (one segment) or 16 bits (high bytes, then low bytes);
- renumbered: an unpainted segment dropped from SegmentSequence and the rest renumbered, while
  the frames keep the old numbers.
Every RLE fragment is decoded again here by a tiny numpy PackBits decoder (independent of
segbridge) and compared with the frames it was made from; 8/16-bit ones also by pydicom.

usage: make_ohif.py OUT_DIR
writes OUT_DIR/images/<series>/*.dcm, OUT_DIR/segs/<case>.dcm and OUT_DIR/expected.json:
{case: {"series": UID, "status": "ready|invalid", "segments": {"1": voxels, ...},
        "reason": "substring of the reason, when invalid"}}
"""
import json
import sys
from pathlib import Path

import ctgen
import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

out = Path(sys.argv[1])
(out / "images").mkdir(parents=True, exist_ok=True)
(out / "segs").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(12)


def ct_series(name, rows, cols, slices):
    return ctgen.ct_series(out / "images" / name, rows, cols, slices, patient="ohif-" + name)


def segment(number, label):
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)


def highdicom_seg(images, mask, seg_type, labels, omit_empty=False):
    return hd.seg.Segmentation(
        source_images=images, pixel_array=mask, segmentation_type=seg_type,
        segment_descriptions=[segment(i + 1, l) for i, l in enumerate(labels)],
        series_instance_uid=generate_uid(), series_number=300, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="OHIF", manufacturer_model_name="cornerstone",
        software_versions="3.13", device_serial_number="1", omit_empty_frames=omit_empty)


# --- the adapters' encoder (encodePixelData.js: packBitsRange, packBits, bitPackBinaryFrame)
def pack_bits_range(samples, start, end, output):
    i = start
    while i < end:
        run = 1
        while i + run < end and run < 128 and samples[i + run] == samples[i]:
            run += 1
        if run >= 2:
            output += [257 - run, int(samples[i]) & 0xFF]
            i += run
            continue
        lit = i
        i += 1
        while i < end:
            run = 1
            while i + run < end and run < 128 and samples[i + run] == samples[i]:
                run += 1
            if run >= 2 or i - lit >= 128:
                break
            i += 1
        output.append(i - lit - 1)
        output += [int(s) & 0xFF for s in samples[lit:i]]


def pack_bits(samples, row_length):
    output = []
    if row_length and len(samples) % row_length == 0:
        for s in range(0, len(samples), row_length):
            pack_bits_range(samples, s, s + row_length, output)
    else:
        pack_bits_range(samples, 0, len(samples), output)
    return bytes(output)


def bit_pack_frame(frame):
    return np.packbits(frame.reshape(-1).astype(np.uint8), bitorder="little").tobytes()


def rle_fragment(planes, row_length):
    enc = []
    for p in planes:
        e = pack_bits(list(p), row_length)
        enc.append(e + b"\x00" * (len(e) % 2))
    header = np.zeros(16, dtype="<u4")
    header[0] = len(enc)
    offset = 64
    for k, e in enumerate(enc):
        header[k + 1] = offset
        offset += len(e)
    return header.tobytes() + b"".join(enc)


# --- an independent reader of those fragments: a tiny numpy PackBits decoder
def unpackbits_segment(data):
    out, i = [], 0
    while i < len(data):
        h = int(np.int8(np.uint8(data[i])))
        i += 1
        if h >= 0:
            out += list(data[i:i + h + 1])
            i += h + 1
        elif h != -128:
            if i < len(data):
                out += [data[i]] * (1 - h)
            i += 1
    return np.array(out, dtype=np.uint8)


def decode_fragment(frag):
    header = np.frombuffer(frag[:64], dtype="<u4")
    n = int(header[0])
    offsets = [int(o) for o in header[1:n + 1]] + [len(frag)]
    return [unpackbits_segment(frag[offsets[k]:offsets[k + 1]]) for k in range(n)]


def as_ohif(ds, frames, bits, rle):
    """Rewrites a highdicom SEG's pixel data the way OHIF writes it."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    ds.file_meta.ImplementationVersionName = "dcmjs-0.0"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, max(bits - 1, 0)
    if rle:
        fragments = []
        for f in frames:
            if bits == 1:
                planes = [bit_pack_frame(f)]
                row_length = cols // 8 if cols % 8 == 0 else None
            elif bits == 8:
                planes = [f.reshape(-1).astype(np.uint8).tobytes()]
                row_length = cols
            else:
                v = f.reshape(-1).astype(np.uint16)
                planes = [(v >> 8).astype(np.uint8).tobytes(), (v & 0xFF).astype(np.uint8).tobytes()]
                row_length = cols
            frag = rle_fragment(planes, row_length)
            # decoded again, independently, it must give the frame back
            got = decode_fragment(frag)
            if bits == 1:
                back = np.unpackbits(got[0], bitorder="little")[: rows * cols]
                assert np.array_equal(back, f.reshape(-1).astype(np.uint8)), "1-bit round trip"
            elif bits == 8:
                assert np.array_equal(got[0][: rows * cols], f.reshape(-1)), "8-bit round trip"
            else:
                v = (got[0].astype(np.uint16) << 8) | got[1]
                assert np.array_equal(v[: rows * cols], f.reshape(-1)), "16-bit round trip"
            fragments.append(frag)
        ds.file_meta.TransferSyntaxUID = RLELossless
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        assert bits == 1
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = b"".join(bit_pack_frame(f) for f in frames)
        ds["PixelData"].VR = "OW"
        ds["PixelData"].is_undefined_length = False
    return ds


def frames_of(ds):
    arr = ds.pixel_array
    return arr[np.newaxis] if int(getattr(ds, "NumberOfFrames", 1)) == 1 else arr


def frame_segments(ds):
    shared = ds.SharedFunctionalGroupsSequence[0]
    segs = []
    for fg in ds.PerFrameFunctionalGroupsSequence:
        ident = fg.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
        segs.append(int(ident[0].ReferencedSegmentNumber))
    return segs


def binary_counts(frames, segs):
    counts = {}
    for f, s in zip(frames, segs):
        counts[str(s)] = counts.get(str(s), 0) + int(np.count_nonzero(f))
    return counts


def save(case, ds):
    path = out / "segs" / f"{case}.dcm"
    ds.save_as(path, enforce_file_format=False)
    return path


odd = ct_series("ohif13", 13, 13, 3)
square = ct_series("ohif16", 16, 16, 3)
expected = {}

# bitmaps: two segments, random blobs; frames as highdicom orders them
for name, images, size in [("bitmap-rle-13x13", odd, 13), ("bitmap-rle-16x16", square, 16),
                           ("bitmap-padded-13x13", odd, 13)]:
    m = np.zeros((3, size, size, 2), dtype=bool)
    m[:, 2:9, 3:8, 0] = True
    m[:, size - 1, size - 1, 0] = True  # the last pixel of every frame: the padded byte's edge
    m[1:, 6:12, 1:5, 1] = rng.random((2, 6, 4)) > 0.3
    ds = highdicom_seg(images, m, hd.seg.SegmentationTypeValues.BINARY, ["liver", "spleen"])
    frames, segs = frames_of(ds), frame_segments(ds)
    counts = binary_counts(frames, segs)
    ds = as_ohif(ds, frames, 1, rle="rle" in name)
    save(name, ds)
    expected[name] = {"series": ds.SeriesInstanceUID, "status": "ready", "segments": counts,
                      "frames": len(frames)}

# label maps, RLE: 8 and 16 bits (values 1..3, segment 2 left unpainted: 0 voxels)
for bits in (8, 16):
    name = f"labelmap-rle-{bits}bit"
    lm = np.zeros((3, 13, 13), dtype=np.uint8)
    lm[0, 2:6, 2:6] = 1
    lm[1, 5:12, 3:9] = 3
    lm[2, 8:10, 8:13] = 1
    ds = highdicom_seg(odd, lm, hd.seg.SegmentationTypeValues.LABELMAP, ["liver", "kidney", "spleen"])
    frames = frames_of(ds).astype(np.uint16 if bits == 16 else np.uint8)
    ds = as_ohif(ds, frames, bits, rle=True)
    path = save(name, ds)
    # and pydicom (pylibjpeg-rle / its own RLE handler) reads the same values back
    back = frames_of(pydicom.dcmread(path))
    assert np.array_equal(back.reshape(frames.shape), frames), f"pydicom reads {name} differently"
    values, n = np.unique(frames, return_counts=True)
    counts = {str(int(v)): int(c) for v, c in zip(values, n) if v != 0}
    counts.setdefault("2", 0)
    expected[name] = {"series": ds.SeriesInstanceUID, "status": "ready", "segments": counts,
                      "frames": len(frames)}

# renumbered: segments 1, 2, 3 with 2 unpainted; the writer drops 2 from SegmentSequence and
# calls 3 "2", while the frames keep saying 3
m = np.zeros((3, 13, 13, 3), dtype=bool)
m[:, 2:9, 3:8, 0] = True
m[1:, 6:12, 1:5, 2] = True
ds = highdicom_seg(odd, m, hd.seg.SegmentationTypeValues.BINARY, ["liver", "kidney", "spleen"],
                   omit_empty=True)
frames, segs = frames_of(ds), frame_segments(ds)
assert 2 not in segs and 3 in segs, segs
del ds.SegmentSequence[1]
ds.SegmentSequence[1].SegmentNumber = 2
ds = as_ohif(ds, frames, 1, rle=True)
save("bitmap-renumbered", ds)
bad = [i + 1 for i, s in enumerate(segs) if s == 3]
expected["bitmap-renumbered"] = {
    "series": ds.SeriesInstanceUID, "status": "invalid",
    "reason": f"frame{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} "
              f"reference{'' if len(bad) > 1 else 's'} segment 3, which SegmentSequence does not "
              f"define (defined: 1, 2)"}

# a label map whose pixels name a segment SegmentSequence does not define
lm = np.zeros((3, 13, 13), dtype=np.uint8)
lm[0, 2:6, 2:6] = 1
lm[1, 5:12, 3:9] = 2
ds = highdicom_seg(odd, lm, hd.seg.SegmentationTypeValues.LABELMAP, ["liver", "kidney"])
del ds.SegmentSequence[-1]
frames = frames_of(ds).astype(np.uint8)
ds = as_ohif(ds, frames, 8, rle=True)
save("labelmap-undefined-value", ds)
expected["labelmap-undefined-value"] = {
    "series": ds.SeriesInstanceUID, "status": "invalid",
    "reason": f"pixel value 2 ({int(np.count_nonzero(lm == 2))} voxels) references segment 2, "
              f"which SegmentSequence does not define (defined: "}

(out / "expected.json").write_text(json.dumps(expected, indent=1))
print(json.dumps(expected))
