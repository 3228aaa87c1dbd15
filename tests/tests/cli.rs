//! The command line as a user meets it: help with examples, clear errors for bad input.

use std::process::Command;

use keepalive_tests::tracer::binary;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn trace_help_explains_every_option_with_examples() {
    let (code, help, _) = run(&["trace", "--help"]);
    assert_eq!(code, 0);
    for option in [
        "--format",
        "--output",
        "--port",
        "--netns",
        "--kind",
        "--btf",
        "--ring-buffer-size",
    ] {
        assert!(help.contains(option), "--help lacks {option}:\n{help}");
    }
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("keepalive trace --port"), "{help}");
}

#[test]
fn bad_values_are_clear_errors_not_panics() {
    for (args, says) in [
        (&["trace", "--port", "70000"][..], "70000"),
        (&["trace", "--format", "yaml"][..], "yaml"),
        (&["trace", "--kind", "nonsense"][..], "nonsense"),
        (&["trace", "--ring-buffer-size", "1000"][..], "power of two"),
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn unknown_netns_and_missing_btf_name_what_is_missing() {
    // Bad input is 2, like a bad flag; a system without what is needed is 1.
    let (code, _, err) = run(&["trace", "--netns", "no-such-namespace-xyz"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-namespace-xyz"), "{err}");
    let (code, _, err) = run(&["trace", "--btf", "/nonexistent/vmlinux"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("/nonexistent/vmlinux") && err.contains("BTF"),
        "{err}"
    );
}
