//! Cgroups (v2) on this host: where the hierarchy is mounted, a cgroup named on the command
//! line, and names for the owners' cgroups: the cgroup filesystem maps a cgroup
//! id (a directory's inode number) to its path, and the kubelet's pod log directories
//! (`/var/log/pods/<namespace>_<name>_<uid>`) map a pod UID to its namespace and name, with
//! no API access. What a path means is `keepalive_events::workload`'s pure business.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use keepalive_events::{
    decode::WorkloadOf,
    workload::{Workload, pod_of_log_dir},
};

/// Where the kubelet keeps pod logs.
pub const DEFAULT_POD_LOGS: &str = "/var/log/pods";
/// A new cgroup or pod is looked for at most this often: a walk of the hierarchy is a
/// directory read per cgroup.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// Walks stop this deep and after this many cgroups (a host has hundreds to thousands).
const MAX_DEPTH: usize = 32;
const MAX_CGROUPS: usize = 1 << 17;
/// Cache kept; past it the cache starts over.
const MAX_NAMED: usize = 1 << 16;

/// The cgroup v2 hierarchy's mount point, from /proc/self/mountinfo.
pub fn v2_mount() -> Result<PathBuf> {
    let info =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    parse_v2_mount(&info).context("no cgroup v2 hierarchy is mounted (fstype cgroup2)")
}

fn parse_v2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // "... mount_point options - fstype source super_options"
        let (left, right) = l.split_once(" - ")?;
        let mount_point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// A cgroup given as an absolute path or relative to the cgroup v2 mount.
pub fn resolve(arg: &str) -> Result<PathBuf> {
    let root = v2_mount()?;
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

/// Cached names of cgroups, shared by the decoder and the owner lookups in /proc.
#[derive(Clone)]
pub struct CgroupNames(Arc<Mutex<Cache>>);

struct Cache {
    /// The cgroup v2 mount; none on a host without one (then nothing is named).
    root: Option<PathBuf>,
    pod_logs: PathBuf,
    /// Cgroup id to path, from the last walk.
    paths: HashMap<u64, String>,
    walked: Option<Instant>,
    /// Pod UID to `namespace/name`, from the last read of the pod log directories.
    pods: HashMap<String, String>,
    pods_read: Option<Instant>,
    named: HashMap<String, Arc<Workload>>,
}

impl CgroupNames {
    /// `root` is the cgroup v2 hierarchy (None: found in /proc/self/mountinfo).
    pub fn new(root: Option<PathBuf>, pod_logs: PathBuf) -> CgroupNames {
        let root = root.or_else(|| v2_mount().ok());
        if root.is_none() {
            log::info!("no cgroup v2 hierarchy: connections are not attributed to units or pods");
        }
        CgroupNames(Arc::new(Mutex::new(Cache {
            root,
            pod_logs,
            paths: HashMap::new(),
            walked: None,
            pods: HashMap::new(),
            pods_read: None,
            named: HashMap::new(),
        })))
    }

    /// For the decoder: names a cgroup id.
    pub fn for_decoder(&self) -> WorkloadOf {
        let me = self.clone();
        Box::new(move |id| me.of_cgroup(id))
    }

    /// The workload of cgroup `id` (as the kernel's bpf_get_current_cgroup_id gives it).
    pub fn of_cgroup(&self, id: u64) -> Option<Arc<Workload>> {
        let mut n = self.0.lock().unwrap();
        if !n.paths.contains_key(&id) && due(n.walked) {
            n.walk();
        }
        let path = n.paths.get(&id)?.clone();
        Some(n.of_path(&path))
    }

    /// The workload of a running process, from /proc/PID/cgroup (for owners found in /proc).
    pub fn of_pid(&self, pid: u32) -> Option<Arc<Workload>> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let mut n = self.0.lock().unwrap();
        n.root.as_ref()?;
        Some(n.of_path(path))
    }
}

impl Cache {
    fn of_path(&mut self, path: &str) -> Arc<Workload> {
        if let Some(w) = self.named.get(path) {
            return w.clone();
        }
        let mut w = Workload::from_cgroup(path);
        if let Some(uid) = &w.pod_uid {
            if !self.pods.contains_key(uid) && due(self.pods_read) {
                self.read_pods();
            }
            w.pod = self.pods.get(uid).cloned();
        }
        let w = Arc::new(w);
        // A pod not named yet (its directory may come later) is looked up again next time.
        if w.pod_uid.is_none() || w.pod.is_some() {
            if self.named.len() >= MAX_NAMED {
                self.named.clear();
            }
            self.named.insert(path.to_string(), w.clone());
        }
        w
    }

    /// Maps every cgroup's id to its path.
    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        let Some(root) = self.root.clone() else {
            return;
        };
        self.paths.clear();
        let mut stack = vec![(root.clone(), 0)];
        while let Some((dir, depth)) = stack.pop() {
            if self.paths.len() >= MAX_CGROUPS {
                log::info!("more than {MAX_CGROUPS} cgroups: the rest are not named");
                break;
            }
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            self.paths.insert(meta.ino(), cgroup_path(&root, &dir));
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }

    fn read_pods(&mut self) {
        self.pods_read = Some(Instant::now());
        let Ok(entries) = fs::read_dir(&self.pod_logs) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if let Some((namespace, pod, uid)) = name.to_str().and_then(pod_of_log_dir) {
                self.pods
                    .insert(uid.to_string(), format!("{namespace}/{pod}"));
            }
        }
    }
}

fn due(last: Option<Instant>) -> bool {
    last.is_none_or(|t| t.elapsed() >= LOOK_AGAIN)
}

/// `dir` as a path from the hierarchy's root, as /proc/PID/cgroup writes it ("/" for the root).
fn cgroup_path(root: &Path, dir: &Path) -> String {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    format!("/{}", rel.display())
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
            parse_v2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(parse_v2_mount("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
