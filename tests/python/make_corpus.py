"""The third-party part of segbridge's SEG corpus that Python writes (never segbridge's code).

usage: make_corpus.py OUT_DIR

- OUT_DIR/ohif/<ct>/*.dcm: the CT series that tests/node/make_ohif_segs.mjs paints on (pydicom);
- OUT_DIR/highdicom/...: CT series (pydicom) and SEGs written by highdicom 0.28:
  BINARY, FRACTIONAL, LABELMAP; one SEG series split over two files; two image series in one
  study; an SR document and a presentation state inside a CT series (sharing its
  SeriesInstanceUID).

The expected values are not written here: tests/python/read_corpus.py reads every SEG back.
"""
import sys
from pathlib import Path

import ctgen
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

out = Path(sys.argv[1])
rng = np.random.default_rng(12)


def ct_series(folder, rows, cols, slices, study=None, frame=None, name="corpus"):
    return ctgen.ct_series(folder, rows, cols, slices, study=study, frame=frame, patient=name)


# --- the CT series OHIF's writer paints on (tests/node/make_ohif_segs.mjs names them) ----------
ct_series(out / "ohif" / "ct-labelmap", 13, 11, 4, name="ohif-lm")
ct_series(out / "ohif" / "ct-bitmap-rle", 13, 13, 4, name="ohif-rle")
ct_series(out / "ohif" / "ct-bitmap-explicit", 13, 13, 4, name="ohif-evle")
ct_series(out / "ohif" / "ct-bitmap-shifted", 13, 11, 3, name="ohif-shift")
ct_series(out / "ohif" / "ct-bitmap-unpainted", 13, 13, 3, name="ohif-unp")

# --- highdicom ----------------------------------------------------------------------------------
hd_dir = out / "highdicom"


def segment(number, label):
    return ctgen.segment(number, label)


def seg(name, images, mask, seg_type, labels, series_uid=None, instance_number=1, **kw):
    s = hd.seg.Segmentation(
        source_images=images, pixel_array=mask, segmentation_type=seg_type,
        segment_descriptions=[segment(i + 1, lab) for i, lab in enumerate(labels)],
        series_instance_uid=series_uid or generate_uid(), series_number=300,
        sop_instance_uid=generate_uid(), instance_number=instance_number,
        manufacturer="corpus", manufacturer_model_name="highdicom",
        software_versions=hd.__version__, device_serial_number="1", **kw)
    path = hd_dir / "segs" / f"{name}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    s.save_as(path)
    return s


# one study, two image series of different sizes (13x13 and 16x16, both 3 slices)
study, frame = generate_uid(), generate_uid()
odd = ct_series(hd_dir / "study" / "ct-13x13", 13, 13, 3, study, frame, name="hd")
sq = ct_series(hd_dir / "study" / "ct-16x16", 16, 16, 3, study, frame, name="hd")

# BINARY on 13x13: 169 pixels a frame, so frames start mid-byte
m = np.zeros((3, 13, 13, 2), dtype=bool)
m[:, 2:9, 3:8, 0] = True
m[1:, 6:12, 1:5, 1] = rng.random((2, 6, 4)) > 0.3
seg("hd-binary", odd, m, hd.seg.SegmentationTypeValues.BINARY, ["liver", "spleen"])

# FRACTIONAL on the other series of the same study
f = (rng.random((3, 16, 16)) * (rng.random((3, 16, 16)) > 0.6)).astype(np.float32)
seg("hd-fractional", sq, f, hd.seg.SegmentationTypeValues.FRACTIONAL, ["liver"],
    fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY)

# LABELMAP (Label Map Segmentation Storage) on its own series, with a gap in the label values
lm_ct = ct_series(hd_dir / "labelmap" / "ct", 16, 16, 3, name="hd-lm")
lm = np.zeros((3, 16, 16), dtype=np.uint8)
lm[0, 2:6, 2:6] = 1
lm[1, 5:12, 3:9] = 3
lm[2, 8:10, 8:15] = 1
seg("hd-labelmap", lm_ct, lm, hd.seg.SegmentationTypeValues.LABELMAP, ["liver", "kidney", "spleen"])

# one SEG series split over two files: slices 1-2 in instance 1, slice 3 in instance 2
split_ct = ct_series(hd_dir / "split" / "ct", 13, 13, 3, name="hd-split")
split_uid = generate_uid()
sm = np.zeros((3, 13, 13, 1), dtype=bool)
sm[:, 3:10, 2:12, 0] = True
sm[2, 0:2, 0:13, 0] = True
seg("hd-split-1of2", split_ct[:2], sm[:2], hd.seg.SegmentationTypeValues.BINARY, ["liver"],
    series_uid=split_uid, instance_number=1)
seg("hd-split-2of2", split_ct[2:], sm[2:], hd.seg.SegmentationTypeValues.BINARY, ["liver"],
    series_uid=split_uid, instance_number=2)

# a CT series that also holds an SR document and a presentation state (its SeriesInstanceUID)
mixed_dir = hd_dir / "mixed"
mixed = ct_series(mixed_dir / "ct", 13, 13, 3, name="hd-mixed")
mixed_series = mixed[0].SeriesInstanceUID
observer = hd.sr.ObserverContext(
    observer_type=codes.DCM.Person,
    observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="Corpus^Reader"))
region = hd.sr.ImageRegion3D(
    graphic_type=hd.sr.GraphicTypeValues3D.POLYGON,
    graphic_data=np.array([[1.0, 1.0, 2.0], [6.0, 1.0, 2.0], [6.0, 6.0, 2.0], [1.0, 1.0, 2.0]]),
    frame_of_reference_uid=mixed[0].FrameOfReferenceUID)
group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
    tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="roi 1"),
    referenced_region=region, finding_type=codes.SCT.Neoplasm)
report = hd.sr.MeasurementReport(
    observation_context=hd.sr.ObservationContext(observer_person_context=observer),
    procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
sr = hd.sr.Comprehensive3DSR(
    evidence=mixed, content=report, series_instance_uid=mixed_series, series_number=1,
    sop_instance_uid=generate_uid(), instance_number=90, manufacturer="corpus")
sr.save_as(mixed_dir / "ct" / "sr.dcm")
pr = hd.pr.GrayscaleSoftcopyPresentationState(
    referenced_images=mixed, series_instance_uid=mixed_series, series_number=1,
    sop_instance_uid=generate_uid(), instance_number=91, manufacturer="corpus",
    manufacturer_model_name="highdicom", software_versions=hd.__version__,
    device_serial_number="1", content_label="CORPUS")
pr.save_as(mixed_dir / "ct" / "pr.dcm")
mm = np.zeros((3, 13, 13, 1), dtype=bool)
mm[1:, 4:9, 4:11, 0] = True
seg("hd-mixed-series", mixed, mm, hd.seg.SegmentationTypeValues.BINARY, ["liver"])
print(out)
