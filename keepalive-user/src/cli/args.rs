//! Arguments several commands share: which connections, how to load the kernel programs,
//! which period of the history; and the error that makes a bad one exit 2.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use keepalive_user::{
    diagnose::ConnectionFilter,
    host::cgroup::{self, CgroupNames},
    host::netns,
    kernel::loader::{LoadOptions, default_btf_path},
    output::history as store,
    workload::WorkloadFilter,
};

/// Which connections to look at.
#[derive(Args, Clone, Default)]
pub struct ConnectionArgs {
    /// Only connections with this local or remote port, e.g. --port 22.
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Only connections with this local or remote address, e.g. --addr 2001:db8::2.
    #[arg(short, long, value_name = "IP")]
    pub addr: Option<std::net::IpAddr>,
    /// Only connections owned by this process id, e.g. --pid 4242.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only connections owned by processes with this command name, e.g. --comm ssh.
    #[arg(short, long)]
    pub comm: Option<String>,
    /// Only sockets of this network namespace: a name from `ip netns`, a path such as
    /// /proc/PID/ns/net, or an inode number as printed in `netns`.
    #[arg(short = 'n', long, value_name = "NETNS")]
    pub netns: Option<String>,
    /// Only connections owned by processes of this systemd unit (its cgroup), with or
    /// without .service, e.g. --unit ssh or --unit user@1000.service.
    #[arg(long, value_name = "UNIT")]
    pub unit: Option<String>,
    /// Only connections owned by processes of this container: its id or a prefix (docker's
    /// 12 digits), from the cgroup path of docker, containerd, cri-o or podman,
    /// e.g. --container 4f1b2c3d4e5f.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Only connections owned by processes of this Kubernetes pod: namespace/name, name or
    /// UID (names come from the kubelet's pod log directories), e.g. --pod shop/web-0.
    #[arg(long, value_name = "POD")]
    pub pod: Option<String>,
    /// The cgroup v2 hierarchy that names owners' cgroups (default: where it is mounted,
    /// from /proc/self/mountinfo), e.g. --cgroup-root /host/sys/fs/cgroup in a container.
    #[arg(long, value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// Where the kubelet keeps pod logs, whose directories name pods by UID,
    /// e.g. --pod-logs /host/var/log/pods.
    #[arg(long, value_name = "DIR", default_value = cgroup::DEFAULT_POD_LOGS)]
    pub pod_logs: PathBuf,
}

impl ConnectionArgs {
    pub fn filter(&self) -> ConnectionFilter {
        ConnectionFilter {
            port: self.port,
            addr: self.addr,
            pid: self.pid,
            comm: self.comm.clone(),
            workload: WorkloadFilter {
                unit: self.unit.clone(),
                container: self.container.clone(),
                pod: self.pod.clone(),
            },
        }
    }

    /// Some connections are asked for by name (a namespace is only a scope): their ends
    /// are all of interest.
    pub fn selects_connections(&self) -> bool {
        self.port.is_some()
            || self.addr.is_some()
            || self.pid.is_some()
            || self.comm.is_some()
            || self.unit.is_some()
            || self.container.is_some()
            || self.pod.is_some()
    }

    /// Names for owners' cgroups: units, containers, pods.
    pub fn workloads(&self) -> CgroupNames {
        CgroupNames::new(self.cgroup_root.clone(), self.pod_logs.clone())
    }
}

/// How to load the kernel programs.
#[derive(Args)]
pub struct KernelArgs {
    /// Kernel BTF to read struct layouts from, e.g. --btf /sys/kernel/btf/vmlinux (the default).
    #[arg(long, value_name = "PATH", default_value_os_t = default_btf_path().to_path_buf())]
    btf: PathBuf,
    /// Ring buffer size in KiB (a power of two); larger loses fewer events under bursts,
    /// e.g. --ring-buffer-size 16384.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = parse_ring_kib)]
    ring_buffer_size: u32,
    /// How to hook the keepalive timer and resets: kprobes (cheapest; needs CONFIG_KPROBES),
    /// BTF tracepoints, or auto (kprobes when they work, else tracepoints; `keepalive
    /// doctor` says which and why), e.g. --mode tracepoint.
    #[arg(long, value_enum, default_value = "auto", env = "KEEPALIVE_MODE")]
    mode: keepalive_user::kernel::hooks::AttachMode,
}

impl KernelArgs {
    /// How to load the programs for the connections `conn` selects (the port and the
    /// namespace are filtered in the kernel).
    pub fn load_options(&self, conn: &ConnectionArgs) -> Result<LoadOptions> {
        Ok(LoadOptions {
            btf_path: self.btf.clone(),
            filter_port: conn.port.unwrap_or(0),
            // A namespace that is not there is bad input, like a bad flag.
            filter_netns: conn
                .netns
                .as_deref()
                .map(netns::inode)
                .transpose()
                .map_err(|e| UsageError(format!("{e:#}")))?
                .unwrap_or(0),
            ring_buffer_size: self.ring_buffer_size * 1024,
            mode: self.mode,
            all_states: false,
            all_ends: conn.selects_connections(),
            min_life: EndsArgs::DEFAULT_MIN_LIFE,
        })
    }
}

fn parse_ring_kib(s: &str) -> Result<u32, String> {
    let kib: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of KiB"))?;
    if !(4..=1 << 20).contains(&kib) || !kib.is_power_of_two() {
        return Err(format!(
            "{kib} KiB: must be a power of two from 4 to 1048576"
        ));
    }
    Ok(kib)
}

/// Which connection ends are worth a record, a line and a verdict.
#[derive(Args)]
pub struct EndsArgs {
    /// Every connection's end, ordinary ones too (short, orderly, no keepalive, nothing went
    /// wrong), each with its verdict and line: what a busy host makes thousands of a second.
    /// By default they are only counted (in the summary and the metrics); any connection
    /// filter also shows every end of the connections it selects, e.g. --all.
    #[arg(long)]
    pub all: bool,
    /// An orderly end is of interest, and shown, when the connection lived at least this
    /// long (ssh, psql and long-polling sessions do; requests and responses do not),
    /// e.g. --min-life 30s. Deaths (resets, timeouts, errors, retransmissions, aborts) and
    /// connections with keepalive on are always shown.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_life)]
    pub min_life: std::time::Duration,
}

impl EndsArgs {
    /// `--min-life`'s default: see its help.
    pub const DEFAULT_MIN_LIFE: std::time::Duration = std::time::Duration::from_secs(5);

    /// Applies them to how the programs load.
    pub fn apply(&self, opts: &mut LoadOptions) {
        opts.all_ends |= self.all;
        opts.min_life = self.min_life;
    }
}

fn parse_life(s: &str) -> Result<std::time::Duration, String> {
    let d = store::parse_duration(s)?;
    std::time::Duration::try_from(d).map_err(|_| format!("`{s}`: not a duration"))
}

/// A period of the history to look at.
#[derive(Args)]
pub struct PeriodArgs {
    /// From this time: a time ago (90s, 30m, 12h, 2d, 1h30m) or an RFC 3339 time,
    /// e.g. --since 12h.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Up to this time (the same forms; now when not given), e.g. --until 2h.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// The store to read: the directory `keepalive trace --history` writes,
    /// e.g. --history /srv/keepalive.
    #[arg(long, value_name = "DIR", default_value = store::DEFAULT_DIR)]
    pub history: PathBuf,
}

impl PeriodArgs {
    /// `[since, until]`, `since` defaulting to `default_ago` before now.
    pub fn range(
        &self,
        now: time::OffsetDateTime,
        default_ago: &str,
    ) -> Result<(time::OffsetDateTime, time::OffsetDateTime)> {
        let parse = |flag: &str, s: &str| {
            store::parse_time(s, now).map_err(|e| UsageError(format!("--{flag} {e}")))
        };
        let since = parse("since", self.since.as_deref().unwrap_or(default_ago))?;
        let until = match &self.until {
            Some(u) => parse("until", u)?,
            None => now,
        };
        if since > until {
            return Err(UsageError("--since is after --until".into()).into());
        }
        Ok((since, until))
    }
}

/// Bad input from the user (exit code 2, like a bad flag).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
