//! `maintd state check` and `maintd state reset`: the operator's tools for a state file
//! maintd refuses to start on.

use std::path::PathBuf;

use maintd::{
    clock::Clock,
    config::Settings,
    model::{incident::MaintenanceState, replication::next_serial},
    store::JsonStore,
};

use crate::{cli::StateArgs, daemon::registry::STATE_FILE};

/// The state store named by `args` (the configuration's `daemon.state_dir` unless
/// `--state-dir` is given).
fn store(args: &StateArgs) -> Result<JsonStore, String> {
    let dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => {
            let settings = Settings::load(args.config.as_deref()).map_err(|e| e.to_string())?;
            PathBuf::from(settings.daemon.state_dir)
        }
    };
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    JsonStore::open(&dir, STATE_FILE).map_err(|e| e.to_string())
}

/// A few lines describing a valid state.
pub fn summary(state: &MaintenanceState) -> String {
    let open = state
        .incidents
        .iter()
        .filter(|i| i.status.is_open())
        .count();
    let mut out = format!(
        "serial: {}, incidents: {} ({open} open), forgotten kept: {}, round: {} ({} jobs, {} unfinished)\n",
        state.serial,
        state.incidents.len(),
        state.forgotten.len(),
        state.round.number,
        state.round.jobs.len(),
        state.unfinished_jobs().len(),
    );
    if let Some(pause) = &state.safety.pause {
        out.push_str(&format!("paused by {}\n", pause.by));
    }
    if let Some(trip) = &state.safety.breaker {
        out.push_str(&format!("circuit breaker tripped: {}\n", trip.reason));
    }
    out
}

/// `maintd state check`: 0 with a summary for a valid (or absent) state file, an error
/// naming the file otherwise.
pub fn check(args: &StateArgs) -> Result<u8, String> {
    let store = store(args)?;
    let path = store.path().display().to_string();
    match store
        .load::<MaintenanceState>()
        .map_err(|e| e.to_string())?
    {
        None => println!("{path}: no state file; maintd starts empty"),
        Some(state) => print!("{path}: valid\n{}", summary(&state)),
    }
    Ok(0)
}

/// `maintd state reset`: archive the state file, whatever it holds, and put an empty state
/// in its place, so maintd starts empty. The empty state's serial is `clock`'s time now:
/// newer than every copy the master candidates' agents keep, so maintd takes it over them
/// and replaces them with it.
pub fn reset(args: &StateArgs, clock: &Clock) -> Result<u8, String> {
    let store = store(args)?;
    let now = clock.now();
    let archived = store
        .archive(&format!("reset-{}", now as u64))
        .map_err(|e| e.to_string())?;
    let empty = MaintenanceState {
        serial: next_serial(0, now),
        ..MaintenanceState::new()
    };
    store.save(&empty).map_err(|e| e.to_string())?;
    match archived {
        Some(archived) => println!(
            "{} archived as {}; maintd starts empty",
            store.path().display(),
            archived.display()
        ),
        None => println!(
            "{}: no state file before; maintd starts empty",
            store.path().display()
        ),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_dates_the_archive_and_the_serial_by_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let args = StateArgs {
            config: None,
            state_dir: Some(dir.path().to_owned()),
        };
        let store = JsonStore::open(dir.path(), STATE_FILE).unwrap();
        store
            .save(&MaintenanceState {
                serial: 42,
                ..MaintenanceState::new()
            })
            .unwrap();
        let clock = Clock::starting_at(1_750_000_000.0);
        assert_eq!(reset(&args, &clock), Ok(0));
        assert!(dir
            .path()
            .join(format!("{STATE_FILE}.reset-1750000000"))
            .is_file());
        let empty: MaintenanceState = store.load().unwrap().unwrap();
        assert!(empty.incidents.is_empty());
        let serial = empty.serial;
        assert!(
            (1_750_000_000_000..1_750_000_010_000).contains(&serial),
            "{serial}"
        );
    }
}
