// SEGs written the way OHIF 3.13's "Store segmentation" writes them, for segbridge's corpus test.
//
// usage: node make_ohif_segs.mjs OUT_DIR
//
// Reads the CT series that tests/python/make_corpus.py wrote with pydicom under
// OUT_DIR/ohif/<ct>/ and writes OUT_DIR/ohif/segs/<case>.dcm plus OUT_DIR/ohif/cases.json (what
// each case is meant to be; the expected values come from the Python reader, not from here).
//
// The code path is OHIF's: the SEG extension's `generateSegmentation` command (OHIF 3.13.2,
// @ohif/extension-cornerstone-dicom-seg) builds a labelmap3D from the labelmap slices and segment
// metadata, resolves its store options (`segmentation.store.defaultMode` label map or bitmap,
// `segmentation.store.transferSyntaxUID`, RLE Lossless by default), and calls
// `Cornerstone3D.Segmentation.generateSegmentation` of @cornerstonejs/adapters with
// cornerstone's own metaData. The dicomweb data source then writes the Part 10 body. This file
// repeats that glue; every DICOM byte comes from the pinned adapters and dcmjs.
import fs from 'node:fs';
import path from 'node:path';
import * as core from '@cornerstonejs/core';
import * as csMetadata from '@cornerstonejs/metadata';
import { adaptersSEG } from '@cornerstonejs/adapters';
import dcmjs from 'dcmjs';

const { generateSegmentation } = adaptersSEG.Cornerstone3D.Segmentation;
const { DicomMessage, DicomMetaDictionary, DicomDict } = dcmjs.data;

const LABELMAP_SEG = '1.2.840.10008.5.1.4.1.1.66.7';
const BITMAP_SEG = '1.2.840.10008.5.1.4.1.1.66.4';
const RLE_LOSSLESS = '1.2.840.10008.1.2.5';
const EXPLICIT_VR_LE = '1.2.840.10008.1.2.1';
// the store options OHIF derives from its customizations (getSegmentationSaveOptions)
const MODES = {
  labelmap: { sopClassUID: LABELMAP_SEG, transferSyntaxUID: RLE_LOSSLESS }, // OHIF's default
  'bitmap-rle': { sopClassUID: BITMAP_SEG, transferSyntaxUID: RLE_LOSSLESS },
  'bitmap-explicit': { sopClassUID: BITMAP_SEG, transferSyntaxUID: EXPLICIT_VR_LE },
};
// OHIF's segment colours come from cornerstone's colour LUT: any RGB does here
const COLORS = [
  [221, 84, 84],
  [77, 228, 121],
  [166, 70, 235],
  [189, 180, 116],
];

const out = process.argv[2];
if (!out) {
  console.error('usage: node make_ohif_segs.mjs OUT_DIR');
  process.exit(2);
}
const ohifDir = path.join(out, 'ohif');
fs.mkdirSync(path.join(ohifDir, 'segs'), { recursive: true });
csMetadata.registerDefaultProviders();

/** A CT series as OHIF holds it: imageIds in cornerstone's metaData, images in the cache. */
const loaded = new Map();
async function loadSeries(ctName) {
  if (loaded.has(ctName)) {
    return loaded.get(ctName);
  }
  const dir = path.join(ohifDir, ctName);
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.dcm'))
    .map((f) => path.join(dir, f));
  const images = [];
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    const imageId = `dicomfile:${file}`;
    await csMetadata.utilities.addDicomPart10Instance(imageId, new Uint8Array(bytes));
    const ds = DicomMetaDictionary.naturalizeDataset(
      DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))
        .dict
    );
    const pixels = new Int16Array(ds.PixelData[0]);
    images.push({
      imageId,
      rows: ds.Rows,
      columns: ds.Columns,
      z: ds.ImagePositionPatient[2],
      voxelManager: { getScalarData: () => pixels },
    });
  }
  images.sort((a, b) => a.z - b.z); // OHIF's display set order: along the slice normal
  loaded.set(ctName, images);
  return images;
}

/** The labelmap3D of OHIF's generateSegmentation command, from one Uint8Array per slice. */
function labelmap3D(slices, rows, columns, metadata) {
  const labelmaps2D = [];
  slices.forEach((pixelData, z) => {
    const segmentsOnLabelmap = new Set();
    for (const v of pixelData) {
      if (v !== 0) {
        segmentsOnLabelmap.add(v);
      }
    }
    labelmaps2D[z] = { segmentsOnLabelmap: Array.from(segmentsOnLabelmap), pixelData, rows, columns };
  });
  return {
    segmentsOnLabelmap: Array.from(new Set(labelmaps2D.flatMap((l) => l.segmentsOnLabelmap))),
    metadata,
    labelmaps2D,
  };
}

/** OHIF's segment metadata: every segment of the segmentation, painted or not. */
function segmentMetadata(labels) {
  const metadata = [];
  labels.forEach((label, i) => {
    const segmentIndex = i + 1;
    const color = COLORS[i % COLORS.length];
    metadata[segmentIndex] = {
      SegmentNumber: segmentIndex.toString(),
      SegmentLabel: label,
      SegmentAlgorithmType: 'MANUAL',
      SegmentAlgorithmName: 'OHIF Brush',
      RecommendedDisplayCIELabValue: dcmjs.data.Colors.rgb2DICOMLAB(
        color.map((v) => v / 255)
      ).map((v) => Math.round(v)),
      SegmentedPropertyCategoryCodeSequence: {
        CodeValue: 'T-D0050',
        CodingSchemeDesignator: 'SRT',
        CodeMeaning: 'Tissue',
      },
      SegmentedPropertyTypeCodeSequence: {
        CodeValue: 'T-D0050',
        CodingSchemeDesignator: 'SRT',
        CodeMeaning: 'Tissue',
      },
    };
  });
  return metadata;
}

/** The Part 10 body of OHIF's dicomweb `store.dicom` (extension-default 3.13.2). */
function part10(dataset) {
  const ts = dataset._meta?.TransferSyntaxUID;
  const meta = {
    FileMetaInformationVersion: dataset._meta?.FileMetaInformationVersion?.Value,
    MediaStorageSOPClassUID: dataset.SOPClassUID,
    MediaStorageSOPInstanceUID: dataset.SOPInstanceUID,
    TransferSyntaxUID: typeof ts === 'string' ? ts : Array.isArray(ts?.Value) ? ts.Value[0] : EXPLICIT_VR_LE,
    ImplementationClassUID: '2.25.270695996825855179949881587723571202391.2.0.0',
    ImplementationVersionName: 'OHIF-3.11.0',
  };
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta));
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset);
  return Buffer.from(dict.write({ allowInvalidVRLength: false, fragmentMultiframe: false }));
}

/** Paints rectangles: [slice, segment, row0, row1, col0, col1] (end exclusive). */
function paint(images, strokes) {
  const { rows, columns } = images[0];
  const slices = images.map(() => new Uint8Array(rows * columns));
  for (const [z, segment, r0, r1, c0, c1] of strokes) {
    for (let r = r0; r < r1; r++) {
      for (let c = c0; c < c1; c++) {
        slices[z][r * columns + c] = segment;
      }
    }
  }
  return slices;
}

/** What the user painted, voxels per segment: a check on the reader, not the expected value. */
function painted(slices) {
  const counts = {};
  for (const slice of slices) {
    for (const v of slice) {
      if (v !== 0) {
        counts[v] = (counts[v] ?? 0) + 1;
      }
    }
  }
  return counts;
}

// The cases. Each CT series is written by pydicom (make_corpus.py); sizes are odd on purpose:
// 13x11 = 143 and 13x13 = 169 pixels a frame, neither a multiple of 8. When a bitmap SEG has F
// frames of N pixels with F * ceil(N / 8) == ceil(F * N / 8) bytes (3 frames of 13x11), the
// adapters take dcmjs's continuous bit stream for byte-aligned frames and shift frame k by k
// pixels: the SEG no longer holds what was painted. One case keeps that writer bug on purpose
// (a reader can only count what the file holds); read_corpus.py checks every other case holds
// what was painted, and that this one does not.
const CASES = [
  {
    name: 'ohif-labelmap',
    ct: 'ct-labelmap',
    mode: 'labelmap',
    labels: ['Liver', 'Spleen', 'Kidney'], // Kidney is never painted: kept with 0 voxels
    strokes: [
      [0, 1, 2, 9, 1, 6],
      [0, 2, 9, 12, 6, 10],
      [2, 1, 3, 8, 2, 9],
    ],
    note: 'OHIF default store: Label Map Segmentation, RLE Lossless; an unpainted segment',
  },
  {
    name: 'ohif-labelmap-update',
    ct: 'ct-labelmap',
    mode: 'labelmap',
    labels: ['Liver', 'Spleen', 'Kidney'],
    strokes: [
      [0, 1, 2, 9, 1, 6],
      [0, 2, 9, 12, 6, 10],
      [1, 1, 4, 10, 2, 7],
      [2, 1, 3, 8, 2, 9],
      [3, 3, 0, 2, 0, 11],
    ],
    later: true,
    note: 'the same image saved again: a new series, a later date',
  },
  {
    name: 'ohif-bitmap-rle',
    ct: 'ct-bitmap-rle',
    mode: 'bitmap-rle',
    labels: ['Liver', 'Spleen'],
    strokes: [
      [0, 1, 1, 12, 1, 7],
      [1, 1, 0, 13, 0, 13],
      [1, 2, 5, 6, 3, 12],
      [3, 2, 7, 13, 8, 13],
    ],
    note: 'segmentation.store.defaultMode bitmap: BINARY, 1 bit, RLE Lossless',
  },
  {
    name: 'ohif-bitmap-explicit',
    ct: 'ct-bitmap-explicit',
    mode: 'bitmap-explicit',
    labels: ['Liver', 'Spleen'],
    strokes: [
      [0, 1, 0, 1, 0, 1],
      [0, 2, 12, 13, 12, 13],
      [1, 1, 2, 11, 2, 11],
      [2, 2, 0, 13, 0, 1],
      [3, 1, 6, 7, 0, 13],
      [3, 2, 0, 13, 6, 7],
    ],
    note: 'bitmap + Explicit VR Little Endian: 1 bit, each frame padded to a whole byte',
  },
  {
    name: 'ohif-bitmap-rle-shifted',
    ct: 'ct-bitmap-shifted',
    mode: 'bitmap-rle',
    labels: ['Liver'],
    strokes: [
      [0, 1, 0, 5, 0, 11],
      [1, 1, 0, 13, 0, 11],
      [2, 1, 6, 7, 0, 11],
    ],
    shifts_frames: true,
    note: 'bitmap, 3 frames of 13x11: the writer shifts frame k by k pixels (see above)',
  },
  {
    name: 'ohif-bitmap-unpainted',
    ct: 'ct-bitmap-unpainted',
    mode: 'bitmap-rle',
    labels: ['Liver', 'Spleen', 'Kidney'], // Liver is never painted
    strokes: [
      [0, 2, 2, 9, 1, 6],
      [1, 3, 4, 12, 3, 10],
      [2, 2, 0, 5, 0, 11],
    ],
    note: 'bitmap with an unpainted segment: SegmentSequence renumbered, frames keep the old numbers',
  },
];

const written = {};
for (const c of CASES) {
  if (c.later) {
    // a second save: OHIF stamps Series/Content Date and Time to the second
    await new Promise((r) => setTimeout(r, 1100));
  }
  const images = await loadSeries(c.ct);
  const { rows, columns } = images[0];
  const slices = paint(images, c.strokes);
  const lm = labelmap3D(slices, rows, columns, segmentMetadata(c.labels));
  const { sopClassUID, transferSyntaxUID } = MODES[c.mode];
  const options = {
    predecessorImageId: undefined,
    sopClassUID,
    transferSyntaxUID,
    transferSyntaxUid: transferSyntaxUID,
    SeriesDescription: c.name,
    SeriesNumber: 1 + Object.keys(written).length,
  };
  const { dataset } = generateSegmentation(images, lm, core.metaData, options);
  if (dataset.StudyID === 'No Study ID') {
    dataset.StudyID = ''; // as OHIF's storeSegmentation does
  }
  const file = path.join(ohifDir, 'segs', `${c.name}.dcm`);
  fs.writeFileSync(file, part10(dataset));
  written[c.name] = {
    file: path.relative(out, file),
    writer: '@cornerstonejs/adapters 5.6.8 + dcmjs 0.52.0 (OHIF 3.13 store)',
    mode: c.mode,
    sop_class: dataset.SOPClassUID,
    series: dataset.SeriesInstanceUID,
    note: c.note,
    painted: painted(slices),
    shifts_frames: Boolean(c.shifts_frames),
  };
}
fs.writeFileSync(path.join(ohifDir, 'cases.json'), JSON.stringify(written, null, 1));
console.log(JSON.stringify(Object.keys(written)));
