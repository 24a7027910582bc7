//! The firmware strings read from a pinned OVMF package (`.cache/debs`, so `images/fetch.sh`
//! must have run). Here, not in the crate's unit tests, because it reads the image cache.

use images::Cache;
use measure::smbios::FirmwareStrings;

#[test]
fn the_pinned_2026_08_package_gives_what_its_smbios_type_0_said() {
    let cache = Cache::open(&images::workspace_root()).expect("lock");
    let strings = cache
        .firmware_strings("ovmf-2026.08")
        .unwrap_or_else(|e| panic!("{e} (run images/fetch.sh)"));
    assert_eq!(
        strings,
        FirmwareStrings {
            vendor: "Debian distribution of EDK II".into(),
            version: "2026.08+ds-2".into(),
            release_date: "09/26/2026".into(),
        }
    );
}
