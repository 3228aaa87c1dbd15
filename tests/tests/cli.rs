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

#[test]
fn doctor_with_a_mode_exits_by_whether_that_mode_works_here() {
    // Kprobe mode works where the kernel has kprobe events; tracepoint mode everywhere here.
    let kprobes = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let (code, out, err) = run(&["doctor", "--mode", "kprobe"]);
    assert_eq!(code, if kprobes { 0 } else { 1 }, "{out}{err}");
    let said = if kprobes { "works" } else { "does not work" };
    assert!(out.contains(&format!("--mode kprobe: {said}")), "{out}");
    let (code, out, err) = run(&["doctor", "--mode", "tracepoint"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("--mode tracepoint: works"), "{out}");
}

#[test]
fn sockets_with_an_unknown_netns_is_bad_input() {
    let (code, _, err) = run(&["sockets", "--netns", "no-such-namespace-xyz"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-namespace-xyz"), "{err}");
}
