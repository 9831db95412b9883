//! Many SEG files in one request: Orthanc's `POST /tools/create-archive` with the instances'
//! IDs answers one ZIP of their files. A backfill reads a whole chunk's headers (and, for the
//! quality gate, pixels) from it instead of one request per file.

use std::io::Read;

use serde_json::json;

use crate::source::endpoint::Endpoint;
use crate::source::http::{PacsClient, PacsError};

/// The files in the ZIP Orthanc answered for `ids` (instance IDs), each read whole. The
/// answer is at most `limit` bytes, and so is everything it unpacks to: a ZIP that claims or
/// unpacks to more is an error (the caller then reads the files one by one).
pub async fn files(
    rest: &PacsClient,
    ids: &[String],
    limit: usize,
) -> Result<Vec<Vec<u8>>, PacsError> {
    let at = Endpoint::at(&["tools", "create-archive"]);
    let zip = rest
        .post_at_most(
            &at,
            &json!({"Resources": ids, "Synchronous": true}),
            "application/zip",
            limit,
        )
        .await?;
    unzip(&zip, limit).map_err(|reason| PacsError::Bad {
        url: rest.url(&at),
        reason,
    })
}

/// Every file of a ZIP, unpacked to at most `limit` bytes in all.
pub fn unzip(bytes: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a ZIP archive: {e}"))?;
    let mut left = limit;
    let mut out = Vec::with_capacity(z.len().min(4096));
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(|e| format!("ZIP entry {i}: {e}"))?;
        if f.is_dir() {
            continue;
        }
        let claimed = usize::try_from(f.size()).unwrap_or(usize::MAX);
        if claimed > left {
            return Err(format!(
                "ZIP entry {i} unpacks to {claimed} bytes, more than the {limit} allowed in all"
            ));
        }
        // never more than claimed, whatever the compressed stream holds
        let mut data = Vec::with_capacity(claimed);
        (&mut f)
            .take(claimed as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| format!("ZIP entry {i}: {e}"))?;
        if data.len() != claimed {
            return Err(format!(
                "ZIP entry {i} unpacks to another size than it claims ({} vs {claimed})",
                data.len()
            ));
        }
        left -= claimed;
        out.push(data);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(files: &[&[u8]]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (i, f) in files.iter().enumerate() {
            w.start_file(
                format!("d/{i}.dcm"),
                zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Deflated),
            )
            .unwrap();
            w.write_all(f).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn files_come_out_whole_and_bounded() {
        let z = zip_of(&[b"one", &[7u8; 10_000]]);
        let got = unzip(&z, 1 << 20).unwrap();
        assert_eq!(got, vec![b"one".to_vec(), vec![7u8; 10_000]]);
        // a bomb: small ZIP, large content
        let e = unzip(&z, 5_000).unwrap_err();
        assert!(e.contains("more than the 5000 allowed"), "{e}");
        assert!(unzip(b"PK\x03\x04 not really", 100).is_err());
        assert!(unzip(&z[..z.len() / 2], 1 << 20).is_err());
    }
}
