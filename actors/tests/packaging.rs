//! The Debian package built by `packaging/build-deb.sh`: what it holds, that lintian
//! accepts it, and that the binary it installs runs. Ignored by a plain `cargo test`: it
//! needs cargo-deb, dpkg-deb and lintian, and a release build.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(program: &str, args: &[&str], hint: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({hint}): {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "needs cargo-deb, dpkg-deb and lintian: apt-get install dpkg-dev lintian; cargo install cargo-deb --locked"]
fn debian_package_holds_everything_passes_lintian_and_runs() {
    let built = run(
        "bash",
        &["packaging/build-deb.sh"],
        "bash packaging/build-deb.sh",
    );
    assert!(
        built.status.success(),
        "build-deb.sh: {}\n{}",
        built.status,
        text(&built.stderr)
    );
    let stdout = text(&built.stdout);
    let deb = stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(
        deb.ends_with(".deb") && Path::new(&deb).is_file(),
        "the last line names the package: {stdout:?}"
    );

    // The files, where Debian expects them.
    let listing = run("dpkg-deb", &["-c", &deb], "apt-get install dpkg");
    assert!(listing.status.success(), "{}", text(&listing.stderr));
    let listing = text(&listing.stdout);
    for file in [
        "./usr/sbin/maintd",
        "./lib/systemd/system/maintd.service",
        "./lib/systemd/system/maintd-agent.service",
        "./etc/maintd/maintd.toml",
        "./usr/share/man/man8/maintd.8.gz",
        "./usr/share/man/man8/maintd-daemon.8.gz",
        "./usr/share/man/man8/maintd-agent.8.gz",
        "./usr/share/man/man8/maintd-state-check.8.gz",
        "./usr/share/bash-completion/completions/maintd",
        "./usr/share/zsh/vendor-completions/_maintd",
        "./usr/share/fish/vendor_completions.d/maintd.fish",
        "./usr/share/doc/maintd/copyright",
        "./usr/share/doc/maintd/examples/maintd-alerts.yml",
    ] {
        assert!(
            listing.lines().any(|line| line.ends_with(file)),
            "{file} is missing from the package:\n{listing}"
        );
    }
    let conffiles = run("dpkg-deb", &["-I", &deb, "conffiles"], "dpkg-deb");
    assert_eq!(
        text(&conffiles.stdout).trim(),
        "/etc/maintd/maintd.toml",
        "the configuration is a conffile"
    );

    // lintian: no error and no warning (justified overrides in packaging/lintian-overrides).
    let lint = run(
        "lintian",
        &[
            "--fail-on",
            "error,warning",
            "--tag-display-limit",
            "0",
            &deb,
        ],
        "apt-get install lintian",
    );
    assert!(
        lint.status.success(),
        "lintian {}:\n{}{}",
        lint.status,
        text(&lint.stdout),
        text(&lint.stderr)
    );

    // Unpacked into an empty tree, the binary runs and reads the packaged settings.
    let tree = tempfile::tempdir().expect("tempdir");
    let tree_path = tree.path().display().to_string();
    let unpacked = run("dpkg-deb", &["-x", &deb, &tree_path], "dpkg-deb");
    assert!(unpacked.status.success(), "{}", text(&unpacked.stderr));
    let binary = tree.path().join("usr/sbin/maintd");
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .expect("the packaged binary runs");
    assert!(version.status.success(), "{}", text(&version.stderr));
    assert_eq!(
        text(&version.stdout).trim(),
        format!("maintd {}", env!("CARGO_PKG_VERSION"))
    );
    let config = tree.path().join("etc/maintd/maintd.toml");
    let state = tree.path().join("state");
    std::fs::create_dir(&state).expect("state directory");
    let check = Command::new(&binary)
        .arg("state")
        .arg("check")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("the packaged binary runs");
    assert!(
        check.status.success(),
        "the packaged /etc/maintd/maintd.toml loads: {}\n{}{}",
        check.status,
        text(&check.stdout),
        text(&check.stderr)
    );
}
