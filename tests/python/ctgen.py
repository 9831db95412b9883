"""A CT series written by pydicom alone (never by segbridge): the source images that the
third-party SEG writers in this folder paint on. Imported by make_segs.py, make_ohif.py and
make_corpus.py (each is run as a script, so this folder is on sys.path)."""
import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def ct_series(folder, rows, cols, slices, study=None, frame=None, patient="corpus"):
    """Writes FOLDER/001.dcm … one file per slice, 2 mm apart along z, and returns the
    datasets read back from the files."""
    study = study or generate_uid()
    series, frame = generate_uid(), frame or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID = f"Py^{patient}", f"PY-{patient}"
        ds.PatientSex, ds.PatientBirthDate = "O", "19700101"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "090000", "1", ""
        ds.SeriesDate, ds.SeriesTime = "20240101", "090500"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, i + 1
        ds.Manufacturer = "pydicom"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, float(i) * 2.0]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (np.arange(rows * cols, dtype=np.int16) + 40 * i).tobytes()
        path = folder / f"{i + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(pydicom.dcmread(path))
    return out


def segment(number, label):
    """A manual segment whose property type is named like its label."""
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label,
        segmented_property_category=hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("10200004", "SCT", label),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
