//! One newc ("070701") cpio record, the format the kernel unpacks as initramfs (Linux
//! Documentation/driver-api/early-userspace/buffer-format.rst) and systemd-stub writes: a
//! 110-byte ASCII header of `070701` and 13 eight-digit hex fields, the NUL-terminated name
//! padded to 4 bytes, the data padded to 4 bytes. Owner 0:0, mtime 0, device 0:0, check 0.

/// What varies per record; everything else is written as zero.
pub struct Record<'a> {
    pub inode: u32,
    pub mode: u32,
    pub nlink: u32,
    pub name: &'a str,
    pub data: &'a [u8],
    /// The (major, minor) a character or block device node stands for.
    pub rdev: (u32, u32),
}

/// Append `record` to `out`, which must hold whole records so far (4-byte aligned).
pub fn write_record(out: &mut Vec<u8>, record: &Record) {
    let fields = [
        record.inode,
        record.mode,
        0, // uid
        0, // gid
        record.nlink,
        0, // mtime
        record.data.len() as u32,
        0, // devmajor
        0, // devminor
        record.rdev.0,
        record.rdev.1,
        record.name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(record.name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(record.data);
    pad4(out);
}

/// Zero-pad `out` to a multiple of 4 bytes (newc alignment, also between concatenated archives).
pub fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
