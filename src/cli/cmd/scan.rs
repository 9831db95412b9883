//! `scan`: list every source once and print how each label matches; nothing is written.

use crate::app::report::print_scan;
use crate::app::settings::Settings;
use crate::app::Failure;

pub fn scan(s: &Settings, json_out: bool) -> Result<(), Failure> {
    let rt = crate::app::runtime()?;
    let validator = rt.block_on(s.validator())?;
    let sources = s.sources_with(validator)?;
    let (merged, errors) = rt.block_on(crate::app::sync::scan_once(&sources, s.pacs.chunk));
    print_scan(&merged, json_out)?;
    super::source_errors(errors)
}
