//! What an operator installs besides the binary, tried as they would: the version it names, the
//! shell completions (loaded into a real bash, asked to complete), the manual pages (rendered by
//! `man`), and the systemd unit (checked by `systemd-analyze verify`).

use std::process::Command;

use crate::support::doppel;

fn stdout(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The version in Cargo.lock of `name` (what the binary must name).
fn locked(name: &str) -> String {
    let lock =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock")).unwrap();
    let entry = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&entry).unwrap() + entry.len();
    lock[start..].split('"').next().unwrap().to_string()
}

#[test]
fn the_version_names_the_engine_and_the_consensus_library() {
    let version = stdout(doppel().arg("--version").output().unwrap());
    let expected = format!(
        "doppel {} (wasmtime {}, openraft {})\n",
        env!("CARGO_PKG_VERSION"),
        locked("wasmtime"),
        locked("openraft")
    );
    assert_eq!(version, expected);
}

#[test]
fn bash_completes_subcommands_and_flags_from_the_generated_script() {
    let script = stdout(doppel().args(["completions", "bash"]).output().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doppel.bash");
    std::fs::write(&file, script).unwrap();
    // What bash does when a user types `doppel mig<TAB>`, then `doppel deploy --na<TAB>`.
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _doppel doppel \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; echo \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        stdout(
            Command::new("bash")
                .arg("-c")
                .arg(program)
                .output()
                .unwrap(),
        )
    };
    assert_eq!(complete("doppel mig").trim(), "migrate");
    assert!(complete("doppel deploy --na").contains("--name"));
    let refused = doppel().args(["completions", "tcsh"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("possible values"));
}

#[test]
fn the_manual_has_a_page_per_subcommand_that_man_renders() {
    let dir = tempfile::tempdir().unwrap();
    stdout(
        doppel()
            .args(["man", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap(),
    );
    for page in [
        "doppel.1",
        "doppel-host.1",
        "doppel-deploy.1",
        "doppel-hosts-invite.1",
    ] {
        assert!(dir.path().join(page).is_file(), "{page} missing");
    }
    assert!(!dir.path().join("doppel-help.1").exists());
    let rendered = Command::new("man")
        .args(["-P", "cat", "-l"])
        .arg(dir.path().join("doppel-deploy.1"))
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    let text = stdout(rendered);
    assert!(text.contains("doppel-deploy"), "{text}");
    assert!(text.contains("--name"), "{text}");
}

#[test]
fn the_systemd_unit_verifies_and_keeps_its_hardening() {
    let unit = include_str!("../../packaging/doppel.service");
    for setting in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=doppel",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == setting), "{setting} is gone");
    }
    // systemd-analyze checks that the program exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doppel.service");
    let binary = env!("CARGO_BIN_EXE_doppel");
    std::fs::write(&file, unit.replace("/usr/local/bin/doppel", binary)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it)");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("doppel.service"), "{said}");
}

/// The container recipe cannot be built on these machines (no container engine), so what can
/// drift from the code is checked here: every `DOPPEL_*` setting it makes is one `doppel host`
/// reads, it runs as a user of its own, and the key comes from a file, never the environment.
#[test]
fn the_container_recipe_sets_only_settings_the_host_reads() {
    let recipe = include_str!("../../packaging/Containerfile");
    let help = stdout(
        Command::new(env!("CARGO_BIN_EXE_doppel"))
            .args(["host", "--help"])
            .output()
            .unwrap(),
    );
    // Help text is wrapped to the terminal's width, anywhere between words.
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let settings: Vec<&str> = recipe
        .split(|c: char| c.is_whitespace() || c == '=')
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        .filter(|w| w.starts_with("DOPPEL_") && w.len() > "DOPPEL_".len())
        .collect();
    assert!(settings.contains(&"DOPPEL_KEY_FILE"), "{settings:?}");
    assert!(
        !settings.contains(&"DOPPEL_KEY"),
        "the key must not be an environment variable"
    );
    for setting in settings {
        // A secret's value is hidden: `[env: NAME]` instead of `[env: NAME=value]`.
        let named = help.contains(&format!("env: {setting}="))
            || help.contains(&format!("env: {setting}]"));
        assert!(named, "{setting} is not a setting of doppel host:\n{help}");
    }
    assert!(
        recipe.lines().any(|l| l == "USER doppel"),
        "the host must not run as root"
    );
    assert!(recipe.contains("ENTRYPOINT [\"/usr/local/bin/doppel\"]"));
}
