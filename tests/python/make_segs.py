"""Third-party SEGs for segbridge's quality-gate tests, written by highdicom, with the voxel
counts an independent reader (pydicom) finds in them.

usage: make_segs.py OUT_DIR
writes OUT_DIR/images/<series>/*.dcm (CT source series), OUT_DIR/segs/<case>.dcm and
OUT_DIR/expected.json: {case: {"series": UID, "image": UID, "frames": n,
"segments": {"1": voxels, ...}}}
"""
import json
import sys
from pathlib import Path

import ctgen
import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless,
                         RLELossless, generate_uid)

out = Path(sys.argv[1])
(out / "images").mkdir(parents=True, exist_ok=True)
(out / "segs").mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)


def ct_series(name, rows, cols, slices):
    return ctgen.ct_series(out / "images" / name, rows, cols, slices, patient=name)


def segment(number, label):
    return ctgen.segment(number, label)


def write(case, images, mask, seg_type, labels, **kw):
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=mask, segmentation_type=seg_type,
        segment_descriptions=[segment(i + 1, l) for i, l in enumerate(labels)],
        series_instance_uid=generate_uid(), series_number=300, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="pytest", manufacturer_model_name="highdicom",
        software_versions=hd.__version__, device_serial_number="1", omit_empty_frames=False, **kw)
    path = out / "segs" / f"{case}.dcm"
    seg.save_as(path)
    return path


def reference_counts(path):
    """Voxels per segment by pydicom alone (no highdicom reading)."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1))
    if frames == 1:
        arr = arr[np.newaxis]
    counts = {}
    if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7" or ds.get("SegmentationType") == "LABELMAP":
        values, n = np.unique(arr, return_counts=True)
        counts = {str(int(v)): int(c) for v, c in zip(values, n) if v != 0}
    else:
        shared = ds.SharedFunctionalGroupsSequence[0]
        for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
            ident = fg.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
            s = str(int(ident[0].ReferencedSegmentNumber))
            counts[s] = counts.get(s, 0) + int(np.count_nonzero(arr[i]))
    for item in ds.SegmentSequence:
        if int(item.SegmentNumber) != 0:
            counts.setdefault(str(int(item.SegmentNumber)), 0)
    return ds, frames, counts


odd = ct_series("odd13", 13, 13, 3)
square = ct_series("sq16", 16, 16, 3)
big = ct_series("sq32", 32, 32, 3)  # JPEG 2000 needs 32 pixels or more
cases = {}

# BINARY 13x13: 169 pixels a frame, so frames start mid-byte
m = np.zeros((3, 13, 13, 2), dtype=bool)
m[:, 2:9, 3:8, 0] = True
m[1:, 6:12, 1:5, 1] = rng.random((2, 6, 4)) > 0.3
cases["binary-odd-13x13"] = (odd, write("binary-odd-13x13", odd, m, hd.seg.SegmentationTypeValues.BINARY, ["liver", "spleen"]))

f = (rng.random((3, 16, 16)) * (rng.random((3, 16, 16)) > 0.6)).astype(np.float32)
cases["fractional"] = (square, write("fractional", square, f, hd.seg.SegmentationTypeValues.FRACTIONAL, ["liver"]))

lm = np.zeros((3, 16, 16), dtype=np.uint8)
lm[0, 2:6, 2:6] = 1
lm[1, 5:12, 3:9] = 2
lm[2, 8:10, 8:15] = 1
cases["labelmap"] = (square, write("labelmap", square, lm, hd.seg.SegmentationTypeValues.LABELMAP, ["liver", "kidney"]))

jm = np.zeros((3, 32, 32, 1), dtype=bool)
jm[:, 4:23, 5:19, 0] = True
jm[1, 30, 31, 0] = True
cases["binary-jpeg2000"] = (big, write("binary-jpeg2000", big, jm, hd.seg.SegmentationTypeValues.BINARY, ["liver"], transfer_syntax_uid=JPEG2000Lossless))

# highdicom refuses RLE for BINARY; a label map takes it
rm = np.zeros((3, 13, 13), dtype=np.uint8)
rm[:, 1:12, 2:7] = 1
rm[2, 0, 0] = 2
cases["labelmap-rle"] = (odd, write("labelmap-rle", odd, rm, hd.seg.SegmentationTypeValues.LABELMAP, ["kidney", "liver"], transfer_syntax_uid=RLELossless))

expected = {}
for case, (images, path) in cases.items():
    ds, frames, counts = reference_counts(path)
    expected[case] = {"series": ds.SeriesInstanceUID, "image": images[0].SeriesInstanceUID,
                      "frames": frames, "segments": counts, "transfer_syntax": ds.file_meta.TransferSyntaxUID}
(out / "expected.json").write_text(json.dumps(expected, indent=1))
print(json.dumps(expected))
