//! Small durable-file helpers: atomic replace (tmp + fsync + rename + fsync dir),
//! directory sync, and the checksummed `u64` files used for the epoch and
//! consumer positions.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Makes a directory entry change (create, rename) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new
/// content, never a mix. The temporary file is `<name>.tmp`, so concurrent
/// writers of the same path must be serialized by the caller.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path without parent"))?;
    let mut tmp_name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path without file name"))?
        .to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// `[value u64 LE][crc32c u32 LE]`.
pub(crate) fn encode_u64(value: u64) -> [u8; 12] {
    let mut out = [0; 12];
    out[..8].copy_from_slice(&value.to_le_bytes());
    let crc = crc32c::crc32c(&out[..8]);
    out[8..].copy_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != 12 {
        return None;
    }
    let mut v = [0; 8];
    v.copy_from_slice(&bytes[..8]);
    let mut c = [0; 4];
    c.copy_from_slice(&bytes[8..]);
    (crc32c::crc32c(&v) == u32::from_le_bytes(c)).then(|| u64::from_le_bytes(v))
}

/// Reads a checksummed u64 file; `Ok(None)` when it does not exist.
pub(crate) fn read_u64_file(path: &Path) -> io::Result<Option<Result<u64, ()>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(decode_u64(&bytes).ok_or(()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_file_roundtrip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        assert!(read_u64_file(&p).unwrap().is_none());
        write_atomic(&p, &encode_u64(77)).unwrap();
        assert_eq!(read_u64_file(&p).unwrap(), Some(Ok(77)));
        fs::write(&p, b"garbage").unwrap();
        assert_eq!(read_u64_file(&p).unwrap(), Some(Err(())));
    }
}
