//! What the integration tests share: the checkout, its image cache and its fixture files. Each
//! test binary includes this module (`mod common;`) and uses only some of it, hence the
//! `dead_code` allowance; every helper here has callers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The checkout's root (where `scenarios/`, `images/` and `.cache` are).
pub fn repo() -> PathBuf {
    images::workspace_root()
}

/// The checkout's image cache; the tests that need it need fetched packages.
pub fn cache() -> images::Cache {
    images::Cache::open(&repo()).expect("image cache (run ci/setup-host.sh)")
}

/// `scenarios/<name>.toml`.
pub fn scenario_path(name: &str) -> PathBuf {
    repo().join("scenarios").join(format!("{name}.toml"))
}

/// `harness/fixtures/<path>`: captures and files copied in with their provenance.
pub fn fixture_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(path)
}

/// The bytes of `harness/fixtures/<path>`.
pub fn fixture(path: &str) -> Vec<u8> {
    let p = fixture_path(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `harness/mrlab/tests/data/<name>`: scenarios and stand-ins written for these tests.
pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// `.cache/debs/<id>/<path>` of a fetched package.
pub fn deb_file(id: &str, path: &str) -> PathBuf {
    repo().join(".cache/debs").join(id).join(path)
}

/// Every `.rs` file below `dir`.
pub fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
