//! `skiff-gen-docs DIR`: writes skiff's man pages (DIR/man/skiff.1, skiff-copy.1, ...) and shell
//! completions (DIR/completions/skiff.bash, _skiff, skiff.fish) from its clap definition.
//! `make docs` runs it on cli/doc, where they are committed for `make install`; a test of the
//! skiff crate fails when the committed ones differ from what this writes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};
use skiff::cli::help::EXAMPLES_HEADING;

/// The completion files, named as bash-completion, zsh's fpath and fish look them up (bash's is
/// installed as `skiff`; the suffix keeps the directory readable).
const COMPLETIONS: [(Shell, &str); 3] = [
    (Shell::Bash, "skiff.bash"),
    (Shell::Zsh, "_skiff"),
    (Shell::Fish, "skiff.fish"),
];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: skiff-gen-docs DIR (writes DIR/man/*.1 and DIR/completions/*)");
        return ExitCode::from(1);
    };
    let dir = PathBuf::from(dir);
    match write_man_pages(&dir.join("man"))
        .and_then(|()| write_completions(&dir.join("completions")))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-gen-docs: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// skiff.1 and one page per command (skiff-delta-create.1 for `skiff delta create`), replacing
/// every page there so that a removed command leaves no stale page behind.
fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("Reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            std::fs::remove_file(&path).with_context(|| format!("Removing {}", path.display()))?;
        }
    }
    // No `help` command in the pages: each command has its own page instead.
    let mut cmd = skiff::command().disable_help_subcommand(true);
    cmd.build();
    write_pages(&cmd, dir)
}

fn write_pages(cmd: &clap::Command, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let path = dir.join(man(cmd.clone()).get_filename());
    std::fs::write(&path, page(cmd)?).with_context(|| format!("Writing {}", path.display()))
}

/// clap_mangen's page, with the help's examples as an EXAMPLES section instead of its EXTRA
/// (which would fill them into one paragraph), and a SEE ALSO.
fn page(cmd: &clap::Command) -> Result<Vec<u8>> {
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
    let mut roff = Roff::new();
    examples(&mut roff, cmd).with_context(|| format!("The help of {name}"))?;
    roff.control("SH", ["SEE ALSO"]);
    let see_also = if name == "skiff" {
        "skopeo-copy"
    } else {
        "skiff"
    };
    roff.text([bold(see_also), roman("(1)")]);

    let mut out = Vec::new();
    man(cmd.clone().after_help(None::<&str>)).render(&mut out)?;
    // Each rendering starts with the same preamble (the apostrophe string): keep the first.
    let preamble = Roff::new().render();
    let tail = roff.render();
    out.extend_from_slice(tail.strip_prefix(&preamble).unwrap_or(&tail).as_bytes());
    Ok(out)
}

fn man(cmd: clap::Command) -> Man {
    Man::new(cmd)
        .source(format!("skiff {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands")
}

/// The examples that end the command's help: each comment a paragraph, each command unfilled
/// and indented, so that it can be copied as it stands.
fn examples(roff: &mut Roff, cmd: &clap::Command) -> Result<()> {
    let help = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let Some(body) = help.strip_prefix(EXAMPLES_HEADING) else {
        bail!("the help ends with no {EXAMPLES_HEADING:?}");
    };
    roff.control("SH", ["EXAMPLES"]);
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix("# ") {
            Some(comment) => {
                roff.control("PP", []).text([roman(comment)]);
            }
            None => {
                roff.control("RS", ["4"]).control("nf", []);
                roff.text([roman(line)]).control("fi", []).control("RE", []);
            }
        }
    }
    Ok(())
}

/// One completion script per shell, for the `skiff` command.
fn write_completions(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("Creating {}", dir.display()))?;
    let cmd = without_hidden(&skiff::command());
    for (shell, file) in COMPLETIONS {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "skiff", &mut script);
        let path = dir.join(file);
        std::fs::write(&path, script).with_context(|| format!("Writing {}", path.display()))?;
    }
    Ok(())
}

/// `cmd` (not yet built) without its hidden flags, which clap_complete would offer: skiff's
/// hidden flags are the skopeo ones that `skiff copy` refuses by name. Only what completions
/// use is kept: names, about texts, version, visible flags and commands.
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    // Without clap's `string` feature a name must be 'static; this program runs once and exits.
    let name: &'static str = Box::leak(cmd.get_name().to_owned().into_boxed_str());
    let mut out = clap::Command::new(name)
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        );
    if let Some(about) = cmd.get_about() {
        out = out.about(about.clone());
    }
    if cmd.get_version().is_some() {
        // The skiff crate's version: this program is in that crate.
        out = out.version(env!("CARGO_PKG_VERSION"));
    }
    out
}
