//! A deterministic writer for the newc ("070701") cpio format the kernel unpacks as initramfs.
//!
//! Determinism: entries are sorted by path (so parents precede children), owner 0:0, mtime 0,
//! inode numbers 1.. in that order, no hard links. Layout per entry (Linux
//! Documentation/driver-api/early-userspace/buffer-format.rst): a 110-byte ASCII header of
//! `070701` and 13 eight-digit hex fields, the NUL-terminated name padded to 4 bytes, the data
//! padded to 4 bytes; the archive ends with a `TRAILER!!!` entry.

use measure::cpio::{write_record, Record};
use std::collections::BTreeMap;

/// What one archive path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    CharDevice { major: u32, minor: u32 },
}

/// A set of paths (relative, `/`-separated, no leading `/`) to archive.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Node>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Archive {
    /// Adds `path` and every missing ancestor directory; a later insert of the same path wins.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            self.entries.entry(prefix.clone()).or_insert(Node::Dir);
        }
        self.entries.insert(path.to_owned(), node);
    }

    /// The archive bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, (path, node)) in self.entries.iter().enumerate() {
            let (mode, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (S_IFDIR | 0o755, 2, &[], (0, 0)),
                Node::File { data, executable } => (
                    S_IFREG | if *executable { 0o755 } else { 0o644 },
                    1,
                    data,
                    (0, 0),
                ),
                Node::CharDevice { major, minor } => (S_IFCHR | 0o600, 1, &[], (*major, *minor)),
            };
            let (inode, name) = (index as u32 + 1, path.as_str());
            write_record(
                &mut out,
                &Record {
                    inode,
                    mode,
                    nlink,
                    name,
                    data,
                    rdev,
                },
            );
        }
        let trailer = Record {
            inode: 0,
            mode: 0,
            nlink: 1,
            name: "TRAILER!!!",
            data: &[],
            rdev: (0, 0),
        };
        write_record(&mut out, &trailer);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Oracle: GNU cpio's listing of the archive (`cpio -itv`), when cpio is installed, plus
    /// hand-checked header bytes.
    #[test]
    fn layout_of_a_small_archive() {
        let mut a = Archive::default();
        a.insert(
            "init",
            Node::File {
                data: b"hi".to_vec(),
                executable: true,
            },
        );
        a.insert("dev/console", Node::CharDevice { major: 5, minor: 1 });
        let bytes = a.to_bytes();
        // Sorted: dev, dev/console, init, trailer.
        let header = |off: usize| {
            std::str::from_utf8(&bytes[off..off + 110])
                .unwrap()
                .to_owned()
        };
        let dev = header(0);
        assert_eq!(&dev[..6], "070701");
        assert_eq!(&dev[6..14], "00000001"); // ino
        assert_eq!(&dev[14..22], "000041ed"); // dir 0755
        assert_eq!(&bytes[110..114], b"dev\0");
        // 110 + 4 = 114 -> padded to 116.
        let console = header(116);
        assert_eq!(&console[14..22], "00002180"); // chr 0600
        assert_eq!(&console[78..86], "00000005"); // rdevmajor
        assert_eq!(&console[86..94], "00000001"); // rdevminor
        assert_eq!(&bytes[226..238], b"dev/console\0");
        let init = header(240);
        assert_eq!(&init[14..22], "000081ed");
        assert_eq!(&init[54..62], "00000002"); // size
        assert_eq!(&bytes[350..355], b"init\0");
        assert_eq!(&bytes[356..358], b"hi");
        assert!(bytes.ends_with(b"TRAILER!!!\0\0\0\0"));
        assert_eq!(bytes.len() % 4, 0);
    }
}
