//! Loads keepalive's kernel programs with this kernel's layout and attaches them.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::{
    Btf, Ebpf, EbpfError, EbpfLoader,
    programs::{BtfTracePoint, KProbe, ProgramError},
};
use keepalive_common::{KernelConfig, names};

use crate::{btf, kernel};

/// How the keepalive timer and the resets sockets send are hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Kprobe mode where the kernel has kprobes, else tracepoint mode.
    Auto,
    /// Kprobes on tcp_keepalive_timer and tcp_send_active_reset: only the keepalive timer
    /// pays, and resets name their cause on kernels before 6.10. Tracepoints for the rest.
    Kprobe,
    /// BTF tracepoints only: the keepalive timer is found among all timers by its address.
    Tracepoint,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Kprobe => "kprobe",
            Mode::Tracepoint => "tracepoint",
        }
    }
}

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
enum Hook {
    /// A BTF tracepoint.
    Tracepoint(&'static str),
    /// A kprobe (or kretprobe, by program type) on a kernel function.
    Kprobe(&'static str),
}

/// Programs both modes use, in attach order: a `_nested` program runs after its primary and
/// covers events the kernel skipped for it (see `guarded!` in keepalive-ebpf).
const COMMON_PROGRAMS: &[(&str, Hook)] = &[
    (
        "inet_sock_set_state",
        Hook::Tracepoint("inet_sock_set_state"),
    ),
    (
        "inet_sock_set_state_nested",
        Hook::Tracepoint("inet_sock_set_state"),
    ),
    ("tcp_send_reset", Hook::Tracepoint("tcp_send_reset")),
    ("tcp_send_reset_nested", Hook::Tracepoint("tcp_send_reset")),
    ("tcp_receive_reset", Hook::Tracepoint("tcp_receive_reset")),
    (
        "tcp_receive_reset_nested",
        Hook::Tracepoint("tcp_receive_reset"),
    ),
    (
        "inet_sk_error_report",
        Hook::Tracepoint("inet_sk_error_report"),
    ),
    (
        "inet_sk_error_report_nested",
        Hook::Tracepoint("inet_sk_error_report"),
    ),
    ("tcp_destroy_sock", Hook::Tracepoint("tcp_destroy_sock")),
    (
        "tcp_destroy_sock_nested",
        Hook::Tracepoint("tcp_destroy_sock"),
    ),
    ("tcp_retransmit_skb", Hook::Tracepoint("tcp_retransmit_skb")),
    (
        "tcp_retransmit_skb_nested",
        Hook::Tracepoint("tcp_retransmit_skb"),
    ),
];

/// Tracepoint mode's keepalive timer: every timer expiry, filtered by function address.
const TRACEPOINT_PROGRAMS: &[(&str, Hook)] = &[
    ("timer_expire_entry", Hook::Tracepoint("timer_expire_entry")),
    ("timer_expire_exit", Hook::Tracepoint("timer_expire_exit")),
];

/// Kprobe mode's hooks: the keepalive timer's entry and return, and active resets.
pub const KPROBE_FUNCTIONS: &[&str] = &["tcp_keepalive_timer", "tcp_send_active_reset"];
const KPROBE_PROGRAMS: &[(&str, Hook)] = &[
    (
        "keepalive_timer_kprobe",
        Hook::Kprobe("tcp_keepalive_timer"),
    ),
    (
        "keepalive_timer_kretprobe",
        Hook::Kprobe("tcp_keepalive_timer"),
    ),
    ("active_reset_kprobe", Hook::Kprobe("tcp_send_active_reset")),
];

/// The compiled kernel programs, embedded in the binary.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keepalive"));

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub btf_path: PathBuf,
    pub filter_port: u16,
    pub filter_netns: u32,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_size: u32,
    pub mode: Mode,
    /// Report every state change and socket free, not only those diagnosis uses.
    pub all_states: bool,
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub types: btf::KernelTypes,
    /// The mode that loaded (never `Auto`).
    pub mode: Mode,
}

/// Loads and attaches the programs of the mode asked for. `Auto` tries kprobe mode first and
/// falls back to tracepoint mode, saying why in one line.
pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    let types = prepare(opts)?;
    match opts.mode {
        Mode::Auto => check_and_load(opts, types.clone(), Mode::Kprobe).or_else(|e| {
            eprintln!("keepalive: kprobe mode: {e:#}; using tracepoint mode");
            check_and_load(opts, types, Mode::Tracepoint)
        }),
        Mode::Kprobe => check_and_load(opts, types, Mode::Kprobe).map_err(|e| {
            anyhow::anyhow!("{e:#}: kprobe mode is not possible here; try --mode tracepoint")
        }),
        Mode::Tracepoint => check_and_load(opts, types, Mode::Tracepoint),
    }
}

/// Loads and attaches `mode` (not `Auto`) and detaches again: whether it works here.
pub fn try_mode(opts: &LoadOptions, mode: Mode) -> Result<()> {
    let types = prepare(opts)?;
    check_and_load(opts, types, mode).map(drop)
}

/// What every mode needs first: privileges, tracefs, the kernel's types, locked memory.
fn prepare(opts: &LoadOptions) -> Result<btf::KernelTypes> {
    require_privileges()?;
    kernel::ensure_tracefs()?;
    let types = btf::load(&opts.btf_path)?;
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_MEMLOCK,
        nix::sys::resource::RLIM_INFINITY,
        nix::sys::resource::RLIM_INFINITY,
    );
    Ok(types)
}

/// Says what `mode` lacks on this kernel (a tracepoint, kprobes) before trying to load it.
fn check_and_load(opts: &LoadOptions, types: btf::KernelTypes, mode: Mode) -> Result<Loaded> {
    if let Some((group, name, what)) = kernel::missing_tracepoint(mode) {
        bail!("this kernel has no tracepoint {group}:{name}; keepalive cannot report {what}");
    }
    if mode == Mode::Kprobe {
        if let Some(why) = kernel::kprobes_unavailable() {
            bail!("{why}");
        }
    }
    load_mode(opts, types, mode)
}

fn load_mode(opts: &LoadOptions, types: btf::KernelTypes, mode: Mode) -> Result<Loaded> {
    let config = KernelConfig {
        keepalive_timer_fn: kernel::symbol_address("tcp_keepalive_timer")?,
        offsets: types.offsets,
        filter_port: opts.filter_port,
        filter_netns: opts.filter_netns,
        send_reset_has_reason: types.send_reset_has_reason as u8,
        active_reset_has_reason: types.active_reset_has_reason as u8,
        resets_by_kprobe: (mode == Mode::Kprobe) as u8,
        all_states: opts.all_states as u8,
        // An eighth of the ring, at most 64 KiB: early enough never to fill it between polls.
        wakeup_bytes: (opts.ring_buffer_size / 8).min(64 * 1024),
        ..KernelConfig::zeroed()
    };
    let mut ebpf = EbpfLoader::new()
        .override_global(names::CONFIG, &config, true)
        .map_max_entries(names::EVENTS, opts.ring_buffer_size)
        .load(PROGRAM_OBJECT)
        .map_err(explain_load_error)?;
    if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf).map(spawn_kernel_log) {
        log::debug!("kernel-side diagnostics unavailable: {e}");
    }
    let aya_btf = Btf::parse_file(&opts.btf_path, Default::default())
        .with_context(|| format!("parsing {}", opts.btf_path.display()))?;
    let timer_programs = match mode {
        Mode::Kprobe => KPROBE_PROGRAMS,
        _ => TRACEPOINT_PROGRAMS,
    };
    for (program, hook) in timer_programs.iter().chain(COMMON_PROGRAMS) {
        let p = ebpf
            .program_mut(program)
            .with_context(|| format!("program {program} missing from the object"))?;
        match *hook {
            Hook::Tracepoint(tracepoint) => {
                let p: &mut BtfTracePoint = p.try_into()?;
                p.load(tracepoint, &aya_btf)
                    .map_err(|e| explain_program_error(e, "tracepoint", tracepoint))?;
                p.attach()
                    .map_err(|e| explain_program_error(e, "tracepoint", tracepoint))?;
            }
            Hook::Kprobe(function) => {
                let p: &mut KProbe = p.try_into()?;
                p.load()
                    .map_err(|e| explain_program_error(e, "kprobe", function))?;
                p.attach(function, 0)
                    .map_err(|e| explain_program_error(e, "kprobe", function))?;
            }
        }
    }
    log::info!("{} mode: programs attached", mode.name());
    Ok(Loaded { ebpf, types, mode })
}

fn require_privileges() -> Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    bail!(
        "keepalive needs root, or the capabilities CAP_BPF and CAP_PERFMON \
         (plus CAP_SYS_ADMIN to mount tracefs if it is not mounted): \
         run it with sudo"
    )
}

fn explain_load_error(e: EbpfError) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("EPERM") || text.contains("Operation not permitted") {
        anyhow::anyhow!("the kernel refused to load BPF programs ({text}): run as root")
    } else {
        anyhow::Error::new(e).context("loading keepalive's kernel programs")
    }
}

fn explain_program_error(e: ProgramError, what: &str, target: &str) -> anyhow::Error {
    let msg = format!("attaching to {what} {target}");
    anyhow::Error::new(e).context(msg)
}

/// Forwards aya-log records from the kernel programs to `log` (shown with -v or RUST_LOG).
fn spawn_kernel_log(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its fd and lives inside the AsyncFd.
    let Ok(mut fd) = (unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    }) else {
        return;
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// The embedded object file with every program (tracing and enforce).
pub fn program_object() -> &'static [u8] {
    PROGRAM_OBJECT
}

pub fn default_btf_path() -> &'static Path {
    Path::new(btf::DEFAULT_BTF_PATH)
}
