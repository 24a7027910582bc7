//! What a managed (Debian) OVMF build writes into its own measurements: the strings of its
//! FixedPcds PcdFirmwareVendor, PcdFirmwareVersionString and PcdFirmwareReleaseDateString
//! (EV_S_CRTM_VERSION and OVMF's SMBIOS type 0, see `measure::smbios`).
//!
//! Debian's build sets them from the package (observed with 2026.08+ds-2, whose SMBIOS type 0
//! reads "Debian distribution of EDK II", "2026.08+ds-2", "09/26/2026"):
//! - the vendor: "Debian distribution of EDK II";
//! - the version: the package version;
//! - the release date: the date (UTC, MM/DD/YYYY) of the newest `debian/changelog` entry, the
//!   build's SOURCE_DATE_EPOCH (the package's file times carry the same instant).

use crate::{Cache, Error};
use measure::smbios::FirmwareStrings;
use std::io::Read;

/// PcdFirmwareVendor of Debian's OVMF builds.
pub const DEBIAN_FIRMWARE_VENDOR: &str = "Debian distribution of EDK II";

impl Cache {
    /// The firmware strings of OVMF package `id` (e.g. `ovmf-2026.08`).
    pub fn firmware_strings(&self, id: &str) -> Result<FirmwareStrings, Error> {
        let package = self.locked(id)?.clone();
        let path = self
            .package(id)?
            .join("usr/share/doc")
            .join(&package.name)
            .join("changelog.Debian.gz");
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| flate2::read::GzDecoder::new(f).read_to_string(&mut text))
            .map_err(|e| Error::Io(path.clone(), e))?;
        let release_date = changelog_date(&text).ok_or_else(|| Error::Package {
            id: id.to_owned(),
            what: format!(
                "{}: no \" -- maintainer  date\" line in the newest entry",
                path.display()
            ),
        })?;
        Ok(FirmwareStrings {
            vendor: DEBIAN_FIRMWARE_VENDOR.to_owned(),
            version: package.version,
            release_date,
        })
    }
}

/// The UTC date of the newest changelog entry's trailer
/// (` -- Name <mail>  Sat, 26 Sep 2026 12:14:17 -0600` → `09/26/2026`).
fn changelog_date(text: &str) -> Option<String> {
    let trailer = text.lines().find(|l| l.starts_with(" -- "))?;
    let (_, date) = trailer.rsplit_once("  ")?;
    // "Sat, 26 Sep 2026 12:14:17 -0600"
    let mut words = date.split_whitespace().skip(1);
    let day: i64 = words.next()?.parse().ok()?;
    let month = words.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year: i64 = words.next()?.parse().ok()?;
    let mut clock = words.next()?.split(':').map(str::parse::<i64>);
    let (h, m) = (clock.next()?.ok()?, clock.next()?.ok()?);
    let zone = words.next()?;
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let zone: i64 = zone.get(1..)?.parse().ok()?;
    let offset = sign * ((zone / 100) * 60 + zone % 100);
    // Local minutes of the day minus the offset: the UTC day is this day, the one before or after.
    let utc_minutes = h * 60 + m - offset;
    let days = days_from_civil(year, month, day) + utc_minutes.div_euclid(24 * 60);
    let (y, mo, d) = civil_from_days(days);
    Some(format!("{mo:02}/{d:02}/{y:04}"))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_date_is_the_utc_day_of_the_newest_entry() {
        let entry = |date: &str| {
            format!(
                "edk2 (2026.08+ds-2) unstable; urgency=medium\n\n  * x\n\n -- A B <a@b>  {date}\n\n\
                 edk2 (2026.08+ds-1) unstable; urgency=medium\n\n -- A B <a@b>  Mon, 01 Jan 2024 00:00:00 +0000\n"
            )
        };
        // OVMF 2026.08+ds-2's entry; its SMBIOS type 0 says 09/26/2026.
        let real = entry("Sat, 26 Sep 2026 12:14:17 -0600");
        assert_eq!(changelog_date(&real).as_deref(), Some("09/26/2026"));
        // Late in the evening west of UTC is the next UTC day, early east of it the one before.
        let late = entry("Thu, 31 Dec 2026 23:30:00 -0200");
        assert_eq!(changelog_date(&late).as_deref(), Some("01/01/2027"));
        let early = entry("Sun, 01 Mar 2026 00:30:00 +0100");
        assert_eq!(changelog_date(&early).as_deref(), Some("02/28/2026"));
        assert_eq!(changelog_date("edk2 (1) unstable\n"), None);
    }
}
