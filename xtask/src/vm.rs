//! `cargo xtask vm-test`: the end-to-end scenarios on other kernels, in every mode each
//! supports, and on the host kernel.
//!
//! Each guest kernel is a Debian package (fetched with apt-get download, cached under
//! target/vm). The guest boots under QEMU with software emulation straight into an initramfs
//! built here: busybox, `keepalive`, the scenario test binaries, `ip`, `nft` and `tcpdump`
//! with their libraries, and the kernel modules the scenarios need. Its /init runs `keepalive doctor`,
//! then the scenarios once per mode, and reports on the serial console with `@@` markers.

use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cpio::Archive,
    workspace::{cargo, target_dir},
};

/// Scenario test binaries run in every mode (tests/tests/<name>.rs). `why` covers silent
/// drop, reset after probe, linger 0, user timeout and retransmission timeout, and logs each
/// verdict for the comparison between modes; each compares the trace with the wire.
/// kernel_counters, robustness and states check counts against the kernel's own, loss,
/// detaching and state changes in each mode.
const SCENARIOS: &[&str] = &[
    "why",
    "linger_zero",
    "silent_drop",
    "kernel_counters",
    "robustness",
    "states",
    "dropped_here",
];
const MODES: &[&str] = &["kprobe", "tracepoint"];

/// Guest kernels: a label, the Debian package name pattern (newest match wins), and the
/// modes that must work there (Debian's kernels have kprobes and BTF): a required mode that
/// doctor reports as not working is a failure, not a skip.
const KERNELS: &[(&str, &str, &[&str])] = &[
    // Debian 12's kernel: no reset reasons, kprobes on.
    (
        "debian-6.1",
        r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
        MODES,
    ),
    // Debian 12 backports: reset reasons (6.10+), kprobes on.
    (
        "debian-6.12",
        r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$",
        MODES,
    ),
];

/// The modes the host kernel must support, from a fact found apart from doctor: tracepoint
/// mode always (BTF tracepoints), kprobe mode when the kernel has kprobe events (the perf
/// `kprobe` event source exists exactly then).
fn host_required_modes() -> Vec<&'static str> {
    let mut modes = vec!["tracepoint"];
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        modes.insert(0, "kprobe");
    }
    modes
}

/// Modules the scenarios load (veth pairs, nft drop and reject rules); dependencies follow.
const MODULES: &[&str] = &["veth", "nf_tables", "nft_reject_inet", "nft_ct"];

/// The whole guest run must finish in this time (software emulation is slow, not stuck).
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

#[derive(clap::Args)]
pub struct Args {
    /// Only the guest kernel whose label ends with this, e.g. --kernel 6.1 (debian-6.1).
    #[arg(long)]
    kernel: Option<String>,
    /// Skip the scenarios on the host kernel.
    #[arg(long)]
    no_host: bool,
    /// Run this shell command in each guest instead of the scenarios, e.g.
    /// --command 'keepalive trace --mode kprobe & sleep 5'.
    #[arg(long)]
    command: Option<String>,
}

/// The task: the packages QEMU needs, the binary, then [`run`].
pub fn task(args: Args) -> Result<()> {
    crate::setup::run()?;
    crate::setup::vm_packages()?;
    let bin = crate::workspace::build()?;
    run(&bin, &args)
}

/// One run of one scenario binary in one mode on one kernel.
#[derive(Default)]
struct KernelRun {
    doctor: String,
    /// mode -> scenario -> exit code; a mode absent here was skipped.
    results: BTreeMap<String, BTreeMap<String, i32>>,
    skipped: BTreeMap<String, String>,
    /// Modes that must work on this kernel.
    required: Vec<&'static str>,
    /// mode -> scenario test name -> verdict line.
    verdicts: BTreeMap<String, BTreeMap<String, String>>,
}

fn run(keepalive: &Path, opts: &Args) -> Result<()> {
    let tests = build_scenarios()?;
    let work = target_dir().join("vm");
    std::fs::create_dir_all(&work)?;
    let common = common_archive(keepalive, &tests)?;

    let mut guests = vec![];
    for (label, pattern, required) in KERNELS {
        if opts.kernel.as_deref().is_some_and(|k| !label.ends_with(k)) {
            continue;
        }
        let kernel = fetch_kernel(&work, pattern)?;
        let initrd = work.join(format!("{label}.cpio"));
        let mut archive = common.clone();
        if let Some(cmd) = &opts.command {
            archive.file("/etc/vm-command", cmd.clone().into_bytes(), 0o755);
        }
        add_modules(&mut archive, &kernel)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&initrd)?);
        archive.write(&mut f)?;
        drop(f);
        guests.push((*label, kernel, initrd, *required));
    }
    // The guests side by side: each runs its vCPUs on one host thread (single-threaded
    // TCG), so two of them use the two cores rather than one after the other.
    let booted: Vec<Result<KernelRun>> = thread::scope(|scope| {
        let handles: Vec<_> = guests
            .iter()
            .map(|(label, kernel, initrd, _)| {
                println!("== {label}: booting {} under QEMU (TCG)", kernel.release);
                scope.spawn(move || boot(label, kernel, initrd))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a guest's runner panicked"))
            })
            .collect()
    });
    let mut runs: Vec<(String, KernelRun)> = vec![];
    for ((label, kernel, _, required), run) in guests.iter().zip(booted) {
        let mut run = run?;
        run.required = required.to_vec();
        runs.push((format!("{label} ({}, VM)", kernel.release), run));
    }
    if opts.command.is_some() {
        return Ok(());
    }
    if !opts.no_host {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        println!("== host: {}", release.trim());
        runs.push((
            format!("host ({})", release.trim()),
            host_run(keepalive, &tests)?,
        ));
    }
    report(&runs)
}

/// Builds the scenario test binaries; returns (name, path).
fn build_scenarios() -> Result<Vec<(String, PathBuf)>> {
    let mut cmd = cargo();
    cmd.args(["test", "--package", "keepalive-tests", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"]);
    for s in SCENARIOS {
        cmd.args(["--test", s]);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        bail!("building the scenario tests failed");
    }
    let mut tests = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = msg["target"]["name"].as_str().unwrap_or_default();
        if let (Some(exe), true) = (msg["executable"].as_str(), SCENARIOS.contains(&name)) {
            tests.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if tests.len() != SCENARIOS.len() {
        bail!(
            "expected {} scenario binaries, cargo built {}",
            SCENARIOS.len(),
            tests.len()
        );
    }
    Ok(tests)
}

/// The guest files all kernels share.
fn common_archive(keepalive: &Path, tests: &[(String, PathBuf)]) -> Result<Archive> {
    let mut archive = Archive::default();
    let mut add = |path: &str, from: &Path, strip: bool| -> Result<()> {
        let data = if strip {
            stripped(from)?
        } else {
            std::fs::read(from)?
        };
        archive.file(path, data, 0o755);
        Ok(())
    };
    add("/bin/busybox", Path::new("/bin/busybox"), false)?;
    add("/bin/keepalive", keepalive, true)?;
    let mut needs_libs = vec![keepalive.to_path_buf()];
    for (name, path) in tests {
        add(&format!("/tests/{name}"), path, true)?;
        needs_libs.push(path.clone());
    }
    // tcpdump: the scenarios compare the trace with the wire. bpftool, setpriv and
    // unshare: robustness checks detaching, privileges and tracefs (and bpftool helps
    // investigate with --command).
    for tool in ["ip", "nft", "tcpdump", "bpftool", "setpriv", "unshare"] {
        let path = which(tool)?;
        add(&format!("/usr/sbin/{tool}"), &path, false)?;
        needs_libs.push(path);
    }
    let mut libs = std::collections::BTreeSet::new();
    for bin in &needs_libs {
        libs.extend(shared_libraries(bin)?);
    }
    for lib in libs {
        // The file behind the name ldd printed (libraries are often symlinks).
        add(&lib.to_string_lossy(), &std::fs::canonicalize(&lib)?, false)?;
    }
    archive.file("/init", init_script().into_bytes(), 0o755);
    // tcpdump looks its user up (root here, with -Z root) before it captures.
    archive.file(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    );
    archive.file("/etc/group", b"root:x:0:\n".to_vec(), 0o644);
    for applet in [
        "sh", "mount", "insmod", "poweroff", "sysctl", "mkdir", "cat", "sed", "grep",
    ] {
        archive.symlink(&format!("/bin/{applet}"), "busybox");
    }
    Ok(archive)
}

/// The guest's /init: mounts, modules, doctor, then every scenario in every mode that works.
fn init_script() -> String {
    let scenarios = SCENARIOS.join(" ");
    let modes = MODES.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mkdir -p /proc /sys /dev /run /tmp /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in $(cat /etc/vm-modules); do insmod "$m" || echo "@@WARN insmod $m failed"; done
ip link set lo up
echo "@@KERNEL $(cat /proc/sys/kernel/osrelease)"
echo "@@DOCTOR-BEGIN"
/bin/keepalive doctor 2>&1
echo "@@DOCTOR-END"
if [ -f /etc/vm-command ]; then
    sh /etc/vm-command 2>&1
    echo "@@DONE"
    poweroff -f
fi
for mode in {modes}; do
    if ! /bin/keepalive doctor 2>/dev/null | grep -q "^  $mode  *works"; then
        echo "@@SKIP mode=$mode kprobes or tracepoints missing (see doctor)"
        continue
    fi
    for t in {scenarios}; do
        KEEPALIVE_MODE=$mode KEEPALIVE_BIN=/bin/keepalive KEEPALIVE_VERDICT_LOG=/tmp/verdicts-$mode \
            /tests/$t --test-threads=2 2>&1
        echo "@@RESULT mode=$mode test=$t rc=$?"
    done
    [ -f /tmp/verdicts-$mode ] && sed "s/^/@@VERDICT mode=$mode /" /tmp/verdicts-$mode
done
echo "@@DONE"
poweroff -f
"#
    )
}

fn which(tool: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{tool} not found (cargo xtask setup installs it)")
}

/// A copy without debug information: the guest's RAM holds the whole initramfs.
fn stripped(path: &Path) -> Result<Vec<u8>> {
    let dir = target_dir().join("vm/stripped");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(path.file_name().context("no file name")?);
    let result = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(path)
        .arg(&out)
        .output()
        .context("running objcopy")?;
    if !result.status.success() {
        bail!(
            "objcopy {}: {}",
            path.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    Ok(std::fs::read(&out)?)
}

/// The shared libraries `ldd` says a binary loads (absolute paths, the loader included).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

struct GuestKernel {
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

/// Downloads and unpacks the newest package matching `pattern` (cached).
fn fetch_kernel(work: &Path, pattern: &str) -> Result<GuestKernel> {
    let search = |update: bool| -> Result<Option<String>> {
        if update {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
        }
        let out = Command::new("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect();
        names.sort_by_key(|n| version_key(n));
        Ok(names.pop())
    };
    let package = match search(false)? {
        Some(p) => p,
        None => search(true)?.with_context(|| format!("no Debian package matches {pattern}"))?,
    };
    let dir = work.join("kernels").join(&package);
    let root = dir.join("root");
    if !root.join("boot").exists() {
        std::fs::create_dir_all(&dir)?;
        println!("== downloading {package}");
        crate::workspace::run_checked(
            Command::new("apt-get")
                .current_dir(&dir)
                .args(["download", &package]),
            &format!("apt-get download {package}"),
        )?;
        let deb = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("downloaded .deb not found")?;
        crate::workspace::run_checked(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
            &format!("dpkg-deb -x {}", deb.display()),
        )?;
        std::fs::remove_file(deb)?;
    }
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no vmlinuz in the package")?;
    let release = vmlinuz
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let modules = root.join("lib/modules").join(&release);
    Ok(GuestKernel {
        release,
        vmlinuz,
        modules,
    })
}

/// Numbers in a package name, for picking the newest.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Adds [`MODULES`] and their dependencies, and /etc/vm-modules listing them in load order.
fn add_modules(archive: &mut Archive, kernel: &GuestKernel) -> Result<()> {
    let mut index = HashMap::new();
    index_modules(&kernel.modules, &mut index)?;
    let mut order = vec![];
    for m in MODULES {
        visit(m, &index, &mut order)?;
    }
    let mut list = String::new();
    for name in &order {
        let data = read_module(&index[name])?;
        let guest = format!("/lib/modules/{name}.ko");
        archive.file(&guest, data, 0o644);
        list.push_str(&guest);
        list.push('\n');
    }
    archive.file("/etc/vm-modules", list.into_bytes(), 0o644);
    Ok(())
}

fn index_modules(dir: &Path, index: &mut HashMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(stem) = file.strip_suffix(".ko").or(file.strip_suffix(".ko.xz")) {
                index.insert(stem.replace('-', "_"), path);
            }
        }
    }
    Ok(())
}

/// A module file's bytes, decompressed (busybox insmod takes plain .ko files).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz").arg("-dc").arg(path).output()?;
        if !out.status.success() {
            bail!("xz -dc {} failed", path.display());
        }
        Ok(out.stdout)
    } else {
        Ok(std::fs::read(path)?)
    }
}

/// Depth first, dependencies before the module (insmod order).
fn visit(name: &str, index: &HashMap<String, PathBuf>, order: &mut Vec<String>) -> Result<()> {
    let name = name.replace('-', "_");
    if order.contains(&name) {
        return Ok(());
    }
    // Built into this kernel: nothing to load.
    let Some(path) = index.get(&name) else {
        return Ok(());
    };
    let data = read_module(path)?;
    // .modinfo holds NUL-separated key=value strings, `depends=` among them.
    let depends = data
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .unwrap_or_default();
    for dep in depends.split(',').filter(|d| !d.is_empty()) {
        visit(dep, index, order)?;
    }
    order.push(name);
    Ok(())
}

/// Boots the guest and collects what its /init reports.
fn boot(label: &str, kernel: &GuestKernel, initrd: &Path) -> Result<KernelRun> {
    let mut child = Command::new("qemu-system-x86_64")
        // One host thread for both vCPUs: with multi-threaded TCG, the kernel's live code
        // patching (text_poke_bp, when a tracepoint is detached) sometimes left the other
        // vCPU spinning in the timer softirq for good (seen on 6.1 in 2 CI runs of 4).
        .args([
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
        ])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 loglevel=5 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut lines = vec![];
    let mut done = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                println!("[{label}] {line}");
                done |= line.starts_with("@@DONE");
                let stuck = stuck_seconds(&line);
                lines.push(line);
                // A CPU that has not scheduled for minutes will not recover: stop now, not at
                // the deadline, and keep the kernel's backtrace in the log.
                if stuck.is_some_and(|s| s >= STUCK_LIMIT_S) {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = target_dir().join("vm").join(format!("{label}.log"));
                    std::fs::write(&log, lines.join("\n"))?;
                    bail!(
                        "{label}: the guest kernel is stuck (soft lockup, see {})",
                        log.display()
                    );
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = target_dir().join("vm").join(format!("{label}.log"));
    std::fs::write(&log, lines.join("\n"))?;
    println!("== {label}: guest log in {}", log.display());
    if !done {
        bail!("{label}: the guest did not finish within {GUEST_TIMEOUT:?} (log above)");
    }
    Ok(parse_guest_log(&lines))
}

/// How long a soft-locked-up guest CPU may stay stuck before the run is called off.
const STUCK_LIMIT_S: u64 = 120;

/// The seconds in the kernel's "watchdog: BUG: soft lockup - CPU#0 stuck for 23s!".
fn stuck_seconds(line: &str) -> Option<u64> {
    let rest = line.split_once("soft lockup - CPU#")?.1;
    let secs = rest.split_once("stuck for ")?.1.split_once("s!")?.0;
    secs.parse().ok()
}

fn parse_guest_log(lines: &[String]) -> KernelRun {
    let mut run = KernelRun::default();
    let mut in_doctor = false;
    for line in lines {
        if line == "@@DOCTOR-BEGIN" {
            in_doctor = true;
        } else if line == "@@DOCTOR-END" {
            in_doctor = false;
        } else if in_doctor {
            run.doctor.push_str(line);
            run.doctor.push('\n');
        } else if let Some(rest) = line.strip_prefix("@@RESULT ") {
            let f = fields(rest);
            if let (Some(mode), Some(test), Some(rc)) = (f.get("mode"), f.get("test"), f.get("rc"))
            {
                run.results
                    .entry(mode.clone())
                    .or_default()
                    .insert(test.clone(), rc.parse().unwrap_or(-1));
            }
        } else if let Some(rest) = line.strip_prefix("@@SKIP mode=") {
            let (mode, why) = rest.split_once(' ').unwrap_or((rest, ""));
            run.skipped.insert(mode.to_string(), why.to_string());
        } else if let Some(rest) = line.strip_prefix("@@VERDICT mode=")
            && let Some((mode, verdict)) = rest.split_once(' ')
            && let Some((test, v)) = verdict.split_once(' ')
        {
            run.verdicts
                .entry(mode.to_string())
                .or_default()
                .insert(test.to_string(), v.to_string());
        }
    }
    run
}

fn fields(s: &str) -> HashMap<String, String> {
    s.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The same scenarios on the running kernel, in each mode `keepalive doctor` says works.
fn host_run(keepalive: &Path, tests: &[(String, PathBuf)]) -> Result<KernelRun> {
    let mut run = KernelRun {
        required: host_required_modes(),
        ..Default::default()
    };
    let doctor = Command::new(keepalive).arg("doctor").output()?;
    run.doctor = String::from_utf8_lossy(&doctor.stdout).into_owned();
    for line in run.doctor.lines() {
        println!("[host] {line}");
    }
    let dir = target_dir().join("vm/host");
    std::fs::create_dir_all(&dir)?;
    for mode in MODES {
        let works = run
            .doctor
            .lines()
            .any(|l| l.trim_start().starts_with(mode) && l.trim_end().ends_with("works"));
        if !works {
            run.skipped
                .insert(mode.to_string(), "not supported here (see doctor)".into());
            continue;
        }
        let log = dir.join(format!("verdicts-{mode}"));
        let _ = std::fs::remove_file(&log);
        for (name, path) in tests {
            let status = Command::new(path)
                .arg("--test-threads=2")
                .env("KEEPALIVE_MODE", mode)
                .env("KEEPALIVE_BIN", keepalive)
                .env("KEEPALIVE_VERDICT_LOG", &log)
                .status()?;
            run.results
                .entry(mode.to_string())
                .or_default()
                .insert(name.clone(), status.code().unwrap_or(-1));
        }
        let verdicts = std::fs::read_to_string(&log).unwrap_or_default();
        for line in verdicts.lines() {
            if let Some((test, v)) = line.split_once(' ') {
                run.verdicts
                    .entry(mode.to_string())
                    .or_default()
                    .insert(test.to_string(), v.to_string());
            }
        }
    }
    Ok(run)
}

/// Prints the matrix and the verdict comparison; fails when a scenario failed, a mode that
/// should work did not run, or two modes disagree.
fn report(runs: &[(String, KernelRun)]) -> Result<()> {
    let mut failures = vec![];
    println!("\n== kernel matrix");
    println!(
        "{:<46} {:<11} {}",
        "kernel",
        "mode",
        SCENARIOS
            .iter()
            .map(|s| format!("{s:<12}"))
            .collect::<String>()
    );
    for (kernel, run) in runs {
        for mode in MODES {
            if let Some(why) = run.skipped.get(*mode) {
                if run.required.contains(mode) {
                    println!("{kernel:<46} {mode:<11} FAIL: must work here, but {why}");
                    failures.push(format!("{kernel} {mode}: must work here, but {why}"));
                } else {
                    println!("{kernel:<46} {mode:<11} not required here: {why}");
                }
                continue;
            }
            let results = run.results.get(*mode);
            let mut row = String::new();
            for s in SCENARIOS {
                let cell = match results.and_then(|r| r.get(*s)) {
                    Some(0) => "pass".to_string(),
                    Some(rc) => {
                        failures.push(format!("{kernel} {mode} {s}: exit code {rc}"));
                        format!("FAIL({rc})")
                    }
                    None => {
                        failures.push(format!("{kernel} {mode} {s}: did not run"));
                        "missing".to_string()
                    }
                };
                row.push_str(&format!("{cell:<12}"));
            }
            println!("{kernel:<46} {mode:<11} {row}");
        }
        // Every mode that ran must reach the same verdicts.
        let ran: Vec<_> = run.verdicts.iter().collect();
        if let Some(((first_mode, first), rest)) = ran.split_first() {
            println!("\n{kernel}: verdicts ({first_mode})");
            for (test, v) in first.iter() {
                println!("  {test:<62} {v}");
            }
            for (mode, verdicts) in rest {
                if verdicts == first {
                    println!("  {mode}: identical ({} scenarios)", verdicts.len());
                } else {
                    println!("  {mode}: DIFFERENT");
                    for (test, v) in verdicts.iter() {
                        if first.get(test) != Some(v) {
                            println!("    {test:<60} {v}");
                        }
                    }
                    failures.push(format!("{kernel}: {mode} and {first_mode} disagree"));
                }
            }
        }
        println!();
    }
    if !failures.is_empty() {
        bail!("vm-test failed:\n  {}", failures.join("\n  "));
    }
    println!(
        "vm-test: every scenario passed in every mode each kernel requires, with identical verdicts"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::stuck_seconds;

    #[test]
    fn soft_lockup_lines_give_the_seconds_stuck() {
        let line =
            "[  476.586108] watchdog: BUG: soft lockup - CPU#0 stuck for 219s! [swapper/0:0]";
        assert_eq!(stuck_seconds(line), Some(219));
        assert_eq!(stuck_seconds("[ 2.2] Unstable clock detected"), None);
        assert_eq!(stuck_seconds("soft lockup - CPU#1 stuck for xs!"), None);
    }
}
