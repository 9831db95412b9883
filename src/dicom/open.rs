//! The one way a Part-10 object is opened: its bytes are read once, into a capped buffer, the
//! bounded pre-scan ([`super::guard`]) walks those bytes, and the parser is given those same
//! bytes and nothing else. A file rewritten between the check and the parse (valid while
//! checked, 10,000 nested sequences when parsed) cannot reach the parser: the parser never
//! reads the file.
//!
//! A header read keeps only what comes before Pixel Data (its pre-scan stops there, and so does
//! the parser), so a 500 MB CT costs what its header costs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use crate::util::error_chain;

/// Why a file could not be used. The path is kept by the caller, next to the reason.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not a DICOM Part-10 file (no 'DICM' after the 128-byte preamble)")]
    NotDicom,
    #[error("empty file")]
    Empty,
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt or truncated DICOM: {0}")]
    Parse(String),
    #[error("missing required attribute {0}")]
    Missing(&'static str),
    #[error("{0} is not a valid DICOM UID ({1})")]
    BadUid(&'static str, String),
}

/// How much of an object is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Everything before Pixel Data (the matcher's header read).
    Header,
    /// The whole object, pixel data included (the quality gate).
    Whole,
}

impl Extent {
    /// The most bytes read for this extent.
    pub fn cap(self) -> u64 {
        match self {
            Extent::Header => MAX_HEADER,
            Extent::Whole => MAX_WHOLE,
        }
    }
}

/// Largest header (everything before Pixel Data) read; real SEG headers are a few MB at most.
pub const MAX_HEADER: u64 = 64 * 1024 * 1024;
/// Largest whole object read for validation.
pub const MAX_WHOLE: u64 = 1024 * 1024 * 1024;

/// Opens a Part-10 file: read once (capped), checked, parsed from the bytes checked.
pub fn open_file(path: &Path, extent: Extent) -> Result<DefaultDicomObject, ReadError> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut rec = Recorder {
        inner: f,
        buf: Vec::new(),
        pos: 0,
        cap: extent.cap(),
    };
    let mut head = [0u8; 132];
    let n = read_up_to(&mut rec, &mut head)?;
    if n == 0 {
        return Err(ReadError::Empty);
    }
    if n < 132 || &head[128..132] != b"DICM" {
        return Err(ReadError::NotDicom);
    }
    if extent == Extent::Whole && len > extent.cap() {
        return Err(too_large(len, extent));
    }
    let checked = match extent {
        Extent::Header => super::guard::prescan_header(&mut rec, len),
        Extent::Whole => super::guard::prescan(&mut rec, len),
    };
    if rec.buf.len() as u64 >= extent.cap() {
        return Err(too_large(rec.buf.len() as u64, extent));
    }
    checked.map_err(ReadError::Parse)?;
    parse(&rec.buf, extent)
}

/// Opens a Part-10 object held in memory (a WADO-RS part, an Orthanc file): checked, then
/// parsed from the same bytes.
pub fn open_bytes(bytes: &[u8], extent: Extent) -> Result<DefaultDicomObject, ReadError> {
    if bytes.is_empty() {
        return Err(ReadError::Empty);
    }
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(ReadError::NotDicom);
    }
    let mut c = std::io::Cursor::new(bytes);
    c.set_position(132);
    let len = bytes.len() as u64;
    match extent {
        Extent::Header => super::guard::prescan_header(c, len),
        Extent::Whole => super::guard::prescan(c, len),
    }
    .map_err(ReadError::Parse)?;
    parse(bytes, extent)
}

fn too_large(n: u64, extent: Extent) -> ReadError {
    ReadError::Parse(format!(
        "{} larger than {} bytes ({n} bytes or more)",
        match extent {
            Extent::Header => "the header (before Pixel Data) is",
            Extent::Whole => "the file is",
        },
        extent.cap()
    ))
}

/// Parses checked bytes (from the start of the preamble). A panic in the parser (a bug on
/// hostile input) is an error for this object, not the end of the process.
fn parse(bytes: &[u8], extent: Extent) -> Result<DefaultDicomObject, ReadError> {
    std::panic::catch_unwind(|| {
        let mut o = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
        if extent == Extent::Header {
            o = o.read_until(tags::PIXEL_DATA);
        }
        o.from_reader(&bytes[128..])
            .map_err(|e| ReadError::Parse(error_chain(&e)))
    })
    .unwrap_or_else(|_| Err(ReadError::Parse("the DICOM parser panicked".into())))
}

/// Reads until `buf` is full or the stream ends; returns how much was read.
pub(super) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reader that keeps every byte it reads from `inner`, so that what the pre-scan walked can
/// be handed to the parser. Seeking forward reads (and keeps) the bytes skipped; seeking back
/// stays inside what was kept. At most `cap` bytes are kept.
struct Recorder<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    cap: u64,
}

impl<R: Read> Recorder<R> {
    /// Reads from `inner` until `upto` bytes are kept (fewer at its end).
    fn fill(&mut self, upto: u64) -> std::io::Result<()> {
        let have = self.buf.len() as u64;
        if upto <= have {
            return Ok(());
        }
        if upto > self.cap {
            // keep exactly `cap` bytes: the caller sees it hit the cap
            let room = self.cap.saturating_sub(have);
            (&mut self.inner).take(room).read_to_end(&mut self.buf)?;
            return Err(std::io::Error::other(format!(
                "more than {} bytes to read",
                self.cap
            )));
        }
        (&mut self.inner)
            .take(upto - have)
            .read_to_end(&mut self.buf)?;
        Ok(())
    }
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.buf.len() {
            let want = (self.pos + out.len().max(1)) as u64;
            self.fill(want.min(self.cap.max(self.buf.len() as u64 + 1)))?;
        }
        let avail = &self.buf[self.pos.min(self.buf.len())..];
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl<R: Read> Seek for Recorder<R> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
            SeekFrom::End(_) => {
                return Err(std::io::Error::other("seek from the end is not supported"))
            }
        };
        if target < 0 {
            return Err(std::io::Error::other("seek before the start"));
        }
        let target = target as u64;
        self.fill(target)?;
        if target > self.buf.len() as u64 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.pos = target as usize;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorder_keeps_what_was_read_and_skipped_and_stops_at_its_cap() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut r = Recorder {
            inner: &data[..],
            buf: Vec::new(),
            pos: 0,
            cap: 600,
        };
        let mut b = [0u8; 4];
        r.read_exact(&mut b).unwrap();
        r.seek(SeekFrom::Current(100)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(b, [104, 105, 106, 107]);
        r.seek(SeekFrom::Current(-2)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(b, [106, 107, 108, 109]);
        assert_eq!(r.buf, data[..110]);
        assert!(r.seek(SeekFrom::Current(1000)).is_err());
        assert_eq!(r.buf.len(), 600);
    }
}
