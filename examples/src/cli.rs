//! Shell completions and man pages for `idnsd` and `idnsctl`, generated from their clap
//! definitions, so that they never drift from the options the programs accept.
//!
//! ```text
//! idnsctl completions bash > /etc/bash_completion.d/idnsctl
//! idnsctl man > /usr/local/share/man/man1/idnsctl.1
//! idnsd --completions zsh > ~/.zfunc/_idnsd
//! idnsd --man > /usr/local/share/man/man1/idnsd.1
//! ```

use std::io::Write;

pub use clap_complete::Shell;

/// Writes the completion script of `cmd` for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Writes the man page of `cmd` (roff, section 1), with one section per subcommand.
pub fn man(cmd: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = cmd.disable_help_subcommand(true);
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    let subcommands: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    if !subcommands.is_empty() {
        writeln!(out, ".SH COMMANDS")?;
        for sub in subcommands {
            let about = sub
                .get_long_about()
                .or(sub.get_about())
                .map(ToString::to_string)
                .unwrap_or_default();
            let usage = sub
                .clone()
                .bin_name(format!("{} {}", cmd.get_name(), sub.get_name()))
                .render_usage()
                .to_string();
            let usage = usage.trim_start_matches("Usage: ");
            writeln!(
                out,
                ".TP\n\\fB{}\\fR\n{}",
                roff_text(usage),
                roff_text(&about)
            )?;
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let name = match (arg.get_long(), arg.get_short()) {
                    (Some(l), _) => format!("\\-\\-{l}"),
                    (None, Some(s)) => format!("\\-{s}"),
                    (None, None) => arg.get_id().as_str().to_uppercase(),
                };
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                writeln!(out, ".RS\n.TP\n\\fB{name}\\fR\n{}\n.RE", roff_text(&help))?;
            }
        }
    }
    // The exit codes are the long help's epilogue.
    if let Some(status) = cmd.get_after_long_help() {
        let text = status.to_string();
        let text = text.strip_prefix("Exit status: ").unwrap_or(&text);
        writeln!(out, ".SH \"EXIT STATUS\"\n{}", roff_text(text))?;
    }
    page.render_version_section(out)
}

/// Text for a roff line: backslashes and leading dots or quotes escaped.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    match s.chars().next() {
        Some('.' | '\'') => format!("\\&{s}"),
        _ => s,
    }
}
