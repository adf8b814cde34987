//! Puts the git commit into `tapswitch --version` (`TAPSWITCH_VERSION`): "0.1.0 (1a3ffaf)"
//! from a git checkout, plain "0.1.0" from a source tree without one (a crate tarball,
//! `git archive`) or without git installed.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    match &commit {
        Some(commit) => println!("cargo:rustc-env=TAPSWITCH_VERSION={version} ({commit})"),
        None => println!("cargo:rustc-env=TAPSWITCH_VERSION={version}"),
    }
    println!(
        "cargo:rustc-env=TAPSWITCH_COMMIT={}",
        commit.as_deref().unwrap_or("")
    );
    println!("cargo:rerun-if-changed=build.rs");
    // A new commit or a checkout moves HEAD or the branch it names (in a worktree, HEAD is
    // the worktree's own and the branch is in the common directory); a branch can also be
    // packed. Without a .git nothing is watched but build.rs.
    if let (Some(git_dir), Some(common_dir)) = (
        git(&["rev-parse", "--absolute-git-dir"]),
        git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]),
    ) {
        let git_dir = PathBuf::from(git_dir);
        let common_dir = PathBuf::from(common_dir);
        let mut watched = vec![git_dir.join("HEAD"), common_dir.join("packed-refs")];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common_dir.join(branch));
        }
        // A path that does not exist would rerun this script on every build.
        for path in watched.iter().filter(|path| path.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
