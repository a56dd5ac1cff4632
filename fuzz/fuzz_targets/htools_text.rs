//! The htools text format (`hbal -t`, `hspace --simu` output) read by
//! `maintd::htools::text::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use maintd::htools::text::{parse, write};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cluster) = parse(input) {
        // What maintd writes for hbal must read back as the same cluster.
        let written = write(&cluster);
        let again = parse(&written)
            .unwrap_or_else(|e| panic!("a written cluster does not parse: {e}\n{written}"));
        assert_eq!(write(&again), written);
    }
});
