//! Locating and running the external programs of the parity harness: the htools oracle
//! (`hbal`, `hail`) and the `maintd` binary under test.
//!
//! Every lookup failure is a clear error naming what is missing and how to get it: an
//! oracle test that is run must fail, never pass silently, on a machine without the
//! oracle (those tests are `#[ignore]`d by default, see the crate doc).

use std::{
    env,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

/// Where Debian's `ganeti-htools-3.0` puts its programs when the `ganeti` package (which
/// adds the `/usr/bin` and `/usr/lib/ganeti/iallocators` links) is not installed.
const HTOOLS_DIRS: &[&str] = &[
    "/usr/lib/ganeti/3.0/usr/bin",
    "/usr/lib/ganeti/3.0/usr/lib/ganeti/iallocators",
    "/usr/lib/ganeti/iallocators",
];

const INSTALL_HINT: &str = "install Debian's htools: \
    `apt-get install -y --no-install-recommends ganeti-htools-3.0` (.ci/run does this)";

/// `name` from the environment variable `var`, else from `PATH`, else from `extra_dirs`.
fn find_program(name: &str, var: &str, extra_dirs: &[&str]) -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(var) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("${var} = {} is not a file", path.display()))
        };
    }
    let path_dirs = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "`{name}` not found (looked at ${var}, PATH and {})",
                extra_dirs.join(", ")
            )
        })
}

/// The `hbal` binary (`$HBAL` overrides).
pub fn hbal() -> Result<PathBuf, String> {
    find_program("hbal", "HBAL", HTOOLS_DIRS).map_err(|e| format!("{e}; {INSTALL_HINT}"))
}

/// The `hail` iallocator (`$HAIL` overrides).
pub fn hail() -> Result<PathBuf, String> {
    find_program("hail", "HAIL", HTOOLS_DIRS).map_err(|e| format!("{e}; {INSTALL_HINT}"))
}

/// Panics with one message listing every missing oracle tool.
pub fn require_oracle() {
    let missing: Vec<String> = [hbal(), hail()]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        missing.is_empty(),
        "the htools parity tests need the real htools as their oracle:\n  {}",
        missing.join("\n  ")
    );
}

/// Runs `program args...`, returning its output when it exits with status 0 and a
/// descriptive error (command line, status, stderr) otherwise.
pub fn run<I, S>(program: &Path, args: I) -> Result<Output, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let shown = shell_line(program, &args);
    let output = Command::new(program)
        .args(&args)
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "`{shown}` failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A command line as a user would type it (for error messages and reproductions).
pub fn shell_line<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(AsRef::as_ref))
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `maintd` binary of this workspace, built (once per test process) with the profile
/// of the running test binary, so that a plain `cargo test --test htools_parity` works
/// and never compares against a stale binary. `$MAINTD_BIN` overrides (no build then).
///
/// The root package cannot use `CARGO_BIN_EXE_maintd` (the binary belongs to
/// `maintd-actors`), so the path is derived from the test executable:
/// `<target>/<profile>/deps/htools_parity-<hash>` → `<target>/<profile>/maintd`.
pub fn maintd() -> Result<PathBuf, String> {
    static MAINTD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MAINTD.get_or_init(build_maintd).clone()
}

/// Panics once, with one clear message, when `maintd plan` cannot run at all (not built,
/// or the subcommand does not exist yet) or lacks `flag` in its `--help`, instead of one
/// identical failure per case.
pub fn require_maintd_plan(flag: &str) {
    let help = maintd().and_then(|binary| run(&binary, ["plan", "--help"]));
    match help {
        Err(e) => panic!("`maintd plan` is not available, so parity cannot be checked:\n{e}"),
        Ok(output) => assert!(
            String::from_utf8_lossy(&output.stdout).contains(flag),
            "`maintd plan` has no {flag} option yet, so parity cannot be checked"
        ),
    }
}

fn build_maintd() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os("MAINTD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test binary location {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("unexpected test binary location {}", exe.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or("debug");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut args: Vec<String> = vec![
        "build".into(),
        "--quiet".into(),
        "--package".into(),
        "maintd-actors".into(),
        "--bin".into(),
        "maintd".into(),
        "--manifest-path".into(),
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").into(),
        "--target-dir".into(),
        target_dir.display().to_string(),
    ];
    match profile {
        "debug" => {}
        "release" => args.push("--release".into()),
        other => args.extend(["--profile".into(), other.into()]),
    }
    run(Path::new(&cargo), &args)?;
    let binary = profile_dir.join("maintd");
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!(
            "cargo built maintd but {} is missing",
            binary.display()
        ))
    }
}
