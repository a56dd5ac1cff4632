//! The daemon's state file: `JsonStore::load::<MaintenanceState>()`, as the supervisor
//! reads it at start-up.
#![no_main]

use std::{path::PathBuf, sync::OnceLock};

use libfuzzer_sys::fuzz_target;
use maintd::{model::incident::MaintenanceState, store::JsonStore};

fn store() -> &'static JsonStore {
    static STORE: OnceLock<JsonStore> = OnceLock::new();
    STORE.get_or_init(|| {
        // In memory where there is a tmpfs: on disk the writes would slow the run tenfold.
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("maintd-fuzz-state-{}", std::process::id()));
        JsonStore::open(&dir, "state.json").unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    std::fs::write(store.path(), data).unwrap();
    let Ok(Some(state)) = store.load::<MaintenanceState>() else {
        return;
    };
    // A state that loads is saved (as `JsonStore::save` serializes it) and loads equal.
    let saved = serde_json::to_vec_pretty(&state).expect("a loaded state serializes");
    let back: MaintenanceState = serde_json::from_slice(&saved)
        .unwrap_or_else(|e| panic!("a saved state does not load: {e}"));
    assert_eq!(back, state);
    // What the daemon asks of a state right after loading it.
    let _ = (
        state.unfinished_jobs(),
        state.unconfirmed_submissions(),
        state.round_finished(),
        state.stuck_jobs().count(),
    );
    for incident in &state.incidents {
        let _ = (
            state.still_observed(incident),
            incident.failed_tag(),
            incident.started(),
        );
    }
});
