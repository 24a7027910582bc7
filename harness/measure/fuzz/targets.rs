//! The bodies of the measure fuzz targets, shared by the cargo-fuzz binaries
//! (`fuzz_targets/*.rs`) and the stable mutation test (`harness/mrlab/tests/fuzz_targets.rs`):
//! any bytes give a value or an error, never a panic or a hang.

use measure::devpath::{DevicePath, LoadOption};
use measure::tdvf::{self, PageOrder, Section, Tdvf};

/// Page adds cost one hash block each; metadata may ask for up to 4 GiB. Keep each run short.
const MAX_PAGES: u64 = 1 << 12;

/// TDVF metadata and everything computed from parsed metadata.
pub fn tdvf(image: &[u8]) {
    let Ok(parsed) = Tdvf::parse(image) else {
        return;
    };
    if parsed.sections.iter().map(Section::pages).sum::<u64>() <= MAX_PAGES {
        let _ = tdvf::mrtd(&parsed, image, PageOrder::SinglePass);
        let _ = tdvf::mrtd(&parsed, image, PageOrder::TwoPass);
    }
    for memory in [2 << 30, 0xb000_0000, 64 << 30] {
        let _ = tdvf::td_hob_event(&parsed, memory);
    }
    let _ = tdvf::cfv_event(&parsed, image);
}

/// PE parsing, Authenticode ranges and the embedded-signature DER walk; image load events.
pub fn pe(data: &[u8]) {
    if let Ok(image) = measure::pe::PeImage::parse(data) {
        let _ = image.authenticode_ranges();
        let _ = image.signed_digests();
    }
    let _ = measure::pe::ImageLoadEvent::decode(data);
}

/// Device path decoding; what decodes must re-encode to the same bytes and render as text.
pub fn devpath(data: &[u8]) {
    if let Ok(path) = DevicePath::decode(data) {
        let _ = path.to_string();
        if let Ok(again) = path.encode() {
            assert_eq!(again, data);
        }
    }
}

/// EFI_LOAD_OPTION and UEFI_VARIABLE_DATA decoding.
pub fn load_option(data: &[u8]) {
    if let Ok(option) = LoadOption::decode(data) {
        let _ = option.to_string();
        let _ = option.encode();
    }
    let _ = measure::uefi::VariableData::parse(data);
}

/// GPT from a disk image (512- and 4096-byte sectors) and UEFI_GPT_DATA decoding, which must
/// re-encode to the same bytes.
pub fn gpt(data: &[u8]) {
    let _ = measure::gpt::GptData::from_disk(data, 512);
    let _ = measure::gpt::GptData::from_disk(data, 4096);
    if let Ok(gpt) = measure::gpt::GptData::decode(data) {
        assert_eq!(gpt.encode(), data);
    }
}
