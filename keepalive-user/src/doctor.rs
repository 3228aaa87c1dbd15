//! `keepalive doctor`: what this kernel offers, which mode `auto` picks and why, and what the
//! other modes lack. Every answer comes from the running system (files, symbols, BTF, and
//! loading each mode for real), so it is what a trace would get.

use std::{io::Write, path::Path};

use anyhow::Result;
use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};
use keepalive_common::programs::KEEPALIVE_TIMER_FN;

use crate::{
    kernel,
    kernel::btf,
    kernel::hooks::{self, AttachMode, Hook, Modes},
    kernel::loader::{self, LoadOptions},
};

/// Writes the report; returns false when no mode works here (or, for `--mode kprobe` or
/// `--mode tracepoint`, when that mode does not).
pub fn report(opts: &LoadOptions, out: &mut impl Write) -> Result<bool> {
    let uname = nix::sys::utsname::uname()?;
    writeln!(
        out,
        "kernel:       Linux {} {}",
        uname.release().to_string_lossy(),
        uname.machine().to_string_lossy()
    )?;
    match kernel::hz() {
        Ok(hz) => writeln!(out, "HZ:           {hz}")?,
        Err(e) => writeln!(out, "HZ:           unknown ({e:#})")?,
    }
    let btf_path = &opts.btf_path;
    let types = btf::load(btf_path);
    match (&types, std::fs::metadata(btf_path)) {
        (Ok(_), Ok(m)) => writeln!(
            out,
            "BTF:          {} ({} KiB), struct layouts resolved",
            btf_path.display(),
            m.len() / 1024
        )?,
        (Err(e), _) => writeln!(out, "BTF:          missing or unusable: {e:#}")?,
        (Ok(_), Err(e)) => writeln!(out, "BTF:          {}: {e}", btf_path.display())?,
    }
    match kernel::symbol_address(KEEPALIVE_TIMER_FN) {
        Ok(a) => writeln!(out, "kallsyms:     {KEEPALIVE_TIMER_FN} at {a:#x}")?,
        Err(e) => writeln!(out, "kallsyms:     {e:#}")?,
    }
    let _ = kernel::ensure_tracefs();
    let tracefs = Path::new(kernel::TRACEFS).join("events").exists();
    writeln!(
        out,
        "tracefs:      {}",
        if tracefs {
            kernel::TRACEFS
        } else {
            "not mounted (and mounting it failed)"
        }
    )?;
    let kprobe_functions: Vec<&str> = hooks::kprobe_functions().collect();
    match kernel::kprobes_unavailable(&kprobe_functions) {
        None => writeln!(out, "kprobes:      yes ({})", kprobe_functions.join(", "))?,
        Some(why) => writeln!(out, "kprobes:      no: {why}")?,
    }

    writeln!(out, "\ntracepoints:")?;
    for p in hooks::tracepoints() {
        let Hook::Tracepoint { group, name } = p.hook else {
            continue;
        };
        let have = kernel::has_tracepoint(group, name);
        // Tracepoint mode's own tracepoints: kprobe mode does without them.
        let what = match p.modes {
            Modes::Tracepoint => format!("{} in tracepoint mode", p.lost_without),
            _ => p.lost_without.to_string(),
        };
        writeln!(
            out,
            "  {:<32} {}",
            format!("{group}:{name}"),
            if have {
                "yes".to_string()
            } else {
                format!("no: {what} are lost")
            }
        )?;
    }
    if let Ok(t) = &types {
        writeln!(
            out,
            "  reset reasons                    {}",
            if t.send_reset_has_reason {
                "yes (Linux 6.10+): the kernel names each reset's cause"
            } else {
                "no (before 6.10): kprobe mode names causes from the calling function"
            }
        )?;
        writeln!(
            out,
            "  drop reasons                     {}",
            if t.has_drop_reasons() {
                "yes (Linux 5.17+): packets of dying connections this host drops are named"
            } else {
                "no (before 5.17): drops on this host are not reported (no dropped_here)"
            }
        )?;
    }

    writeln!(out, "\nprogram types:")?;
    let program = |t| match is_program_supported(t) {
        Ok(true) => "yes".to_string(),
        Ok(false) => "no".to_string(),
        Err(e) => format!("unknown ({e})"),
    };
    // aya's probe for tracing programs loads an fentry program, which some kernels refuse
    // (EPERM) while BTF tracepoints load fine: loading keepalive's own is the real test.
    let tracepoint = loader::try_mode(opts, AttachMode::Tracepoint);
    writeln!(
        out,
        "  tracing (tp_btf)   {}",
        match &tracepoint {
            Ok(()) => "yes".to_string(),
            Err(_) => format!("{} (aya's probe)", program(ProgramType::Tracing)),
        }
    )?;
    writeln!(
        out,
        "  kprobe             {} (loading; attaching needs kprobes, above)",
        program(ProgramType::KProbe)
    )?;
    writeln!(
        out,
        "  sock_ops           {}  (keepalive enforce)",
        program(ProgramType::SockOps)
    )?;
    writeln!(
        out,
        "  ring buffer map    {}",
        match is_map_supported(MapType::RingBuf) {
            Ok(true) => "yes".to_string(),
            Ok(false) => "no (Linux 5.8+ needed)".to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    )?;

    writeln!(
        out,
        "\nmodes (each loaded and attached for real, then detached):"
    )?;
    let kprobe = loader::try_mode(opts, AttachMode::Kprobe);
    for (mode, result) in [
        (AttachMode::Kprobe, &kprobe),
        (AttachMode::Tracepoint, &tracepoint),
    ] {
        match result {
            Ok(()) => writeln!(out, "  {:<11} works", mode.name())?,
            Err(e) => writeln!(out, "  {:<11} does not work: {}", mode.name(), brief(e))?,
        }
    }
    let verdict = match (&kprobe, &tracepoint) {
        (Ok(()), _) => "kprobe: it works here, and only the keepalive timer runs a program \
                        (tracepoint mode checks every timer in the system)"
            .to_string(),
        (Err(e), Ok(())) => format!(
            "tracepoint, because kprobe mode does not work: {}",
            brief(e)
        ),
        (Err(_), Err(_)) => "nothing: no mode works on this system (see above)".to_string(),
    };
    writeln!(out, "\nauto mode:    {verdict}")?;
    // With --mode, the answer is whether that mode works: the exit code a deployment's
    // check (or a test of one mode) relies on.
    let asked = match opts.mode {
        AttachMode::Auto => return Ok(kprobe.is_ok() || tracepoint.is_ok()),
        AttachMode::Kprobe => &kprobe,
        AttachMode::Tracepoint => &tracepoint,
    };
    match asked {
        Ok(()) => writeln!(out, "--mode {}: works", opts.mode.name())?,
        Err(e) => writeln!(
            out,
            "--mode {}: does not work here: {}",
            opts.mode.name(),
            brief(e)
        )?,
    }
    Ok(asked.is_ok())
}

/// An error in a line or a few: a verifier log keeps only its verdict at the end.
fn brief(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    match text.split_once("Verifier output:") {
        Some((head, log)) => {
            let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = &lines[lines.len().saturating_sub(6)..];
            format!("{}(verifier: {})", head, tail.join(" / ").trim())
        }
        None => text,
    }
}
