//! Kernel modules for the initramfs: find them by name in a Debian kernel package's
//! `lib/modules/<release>/`, follow their `depends=` (from each module's `.modinfo` section, since
//! `dpkg-deb -x` does not run depmod), and decompress `.ko.xz` on the host so the agent only
//! needs `finit_module` without flags.

use crate::Error;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module ready for the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    /// Path relative to `lib/modules/<release>/`, ending in `.ko`.
    pub rel_path: String,
    /// Uncompressed ELF object.
    pub data: Vec<u8>,
}

/// Modules as the kernel names them: `-` and `_` are the same.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn module_name(rel: &str) -> Option<String> {
    let file = rel.rsplit('/').next()?;
    Some(normalize(file.strip_suffix(".ko")?))
}

/// The modules among `wanted` (and their dependencies) that are loadable modules of this kernel,
/// in load order (dependencies first). Names built into the kernel or unknown to it are skipped:
/// the agent reports the missing device when it was expected.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, Error> {
    let order_path = modules_dir.join("modules.order");
    let order = fs::read_to_string(&order_path).map_err(|e| Error::Io(order_path.clone(), e))?;
    let by_name: BTreeMap<String, String> = order
        .lines()
        .filter_map(|rel| Some((module_name(rel.trim())?, rel.trim().to_owned())))
        .collect();

    let mut loaded: Vec<Module> = Vec::new();
    let mut visiting = BTreeSet::new();
    for name in wanted {
        visit(
            modules_dir,
            &by_name,
            &normalize(name),
            &mut visiting,
            &mut loaded,
        )?;
    }
    Ok(loaded)
}

fn visit(
    modules_dir: &Path,
    by_name: &BTreeMap<String, String>,
    name: &str,
    visiting: &mut BTreeSet<String>,
    loaded: &mut Vec<Module>,
) -> Result<(), Error> {
    if loaded.iter().any(|m| m.name == name) || !visiting.insert(name.to_owned()) {
        return Ok(());
    }
    let Some(rel) = by_name.get(name) else {
        return Ok(());
    };
    let data = read_module(&modules_dir.join(rel))?;
    for dep in depends(&data).map_err(|what| Error::Module {
        path: modules_dir.join(rel),
        what,
    })? {
        visit(modules_dir, by_name, &normalize(&dep), visiting, loaded)?;
    }
    loaded.push(Module {
        name: name.to_owned(),
        rel_path: rel.clone(),
        data,
    });
    Ok(())
}

/// Reads `<path>` or, when the package ships it compressed, `<path>.xz` decompressed.
fn read_module(path: &Path) -> Result<Vec<u8>, Error> {
    if path.exists() {
        return fs::read(path).map_err(|e| Error::Io(path.to_owned(), e));
    }
    let xz = PathBuf::from(format!("{}.xz", path.display()));
    if xz.exists() {
        let compressed = fs::read(&xz).map_err(|e| Error::Io(xz.clone(), e))?;
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut compressed.as_slice(), &mut out).map_err(|e| {
            Error::Module {
                path: xz.clone(),
                what: format!("xz decompression failed: {e}"),
            }
        })?;
        return Ok(out);
    }
    for ext in ["zst", "gz"] {
        let other = PathBuf::from(format!("{}.{ext}", path.display()));
        if other.exists() {
            return Err(Error::Module {
                path: other,
                what: format!("{ext}-compressed modules are not supported (only .ko and .ko.xz)"),
            });
        }
    }
    Err(Error::Module {
        path: path.to_owned(),
        what: "listed in modules.order but neither .ko nor .ko.xz exists".into(),
    })
}

/// The `depends=` list of a module's `.modinfo` section (NUL-separated `key=value` strings).
fn depends(elf: &[u8]) -> Result<Vec<String>, String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).map_err(|e| format!("not an ELF object: {e}"))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or("no .modinfo section")?;
    let info = section
        .data()
        .map_err(|e| format!(".modinfo unreadable: {e}"))?;
    Ok(info
        .split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}
