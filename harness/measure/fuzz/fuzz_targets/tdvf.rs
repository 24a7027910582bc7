//! TDVF metadata parser and everything computed from parsed metadata: any bytes must give a
//! value or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use measure::tdvf::{self, PageOrder, Section, Tdvf};

/// Page adds cost one hash block each; metadata may ask for up to 4 GiB. Keep each run short.
const MAX_PAGES: u64 = 1 << 12;

fuzz_target!(|image: &[u8]| {
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
});
