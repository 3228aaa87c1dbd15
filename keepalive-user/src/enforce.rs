//! `keepalive enforce`: turn keepalive on for a cgroup's new TCP connections with a sock_ops
//! program, until stopped. Changes appear in its own output and in `keepalive trace`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};
use aya::{
    EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{CgroupAttachMode, SockOps},
};
use keepalive_common::{EnforceConfig, names};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    decode::{Decoder, parse_record},
    kernel,
    output::{Format, Writer},
};

/// `keepalive enforce`'s arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The cgroup (v2) whose processes' connections get keepalive, e.g. --cgroup user.slice.
    #[arg(long, value_name = "PATH")]
    pub cgroup: String,
    /// Idle seconds before the first probe (TCP_KEEPIDLE), e.g. --idle 60.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=32767))]
    pub idle: u32,
    /// Seconds between probes (TCP_KEEPINTVL), e.g. --interval 10.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=32767))]
    pub interval: u32,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT), e.g. --count 6.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=127))]
    pub count: u32,
    /// Also set TCP_USER_TIMEOUT, in milliseconds, e.g. --user-timeout 90000.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub user_timeout: u32,
    /// Also change sockets whose application turned keepalive on itself, e.g. --force.
    #[arg(long)]
    pub force: bool,
    /// Change nothing; report the connections that would be changed, e.g. --dry-run.
    #[arg(long)]
    pub dry_run: bool,
    /// Only connections with this local or remote port, e.g. --port 3306.
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only connections with this local or remote address, e.g. --addr 198.18.0.2.
    #[arg(short, long, value_name = "IP")]
    pub addr: Option<std::net::IpAddr>,
    /// Output format, e.g. --format json.
    #[arg(short, long, value_enum, default_value = "human")]
    pub format: Format,
}

/// The cgroup v2 hierarchy's mount point, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_cgroup2_mount(&info).context("no cgroup v2 hierarchy is mounted (fstype cgroup2)")
}

fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // "... mount_point options - fstype source super_options"
        let (left, right) = l.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// A cgroup given as an absolute path or relative to the cgroup v2 mount.
pub fn resolve_cgroup(arg: &str) -> Result<PathBuf> {
    let root = cgroup2_mount()?;
    let path = if Path::new(arg).is_absolute() && Path::new(arg).starts_with(&root) {
        PathBuf::from(arg)
    } else {
        root.join(arg.trim_start_matches('/'))
    };
    if !path.join("cgroup.procs").exists() {
        bail!(
            "--cgroup {arg}: {} is not a cgroup v2 directory (the v2 hierarchy is at {})",
            path.display(),
            root.display()
        );
    }
    Ok(path)
}

pub async fn run(opts: &Args, mut out: Writer) -> Result<()> {
    let cgroup = resolve_cgroup(&opts.cgroup)?;
    let hz = kernel::hz()?;
    let (addr, addr_family) = match opts.addr {
        Some(std::net::IpAddr::V4(a)) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 2)
        }
        Some(std::net::IpAddr::V6(a)) => (a.octets(), 10),
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
        .load(crate::loader::program_object())
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
    while let Some(item) = ring.next() {
        if let Ok(r) = parse_record(&item) {
            drop(item);
            for event in decoder.decode_parsed(&r) {
                if let Err(e) = out.event(&event) {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        return Ok(());
                    }
                    return Err(e.into());
                }
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_among_v1_ones() {
        let info = "30 24 0:26 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw\n\
                    33 30 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev - cgroup2 cgroup2 rw\n\
                    34 30 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            parse_cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }
}
