"""The independent reader of segbridge's SEG corpus: what every SEG in a folder should give.

usage: read_corpus.py CORPUS_DIR   (writes CORPUS_DIR/expected.json and prints it)

For each SEG series: its image (the first instance's ReferencedSeriesSequence[0] when that series
is in the folder), its status (ready, superseded, unmatched, unusable, or invalid with a reason
kind), its frames and the voxels of every segment. Pixels are decoded by pydicom where it can;
where it cannot, by numpy on the raw bytes:
- 1-bit RLE Lossless (pydicom 3.0 refuses it): a PackBits decoder below;
- 1-bit frames each padded to a whole byte (OHIF's bitmap + Explicit VR Little Endian): the
  length tells them from the standard's packing (a length both fit is read the standard's way,
  so the corpus's padded cases are sized to be unambiguous).
What the OHIF writer recorded as painted (cases.json) must be what its file holds, except in the
one case where the writer is known to shift frames. Files sharing a SOP Instance UID: the one at
the lowest path counts. Per image, only the newest valid label (ContentDate+Time, SeriesDate+Time,
InstanceCreationDate+Time, series UID) is ready; older ones are superseded.
Nothing here comes from segbridge's code.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import generate_frames

SEG_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}
LABELMAP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
RLE = "1.2.840.10008.1.2.5"


def is_dicom(path):
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def packbits(data):
    """One RLE segment (PS3.5 G.3.1) decoded."""
    out, i = bytearray(), 0
    while i < len(data):
        n = struct.unpack("b", data[i:i + 1])[0]
        i += 1
        if n >= 0:
            out += data[i:i + n + 1]
            i += n + 1
        elif n != -128:
            out += data[i:i + 1] * (1 - n)
            i += 1
    return bytes(out)


def rle_1bit_frames(ds, n_frames, pixels):
    """1-bit RLE Lossless: each frame is one RLE segment of the frame's packed bytes."""
    frames = []
    for frag in generate_frames(ds.PixelData, number_of_frames=n_frames):
        n_seg = struct.unpack("<I", frag[:4])[0]
        if n_seg != 1:
            raise ValueError(f"1-bit RLE frame with {n_seg} segments")
        start = struct.unpack("<I", frag[4:8])[0]
        packed = np.frombuffer(packbits(frag[start:]), dtype=np.uint8)
        bits = np.unpackbits(packed, bitorder="little")
        if bits.size < pixels:
            raise ValueError(f"1-bit RLE frame decodes to {bits.size} bits, {pixels} needed")
        frames.append(bits[:pixels])
    return np.stack(frames), "numpy PackBits (1-bit RLE)"


def native_1bit_frames(ds, n_frames, pixels):
    """1-bit native: the standard's continuous bit stream, or frames padded to whole bytes."""
    raw = bytes(ds.PixelData)
    standard = (pixels * n_frames + 7) // 8
    padded = n_frames * ((pixels + 7) // 8)
    fits = lambda want: len(raw) in (want, want + want % 2)  # noqa: E731
    if fits(standard):  # the standard's packing whenever the length allows it
        return ds.pixel_array.reshape(n_frames, pixels), "pydicom"
    if fits(padded):
        per = (pixels + 7) // 8
        buf = np.frombuffer(raw[:padded], dtype=np.uint8).reshape(n_frames, per)
        bits = np.unpackbits(buf, axis=1, bitorder="little")[:, :pixels]
        return bits, "numpy (1-bit frames padded to whole bytes)"
    raise ValueError(f"1-bit pixel data of {len(raw)} bytes fits neither packing "
                     f"({standard} continuous, {padded} padded per frame)")


def frames_of(ds):
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    pixels = int(ds.Rows) * int(ds.Columns)
    if int(ds.BitsAllocated) == 1:
        if ds.file_meta.TransferSyntaxUID == RLE:
            return rle_1bit_frames(ds, n_frames, pixels)
        return native_1bit_frames(ds, n_frames, pixels)
    return ds.pixel_array.reshape(n_frames, pixels), "pydicom"


def text_dt(ds, date, time):
    d = str(ds.get(date, "") or "").strip()
    if not d:
        return ""
    return d + str(ds.get(time, "") or "").strip().replace(":", "")


class Seg:
    def __init__(self, series):
        self.series, self.instances = series, []

    def first(self):
        return min(self.instances, key=lambda x: (int(x[1].get("InstanceNumber", 0) or 0),
                                                  x[1].SOPInstanceUID))[1]


def read(root):
    by_sop = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name in ("expected.json", "cases.json") or not is_dicom(path):
            continue
        ds = pydicom.dcmread(path)
        rel = path.relative_to(root).as_posix()
        by_sop.setdefault(ds.SOPInstanceUID, []).append((str(path).encode(), rel, ds))
    segs, images = {}, {}
    for _, copies in sorted(by_sop.items()):
        _, rel, ds = min(copies, key=lambda c: c[0])  # duplicates: the lowest path wins
        if ds.SOPClassUID in SEG_CLASSES:
            segs.setdefault(ds.SeriesInstanceUID, Seg(ds.SeriesInstanceUID)).instances.append((rel, ds))
        else:
            images.setdefault(ds.SeriesInstanceUID, []).append(ds)
    return segs, images


def count(seg):
    """Declared segments, frames and voxels per segment over every instance of a SEG series."""
    declared, counts, frames, how = set(), {}, 0, set()
    for _, ds in seg.instances:
        declared |= {int(s.SegmentNumber) for s in ds.SegmentSequence}
        arr, decoder = frames_of(ds)
        how.add(decoder)
        frames += arr.shape[0]
        if ds.SOPClassUID == LABELMAP_CLASS or ds.get("SegmentationType") == "LABELMAP":
            values, n = np.unique(arr, return_counts=True)
            for v, c in zip(values, n):
                counts[int(v)] = counts.get(int(v), 0) + int(c)
            continue
        shared = ds.SharedFunctionalGroupsSequence[0]
        for i, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
            ident = fg.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
            s = int(ident[0].ReferencedSegmentNumber)
            counts[s] = counts.get(s, 0) + int(np.count_nonzero(arr[i]))
    counts.pop(0, None)  # a label map's background
    declared.discard(0)
    segments = {str(n): counts.get(n, 0) for n in sorted(declared | set(counts))}
    return declared, counts, segments, frames, sorted(how)


def writer(rel, ds):
    top = rel.split("/")[0]
    if top == "highdicom":
        return f"highdicom {ds.get('SoftwareVersions', '')}"
    if top == "dcmqi":
        return f"dcmqi ({ds.get('Manufacturer', '')} {ds.get('SoftwareVersions', '')})".strip()
    return str(ds.get("Manufacturer", ""))


def sources(ds):
    out = set()
    for fg in ds.get("PerFrameFunctionalGroupsSequence", []):
        for der in fg.get("DerivationImageSequence", []):
            out |= {s.ReferencedSOPInstanceUID for s in der.get("SourceImageSequence", [])}
    return out


def problem(seg, image_instances, declared, counts):
    """Why a careful reader refuses this label (a kind, and the segment numbers it concerns), or
    None."""
    undeclared = sorted(set(counts) - declared)
    if undeclared:
        return "undeclared-segment", undeclared
    if sum(counts.values()) == 0:
        return "empty", []
    geo = [i for i in image_instances if "Rows" in i]  # an SR or a presentation state has none
    sops = {i.SOPInstanceUID for i in image_instances}
    for _, ds in seg.instances:
        if geo and (int(ds.Rows), int(ds.Columns)) != (int(geo[0].Rows), int(geo[0].Columns)):
            return "geometry", []
        if sources(ds) - sops:
            return "geometry", []
    return None


def main():
    root = Path(sys.argv[1])
    segs, images = read(root)
    cases = {}
    for p in root.rglob("cases.json"):
        cases.update({v["series"]: (k, v) for k, v in json.loads(p.read_text()).items()})
    expected = {}
    for uid, seg in sorted(segs.items()):
        first = seg.first()
        rss = first.get("ReferencedSeriesSequence")
        ref = rss[0].SeriesInstanceUID if rss else None
        declared, counts, segments, frames, how = count(seg)
        name, written = cases.get(uid, (None, {}))
        files = sorted(rel for rel, _ in seg.instances)
        e = {
            "case": name or (files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1})"),
            "files": files,
            "writer": written.get("writer") or writer(files[0], first),
            "sop_class": first.SOPClassUID,
            "type": str(first.get("SegmentationType", "")),
            "transfer_syntax": str(first.file_meta.TransferSyntaxUID),
            "frames": frames,
            "segments": segments,
            "decoded_by": how,
            "sort_key": [text_dt(first, "ContentDate", "ContentTime"),
                         text_dt(first, "SeriesDate", "SeriesTime"),
                         text_dt(first, "InstanceCreationDate", "InstanceCreationTime"), uid],
            "image": None,
            "status": "unmatched",
            "reason_kind": None,
        }
        if ref in images:
            e["image"] = ref
            why = problem(seg, images[ref], declared, counts)
            e["status"], e["reason_kind"] = ("invalid", why[0]) if why else ("ready", None)
            if why:
                e["reason_segments"] = why[1]
        elif not rss:
            series = {s for s, inst in images.items() for i in inst if i.SOPInstanceUID in sources(first)}
            if len(series) == 1:
                e["image"], e["status"] = series.pop(), "unusable"
        if written.get("painted") is not None:
            # the writer's record of what was painted must be what the file holds
            painted = {k: v for k, v in written["painted"].items()}
            held = {k: v for k, v in segments.items() if v}
            if (painted != held) != bool(written.get("shifts_frames")):
                raise SystemExit(f"{name}: the file holds {held} voxels, {painted} were painted "
                                 f"(the writer is expected to shift frames: "
                                 f"{bool(written.get('shifts_frames'))})")
            e["painted"] = painted
        expected[uid] = e
    # per image, only the newest valid label is current
    newest = {}
    for uid, e in expected.items():
        if e["status"] == "ready" and (e["image"] not in newest or e["sort_key"] > expected[newest[e["image"]]]["sort_key"]):
            newest[e["image"]] = uid
    for uid, e in expected.items():
        if e["status"] == "ready" and newest[e["image"]] != uid:
            e["status"] = "superseded"
    text = json.dumps(expected, indent=1, sort_keys=True)
    (root / "expected.json").write_text(text)
    print(text)


main()
