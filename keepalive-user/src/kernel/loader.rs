//! Loads keepalive's kernel programs with this kernel's layout and attaches them.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfError, EbpfLoader,
    programs::{BtfTracePoint, KProbe, ProgramError},
};
use keepalive_common::programs::KEEPALIVE_TIMER_FN;
use keepalive_common::{KernelConfig, names};

use crate::{
    kernel,
    kernel::btf,
    kernel::hooks::{self, AttachMode, Hook},
};

/// The compiled kernel programs, embedded in the binary.
static PROGRAM_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keepalive"));

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub btf_path: PathBuf,
    pub filter_port: u16,
    pub filter_netns: u32,
    /// Ring buffer size in bytes (a power of two, at least one page).
    pub ring_buffer_size: u32,
    pub mode: AttachMode,
    /// Report every state change and socket free, not only those diagnosis uses.
    pub all_states: bool,
    /// Send every connection's end, not only those of interest (a connection filter
    /// implies it: a connection the user names is of interest).
    pub all_ends: bool,
    /// An orderly end of a connection that lived at least this long is of interest.
    pub min_life: std::time::Duration,
}

impl LoadOptions {
    /// Every connection's end goes to user space: asked for, or implied by a port filter
    /// or by every state being reported. (A namespace is a scope, not a connection: its
    /// ordinary ends are counted like any.)
    pub fn sends_all_ends(&self) -> bool {
        self.all_ends || self.all_states || self.filter_port != 0
    }
}

pub struct Loaded {
    pub ebpf: Ebpf,
    pub types: btf::KernelTypes,
    /// The mode that loaded (never `Auto`).
    pub mode: AttachMode,
}

/// Loads and attaches the programs of the mode asked for. `Auto` tries kprobe mode first and
/// falls back to tracepoint mode, saying why in one line.
pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    let types = prepare(opts)?;
    if !types.has_drop_reasons() {
        eprintln!(
            "keepalive: this kernel does not say why it drops packets (Linux 5.17+ does): \
             packets of dying connections dropped on this host are not reported"
        );
    }
    match opts.mode {
        AttachMode::Auto => check_and_load(opts, types.clone(), AttachMode::Kprobe).or_else(|e| {
            eprintln!("keepalive: kprobe mode: {e:#}; using tracepoint mode");
            check_and_load(opts, types, AttachMode::Tracepoint)
        }),
        AttachMode::Kprobe => check_and_load(opts, types, AttachMode::Kprobe).map_err(|e| {
            anyhow::anyhow!("{e:#}: kprobe mode is not possible here; try --mode tracepoint")
        }),
        AttachMode::Tracepoint => check_and_load(opts, types, AttachMode::Tracepoint),
    }
}

/// Loads and attaches `mode` (not `Auto`) and detaches again: whether it works here.
pub fn try_mode(opts: &LoadOptions, mode: AttachMode) -> Result<()> {
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
fn check_and_load(opts: &LoadOptions, types: btf::KernelTypes, mode: AttachMode) -> Result<Loaded> {
    if let Some((group, name, what)) = missing_tracepoint(mode) {
        bail!("this kernel has no tracepoint {group}:{name}; keepalive cannot report {what}");
    }
    if mode == AttachMode::Kprobe
        && let Some(why) =
            kernel::kprobes_unavailable(&hooks::kprobe_functions().collect::<Vec<_>>())
    {
        bail!("{why}");
    }
    load_mode(opts, types, mode)
}

fn load_mode(opts: &LoadOptions, types: btf::KernelTypes, mode: AttachMode) -> Result<Loaded> {
    let config = KernelConfig {
        keepalive_timer_fn: kernel::symbol_address(KEEPALIVE_TIMER_FN)?,
        offsets: types.offsets,
        filter_port: opts.filter_port,
        filter_netns: opts.filter_netns,
        send_reset_has_reason: types.send_reset_has_reason as u8,
        active_reset_reason_arg: types.active_reset_reason_arg,
        resets_by_kprobe: (mode == AttachMode::Kprobe) as u8,
        all_states: opts.all_states as u8,
        all_ends: opts.sends_all_ends() as u8,
        min_life_ns: opts.min_life.as_nanos().min(u64::MAX as u128) as u64,
        drop_reason_no_socket: types.drop_reason("NO_SOCKET"),
        drop_reason_old_sequence: types.drop_reason("TCP_OLD_SEQUENCE"),
        kfree_skb_rx_sk: types.kfree_skb_has_rx_sk as u32,
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
    for program in hooks::programs(mode).filter(|p| {
        (opts.all_states || !p.all_states_only)
            && (types.has_drop_reasons() || !p.needs_drop_reasons)
    }) {
        let p = ebpf
            .program_mut(program.name)
            .with_context(|| format!("program {} missing from the object", program.name))?;
        match program.hook {
            Hook::Tracepoint { name, .. } => {
                let p: &mut BtfTracePoint = p.try_into()?;
                p.load(name, &types.for_loader)
                    .map_err(|e| explain_program_error(e, "tracepoint", name))?;
                p.attach()
                    .map_err(|e| explain_program_error(e, "tracepoint", name))?;
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

/// The first tracepoint `mode` needs that this kernel lacks, with what is lost without it.
pub fn missing_tracepoint(mode: AttachMode) -> Option<(&'static str, &'static str, &'static str)> {
    hooks::programs(mode).find_map(|p| match p.hook {
        Hook::Tracepoint { group, name }
            if !p.needs_drop_reasons && !kernel::has_tracepoint(group, name) =>
        {
            Some((group, name, p.lost_without))
        }
        _ => None,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The table the loader attaches from names only programs the object has, of the
    /// right kind, and the object has no program the table forgets (enforce's aside).
    #[test]
    fn every_declared_program_is_in_the_object_and_no_other() {
        let object = aya_obj::Object::parse(program_object()).expect("the embedded object");
        let mut in_object: Vec<&str> = object.programs.keys().map(String::as_str).collect();
        in_object.sort();
        let mut declared: Vec<&str> = hooks::PROGRAMS.iter().map(|p| p.name).collect();
        declared.push(keepalive_common::names::ENFORCE_PROGRAM);
        declared.sort();
        assert_eq!(in_object, declared);
        for p in hooks::PROGRAMS {
            let section = &object.programs[p.name].section;
            let kind_fits = match p.hook {
                Hook::Tracepoint { .. } => {
                    matches!(section, aya_obj::ProgramSection::BtfTracePoint)
                }
                Hook::Kprobe(_) => matches!(
                    section,
                    aya_obj::ProgramSection::KProbe | aya_obj::ProgramSection::KRetProbe
                ),
            };
            assert!(kind_fits, "{}: {section:?}", p.name);
        }
    }
}
