//! `keepalive enforce`: turn keepalive on for a cgroup's new TCP connections with a sock_ops
//! program, until stopped. Changes appear in its own output and in `keepalive trace`.

use std::{fs, path::PathBuf};

use anyhow::{Context as _, Result};
use aya::{
    EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{CgroupAttachMode, SockOps},
};
use keepalive_common::{EnforceConfig, family, names};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    decode::Decoder,
    host::cgroup,
    kernel::{self, records},
    output::Writer,
    pipeline::Flow,
};

/// What `keepalive enforce` sets, and on which connections.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cgroup (v2), absolute or relative to the hierarchy's mount.
    pub cgroup: String,
    /// TCP_KEEPIDLE and TCP_KEEPINTVL in seconds, and TCP_KEEPCNT.
    pub idle: u32,
    pub interval: u32,
    pub count: u32,
    /// TCP_USER_TIMEOUT in milliseconds, 0 to leave it.
    pub user_timeout: u32,
    /// Also change sockets whose application turned keepalive on itself.
    pub force: bool,
    /// Change nothing; report what would change.
    pub dry_run: bool,
    /// Only connections with this local or remote port, or address.
    pub port: Option<u16>,
    pub addr: Option<std::net::IpAddr>,
}

pub async fn run(opts: &Settings, mut out: Writer) -> Result<()> {
    let cgroup = cgroup::resolve(&opts.cgroup)?;
    let hz = kernel::hz()?;
    let (addr, addr_family) = match opts.addr {
        Some(std::net::IpAddr::V4(a)) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, family::INET)
        }
        Some(std::net::IpAddr::V6(a)) => (a.octets(), family::INET6),
        None => ([0; 16], 0),
    };
    let config = EnforceConfig {
        idle_s: opts.idle,
        interval_s: opts.interval,
        count: opts.count,
        user_timeout_ms: opts.user_timeout,
        idle_jiffies: opts.idle * hz,
        interval_jiffies: opts.interval * hz,
        port: opts.port.unwrap_or(0),
        force: opts.force as u8,
        dry_run: opts.dry_run as u8,
        addr,
        addr_family,
        ..EnforceConfig::zeroed()
    };
    let mut ebpf = EbpfLoader::new()
        .override_global(names::ENFORCE_CONFIG, &config, true)
        .load(crate::kernel::loader::program_object())
        .context("loading keepalive's kernel programs")?;
    let program: &mut SockOps = ebpf
        .program_mut(names::ENFORCE_PROGRAM)
        .context("enforce program missing from the object")?
        .try_into()?;
    program.load().context("loading the sock_ops program")?;
    let cgroup_dir =
        fs::File::open(&cgroup).with_context(|| format!("opening {}", cgroup.display()))?;
    program
        .attach(&cgroup_dir, CgroupAttachMode::Single)
        .with_context(|| format!("attaching to cgroup {}", cgroup.display()))?;
    // For `keepalive trace`: pin the shared stream where it looks.
    let pin_dir = kernel::ensure_bpffs()?.join(format!("enforce-{}", std::process::id()));
    fs::create_dir_all(&pin_dir)?;
    let _pin = PinGuard(pin_dir.clone());
    ebpf.map(names::ENFORCED)
        .context("map ENFORCED")?
        .pin(pin_dir.join("events"))
        .context("pinning the enforce event stream")?;

    let ring = RingBuf::try_from(
        ebpf.take_map(names::ENFORCE_REPORT)
            .context("map ENFORCE_REPORT")?,
    )?;
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd.
    let mut ring = unsafe { AsyncFd::register(ring) }.map_err(|e| e.into_parts().1)?;
    let mut decoder = Decoder::new(hz, kernel::monotonic_to_realtime_ns(), vec![]);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    eprintln!(
        "{} keepalive (idle {}s, interval {}s, count {}{}) on new TCP connections of cgroup {}. \
         Ctrl-C to stop.",
        if opts.dry_run {
            "Dry run: would enforce"
        } else {
            "Enforcing"
        },
        opts.idle,
        opts.interval,
        opts.count,
        if opts.user_timeout > 0 {
            format!(", user timeout {} ms", opts.user_timeout)
        } else {
            String::new()
        },
        cgroup.display()
    );
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                drain(guard.get_inner_mut(), &mut decoder, &mut out)?;
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    drain(ring.get_mut(), &mut decoder, &mut out)?;
    // Dropping `ebpf` detaches the program; the pin goes with the guard.
    Ok(())
}

fn drain(ring: &mut RingBuf<MapData>, decoder: &mut Decoder, out: &mut Writer) -> Result<()> {
    let (flow, _) = records::drain_ring(ring, decoder, |_, _, event| match out.event(&event) {
        Ok(()) => Ok(Flow::Continue),
        // The reader went away (`| head`): nothing more to write.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Flow::Stop),
        Err(e) => Err(e.into()),
    })?;
    match out.flush() {
        Err(e) if flow == Flow::Continue && e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e.into())
        }
        _ => Ok(()),
    }
}

struct PinGuard(PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Pinned enforce streams (`<pin dir>/enforce-<pid>/events`) whose enforce is still running.
pub fn pinned_streams() -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(names::ENFORCE_PIN_DIR) else {
        return vec![];
    };
    dir.flatten()
        .map(|e| e.path().join("events"))
        .filter(|p| p.exists())
        .collect()
}
