//! Names for the owners' cgroups, from the host: the cgroup (v2) filesystem maps a cgroup
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

use keepalive_events::{decode::WorkloadNames, workload::pod_of_log_dir};

pub use keepalive_events::workload::{Workload, WorkloadFilter};

/// Where the kubelet keeps pod logs.
pub const DEFAULT_POD_LOGS: &str = "/var/log/pods";
/// A new cgroup or pod is looked for at most this often: a walk of the hierarchy is a
/// directory read per cgroup.
const LOOK_AGAIN: Duration = Duration::from_secs(1);
/// Walks stop this deep and after this many cgroups (a host has hundreds to thousands).
const MAX_DEPTH: usize = 32;
const MAX_CGROUPS: usize = 1 << 17;
/// Names kept; past it the cache starts over.
const MAX_NAMED: usize = 1 << 16;

/// Cached names of cgroups, shared by the decoder and the owner lookups in /proc.
#[derive(Clone)]
pub struct Workloads(Arc<Mutex<Names>>);

struct Names {
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

impl Workloads {
    /// `root` is the cgroup v2 hierarchy (None: found in /proc/self/mountinfo).
    pub fn new(root: Option<PathBuf>, pod_logs: PathBuf) -> Workloads {
        let root = root.or_else(|| crate::enforce::cgroup2_mount().ok());
        if root.is_none() {
            log::info!("no cgroup v2 hierarchy: connections are not attributed to units or pods");
        }
        Workloads(Arc::new(Mutex::new(Names {
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
    pub fn for_decoder(&self) -> WorkloadNames {
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

impl Names {
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
