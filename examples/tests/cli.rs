//! The programs' shell completions and man pages, generated from their clap definitions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

const IDNSCTL: &str = env!("CARGO_BIN_EXE_idnsctl");
const IDNSD: &str = env!("CARGO_BIN_EXE_idnsd");
const COMMANDS: [&str; 9] = [
    "status",
    "failover",
    "failback",
    "freeze",
    "unfreeze",
    "drill",
    "resume",
    "completions",
    "man",
];

#[test]
fn idnsctl_completes_every_command_in_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, err) = run(IDNSCTL, &["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {err}");
        for c in COMMANDS {
            assert!(
                script.contains(c),
                "{shell} completion lacks {c}:\n{script}"
            );
        }
        // fish writes `-l url` where the others write `--url`.
        for opt in ["url", "token-file", "json", "wait", "force"] {
            assert!(script.contains(opt), "{shell} completion lacks --{opt}");
        }
    }
    let (code, _, err) = run(IDNSCTL, &["completions", "tcsh"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}

#[test]
fn idnsctl_has_a_man_page_with_its_commands_and_exit_codes() {
    let (code, page, err) = run(IDNSCTL, &["man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(page.contains(".TH idnsctl 1"), "{page}");
    for c in COMMANDS {
        assert!(
            page.contains(&format!("\\fBidnsctl {c}")),
            "no {c} in the man page:\n{page}"
        );
    }
    assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
    assert!(page.contains("4 token refused"), "{page}");
    // Every line a roff request or text, none a stray dot-command from a help text.
    assert!(page.lines().all(|l| !l.starts_with(". ")), "{page}");
}

#[test]
fn idnsd_has_completions_and_a_man_page() {
    let (code, script, err) = run(IDNSD, &["--completions", "bash"]);
    assert_eq!(code, Some(0), "{err}");
    for opt in ["--config", "--check", "--completions", "--man"] {
        assert!(script.contains(opt), "bash completion lacks {opt}");
    }
    let (code, page, err) = run(IDNSD, &["--man"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(page.contains(".TH idnsd 1"), "{page}");
    assert!(page.contains("\\-\\-check"), "{page}");
    assert!(
        page.contains("2 when the configuration is refused"),
        "{page}"
    );
    // Either alone; not with a configuration to run.
    let (code, _, err) = run(IDNSD, &["--man", "--config", "/nonexistent.toml"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = run(IDNSD, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--config"), "{err}");
}
