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
        // Known and reported (README.md): policy lines name their group, and an empty name
        // is the cluster's; with two groups of one name, or a group with no name, a policy
        // goes to the wrong owner (as in htools), so such a cluster does not round-trip.
        // Ganeti never has such groups.
        let mut names: Vec<&str> = cluster.groups.iter().map(|g| g.name.as_str()).collect();
        names.sort_unstable();
        if names.first() == Some(&"") || names.windows(2).any(|w| w[0] == w[1]) {
            return;
        }
        // What maintd writes for hbal must read back as the same cluster.
        let written = write(&cluster);
        let again = parse(&written)
            .unwrap_or_else(|e| panic!("a written cluster does not parse: {e}\n{written}"));
        assert_eq!(write(&again), written);
    }
});
