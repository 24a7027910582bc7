//! Every managed QEMU is self-contained: its binary and each of its loadable modules resolve
//! every shared library inside its own root (the host's libraries and `ld.so.cache` unused),
//! so the same bytes run on Debian 12, Debian 13 and Ubuntu 24.04. Asked of the root's own
//! loader (`ld.so --list`), which does the same resolution as a real start.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Each `name => path` that `--list` printed, and each "not found".
fn resolved(qemu: &qemu::QemuBinary, object: &Path) -> Vec<String> {
    let loader = qemu
        .loader
        .as_ref()
        .expect("a managed QEMU runs through its loader");
    let dirs: Vec<String> = loader
        .library_path
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    let out = std::process::Command::new(&loader.path)
        .args([
            "--inhibit-cache",
            "--library-path",
            &dirs.join(":"),
            "--list",
        ])
        .arg(object)
        .output()
        .expect("run the root's loader");
    assert!(
        out.status.success(),
        "{} --list {}: {}",
        loader.path.display(),
        object.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once("=>").map(|(_, path)| path.trim().to_owned()))
        .collect()
}

#[test]
fn managed_qemus_load_only_their_own_libraries() {
    let cache = images::Cache::open(&repo()).expect("lock");
    for id in ["qemu-7.2", "qemu-10.0", "qemu-11.1"] {
        let qemu = cache.qemu(id).unwrap_or_else(|e| panic!("{e}"));
        let root = cache.program_root(id).expect("fetched");
        let modules = &qemu.env[0].1;
        let mut objects = vec![qemu.program.clone()];
        objects.extend(
            std::fs::read_dir(modules)
                .expect("module dir")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "so")),
        );
        assert!(
            objects.len() > 5,
            "{id}: modules missing in {}",
            modules.display()
        );
        for object in &objects {
            let libs = resolved(&qemu, object);
            // Some modules need only symbols of the binary itself; QEMU needs many libraries.
            assert!(
                *object != qemu.program || libs.len() > 20,
                "{id}: {} links only {libs:?}",
                object.display()
            );
            for lib in libs {
                let path = lib.split(" (").next().unwrap_or_default();
                assert!(
                    Path::new(path).starts_with(&root),
                    "{id}: {} loads {lib} from outside its root {}",
                    object.display(),
                    root.display()
                );
            }
        }
        // And it starts: the version it reports is the one the lock pins.
        let out = qemu.command().arg("--version").output().expect("--version");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{id} --version: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let version = id.trim_start_matches("qemu-");
        assert!(
            text.contains(&format!("version {version}.")),
            "{id}: {text}"
        );
    }
}
