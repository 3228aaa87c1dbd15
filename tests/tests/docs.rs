//! The README and `--help` in step: every flag any `--help` lists (keepalive's and the
//! development tasks') is in the README, and every flag the README shows exists.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use keepalive_tests::tracer::binary;

/// Flags of other tools that the README quotes, with the tool.
const OTHER_TOOLS: &[(&str, &str)] = &[
    ("--proto", "curl (installing rustup)"),
    ("--tlsv1", "curl (installing rustup)"),
    ("--llvm-args", "bpf-linker"),
    ("--now", "systemctl enable"),
    ("--tool", "valgrind"),
    ("--record-path", "keepalive-bench"),
];

/// The `xtask` binary `cargo xtask test` runs (it passes itself as `XTASK_BIN`).
fn xtask() -> PathBuf {
    std::env::var_os("XTASK_BIN")
        .map(PathBuf::from)
        .expect("XTASK_BIN is not set: run the tests with `cargo xtask test`")
}

fn help(bin: &PathBuf, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{bin:?} {args:?} --help");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a top-level `--help` lists (not `help`).
fn subcommands(top: &str) -> Vec<String> {
    top.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags a `--help` declares: the first `--name` on each line that starts with `-`.
fn declared(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .filter_map(|l| flags_in(l).into_iter().next())
        .collect()
}

/// Every `--name` token in `text`.
fn flags_in(text: &str) -> Vec<String> {
    let mut found = vec![];
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'-')
        {
            end += 1;
        }
        if before_ok && end > start + 2 && bytes[start + 2].is_ascii_lowercase() {
            found.push(text[start..end].trim_end_matches('-').to_string());
        }
        i = end.max(start + 2);
    }
    found
}

/// Every long flag of a binary and its subcommands.
fn all_flags(bin: &PathBuf) -> BTreeSet<String> {
    let top = help(bin, &[]);
    let mut flags = declared(&top);
    for sub in subcommands(&top) {
        flags.extend(declared(&help(bin, &[&sub])));
    }
    flags
}

#[test]
fn every_flag_in_help_is_in_the_readme_and_every_flag_the_readme_shows_exists() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let shown: BTreeSet<String> = flags_in(&readme).into_iter().collect();
    let keepalive = all_flags(&binary());
    let tasks = all_flags(&xtask());
    assert!(
        keepalive.contains("--port") && tasks.contains("--minutes"),
        "{keepalive:?} {tasks:?}"
    );

    let undocumented: Vec<&String> = keepalive
        .union(&tasks)
        .filter(|f| !shown.contains(*f))
        .collect();
    assert!(
        undocumented.is_empty(),
        "in --help, not in the README: {undocumented:?}"
    );

    let other: BTreeSet<&str> = OTHER_TOOLS.iter().map(|(f, _)| *f).collect();
    let unknown: Vec<&String> = shown
        .iter()
        .filter(|f| !keepalive.contains(*f) && !tasks.contains(*f) && !other.contains(f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "in the README, in no --help: {unknown:?}"
    );
}

#[test]
fn flags_are_found_in_text() {
    assert_eq!(
        flags_in("`--port 22`, --tlsv1.2, a -- b, x--y, --min-life=5s --"),
        ["--port", "--tlsv1", "--min-life"]
    );
    assert_eq!(
        declared("  -p, --port <PORT>\n          Only --addr\n      --all\n"),
        ["--all".to_string(), "--port".to_string()].into()
    );
}
