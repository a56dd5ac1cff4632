#!/usr/bin/env bash
# Build maintd's Debian package: the manual pages and shell completions
# (actors/examples/gen_docs.rs, from the binary's own command line), then `cargo deb`
# with the [package.metadata.deb] of actors/Cargo.toml. Extra arguments go to cargo deb.
# The last line printed is the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "cargo-deb is required: cargo install cargo-deb --locked" >&2
  exit 1
fi

# The package's assets name target/release/..., which cargo deb maps to the real target
# directory (CARGO_TARGET_DIR or a configured one), so the docs go there too.
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [ -z "$target_dir" ]; then
  echo "cannot find cargo's target directory" >&2
  exit 1
fi
docs="$target_dir/release/maintd-docs"
rm -rf "$docs"
# Release profile: the example shares the library build with the packaged binary.
cargo run --quiet --locked --release -p maintd-actors --example gen_docs -- "$docs" >/dev/null
# Debian wants manual pages compressed at the highest level; -n keeps the package
# reproducible (no name or time stamp in the gzip header).
gzip -9n "$docs"/man/*.8

# cargo deb prints the path of the package on stdout; its progress goes to stderr.
deb=$(cargo deb --locked -p maintd-actors "$@" | tail -n 1)
if [ ! -f "$deb" ]; then
  echo "cargo deb did not report a package: $deb" >&2
  exit 1
fi
echo "$deb"
