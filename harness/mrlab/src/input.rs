//! Input files read whole, each kind with a size cap: `/dev/zero`, a device or a huge file is
//! one error naming the file, never a read that eats memory. A directory or a missing file is
//! named as such.

use std::io::Read;
use std::path::{Path, PathBuf};

/// What a file is read as, and the most bytes such a file may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub what: &'static str,
    pub max: u64,
}

const MIB: u64 = 1 << 20;

/// OVMF builds are 2–4 MiB; QEMU maps `-bios` below 4 GiB, and flash images stay far under this.
pub const FIRMWARE: Kind = Kind {
    what: "firmware image",
    max: 64 * MIB,
};
/// Kernels, PE images, UKIs and option ROMs.
pub const IMAGE: Kind = Kind {
    what: "kernel or PE image",
    max: 256 * MIB,
};
/// Initrds and the ESP disk images a prediction reads whole.
pub const DISK: Kind = Kind {
    what: "initrd or disk image",
    max: 2048 * MIB,
};
/// TPM event logs, CCELs (the ACPI area is at most a few MiB) and dstack JSON logs.
pub const EVENT_LOG: Kind = Kind {
    what: "event log",
    max: 64 * MIB,
};
/// One file of a results folder's `evidence/` (logs, PCRs, fw_cfg blobs, reports).
pub const EVIDENCE: Kind = Kind {
    what: "evidence file",
    max: 64 * MIB,
};
/// A quote is a few KiB with its certificate chain; a TDREPORT is 1024 bytes.
pub const QUOTE: Kind = Kind {
    what: "quote or TDREPORT",
    max: MIB,
};

/// Why an input file was not read: the file is named, the cause (if any) is `source()`.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: is a directory, not a {what}", .path.display())]
    Directory { path: PathBuf, what: &'static str },
    #[error("{}: larger than {} MiB, the most a {what} may be", .path.display(), .max / MIB)]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        max: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |source| InputError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads `path` as `kind`: at most `kind.max` bytes, or an error naming the file.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, InputError> {
    let (file, len) = open(path, kind)?;
    // Sized up front: `Take` gives `read_to_end` no size hint, and growing by doubling made a
    // 4 MiB firmware an 8 MiB allocation (one more byte to see the end).
    let mut bytes = Vec::with_capacity(len.min(kind.max) as usize + 1);
    file.take(kind.max + 1)
        .read_to_end(&mut bytes)
        .map_err(io(path))?;
    if bytes.len() as u64 > kind.max {
        return Err(too_large(path, kind));
    }
    Ok(bytes)
}

/// Opens `path` for reading as `kind`, with its length; a folder is refused by name.
fn open(path: &Path, kind: Kind) -> Result<(std::fs::File, u64), InputError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_dir() {
        return Err(InputError::Directory {
            path: path.to_owned(),
            what: kind.what,
        });
    }
    let file = std::fs::File::open(path).map_err(io(path))?;
    Ok((file, meta.len()))
}

fn too_large(path: &Path, kind: Kind) -> InputError {
    InputError::TooLarge {
        path: path.to_owned(),
        what: kind.what,
        max: kind.max,
    }
}

/// Feeds the file at `path` to `piece`, a chunk at a time, as [`read`] would read it (at most
/// `kind.max` bytes, or an error naming the file): for inputs that are only hashed, so that a
/// large initrd never sits in memory whole.
pub fn read_in_pieces(
    path: &Path,
    kind: Kind,
    mut piece: impl FnMut(&[u8]),
) -> Result<(), InputError> {
    const CHUNK: usize = 4 << 20;
    let (mut file, len) = open(path, kind)?;
    if len > kind.max {
        return Err(too_large(path, kind));
    }
    let mut buf = vec![0u8; CHUNK.min(len as usize + 1).max(1)];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(path)(e)),
        };
        total += n as u64;
        if total > kind.max {
            return Err(too_large(path, kind));
        }
        piece(&buf[..n]);
    }
}

/// The part of the disk image at `path` that its primary GPT spans (what a UEFI boot from it
/// measures), not the whole image: an ESP image is 130 MiB, its GPT 17 KiB. A disk whose first
/// two blocks hold no GPT header is read whole, so the GPT check names what is wrong with it.
pub fn read_gpt_span(path: &Path, block_size: u32) -> Result<Vec<u8>, InputError> {
    let head_len = 2 * u64::from(block_size);
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(head_len).read_to_end(&mut head))
        .map_err(io(path))?;
    match measure::gpt::primary_gpt_len(&head, block_size) {
        Some(len) if len <= DISK.max => {
            let mut span = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(len).read_to_end(&mut span))
                .map_err(io(path))?;
            Ok(span)
        }
        _ => read(path, DISK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_devices_directories_and_missing_files_are_named_errors() {
        let e = read(Path::new("/dev/zero"), QUOTE).unwrap_err().to_string();
        assert_eq!(
            e,
            "/dev/zero: larger than 1 MiB, the most a quote or TDREPORT may be"
        );
        let e = read(Path::new("/"), FIRMWARE).unwrap_err().to_string();
        assert_eq!(e, "/: is a directory, not a firmware image");
        let e = read(Path::new("/no/such/file"), EVENT_LOG).unwrap_err();
        assert!(
            matches!(&e, InputError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        // The file, then its cause, once.
        let e = crate::error::chain(&e);
        assert!(e.starts_with("/no/such/file: No such file"), "{e}");
        assert_eq!(e.matches("No such file").count(), 1, "{e}");
        assert_eq!(
            read(Path::new("/dev/null"), EVENT_LOG).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn pieces_are_the_file_in_order_and_bounded_like_read() {
        // 9 MiB + 5 bytes: more than two 4 MiB chunks.
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let bytes: Vec<u8> = (0..(9 << 20) + 5).map(|i| (i % 251) as u8).collect();
        std::fs::write(file.path(), &bytes).expect("write");
        let mut seen = Vec::new();
        read_in_pieces(file.path(), DISK, |p| seen.extend_from_slice(p)).expect("read");
        assert!(seen == bytes, "the pieces, joined, are the file");
        // The same bounds and errors as `read`: an endless device, a directory.
        let e = read_in_pieces(Path::new("/dev/zero"), QUOTE, |_| {}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/dev/zero: larger than 1 MiB, the most a quote or TDREPORT may be"
        );
        let e = read_in_pieces(Path::new("/"), DISK, |_| {}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/: is a directory, not a initrd or disk image"
        );
    }
}
