//! Who owns a connection beyond its process: the systemd unit, the container and the
//! Kubernetes pod, read from the owner's cgroup path (the naming conventions of systemd,
//! docker, containerd, cri-o, podman and the kubelet). Pure: a path in, names out; the
//! cgroup filesystem and the kubelet's pod log directories are read at the edge.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// What owns a connection. In JSON its fields sit beside `pid` and `comm`; absent when
/// not known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// The owner's cgroup (v2) path from the hierarchy's root, e.g. /system.slice/ssh.service.
    pub cgroup: String,
    /// The systemd unit(s) the path passes through, outermost first, e.g. ssh.service or
    /// user@1000.service/app-foo.scope (not a container's own scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The container's id (64 hex digits; docker shows the first 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The Kubernetes pod, `namespace/name`, when the node's pod directories name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's UID, from the cgroup path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl Workload {
    /// What a cgroup path says by itself: unit, container and pod UID.
    pub fn from_cgroup(path: &str) -> Workload {
        let mut w = Workload {
            cgroup: path.to_string(),
            ..Workload::default()
        };
        let mut units = vec![];
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if let Some(id) = container_id(part) {
                w.container = Some(id.to_string());
            } else if let Some(uid) = pod_uid(part) {
                w.pod_uid = Some(uid);
            } else if part.ends_with(".service") || part.ends_with(".scope") {
                units.push(part);
            }
        }
        if !units.is_empty() {
            w.unit = Some(units.join("/"));
        }
        w
    }

    /// The container id as people see it: docker's 12 digits.
    pub fn short_container(&self) -> Option<&str> {
        self.container.as_deref().map(|c| &c[..c.len().min(12)])
    }

    /// One short name for a human line: the pod, else the container, else the unit.
    pub fn label(&self) -> Option<String> {
        if let Some(pod) = &self.pod {
            return Some(format!("pod {pod}"));
        }
        if let Some(uid) = &self.pod_uid {
            return Some(format!("pod uid {uid}"));
        }
        if let Some(c) = self.short_container() {
            return Some(format!("container {c}"));
        }
        self.unit.clone()
    }
}

/// The container id in one component of a cgroup path: `<64 hex>` (cgroupfs drivers) or
/// `<runtime>-<64 hex>.scope` (systemd drivers: docker, cri-containerd, crio, libpod).
fn container_id(part: &str) -> Option<&str> {
    let id = match part.strip_suffix(".scope") {
        Some(scope) => {
            let (runtime, id) = scope.rsplit_once('-')?;
            if !matches!(runtime, "docker" | "cri-containerd" | "crio" | "libpod") {
                return None;
            }
            id
        }
        None => part,
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The pod UID in one component: `kubepods-<qos>-pod<uid, _ for ->.slice` (systemd driver)
/// or `pod<uid>` (cgroupfs driver).
fn pod_uid(part: &str) -> Option<String> {
    let uid = match part.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods-") => slice.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => part.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A UUID as the kubelet writes pod UIDs: 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The pod a kubelet log directory stands for: `<namespace>_<name>_<uid>` (the names
/// cannot hold `_`), as (namespace, name, uid).
pub fn pod_of_log_dir(dir: &str) -> Option<(&str, &str, &str)> {
    let (rest, uid) = dir.rsplit_once('_')?;
    let (namespace, name) = rest.split_once('_')?;
    (!namespace.is_empty() && !name.is_empty() && is_uid(uid)).then_some((namespace, name, uid))
}

/// Which workloads to look at (`--unit`, `--container`, `--pod`); all given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadFilter {
    /// A unit's name, with or without `.service`: matches any unit on the path.
    pub unit: Option<String>,
    /// A container id or its prefix (docker's 12 digits will do).
    pub container: Option<String>,
    /// `namespace/name`, or just the pod's name, or its UID.
    pub pod: Option<String>,
}

impl WorkloadFilter {
    pub fn is_empty(&self) -> bool {
        self.unit.is_none() && self.container.is_none() && self.pod.is_none()
    }

    pub fn matches(&self, w: Option<&Workload>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(w) = w else {
            return false;
        };
        let unit = self.unit.as_deref().is_none_or(|want| {
            w.unit.as_deref().is_some_and(|units| {
                units
                    .split('/')
                    .any(|u| u == want || u.strip_suffix(".service") == Some(want))
            })
        });
        let container = self.container.as_deref().is_none_or(|want| {
            !want.is_empty() && w.container.as_deref().is_some_and(|c| c.starts_with(want))
        });
        let pod = self.pod.as_deref().is_none_or(|want| {
            w.pod_uid.as_deref() == Some(want)
                || w.pod.as_deref().is_some_and(|p| {
                    p == want || p.split_once('/').is_some_and(|(_, name)| name == want)
                })
        });
        unit && container && pod
    }
}

/// Serde for an `Option<Arc<Workload>>` flattened into an event or a verdict: its fields
/// or none at all.
pub mod flat {
    use super::*;
    use serde::{Deserializer, Serializer, ser::SerializeMap};

    pub fn serialize<S: Serializer>(w: &Option<Arc<Workload>>, s: S) -> Result<S::Ok, S::Error> {
        match w {
            Some(w) => w.serialize(s),
            None => s.serialize_map(Some(0))?.end(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<Workload>>, D::Error> {
        #[derive(Deserialize)]
        struct Fields {
            cgroup: Option<String>,
            unit: Option<String>,
            container: Option<String>,
            pod: Option<String>,
            pod_uid: Option<String>,
        }
        let f = Fields::deserialize(d)?;
        Ok(f.cgroup.map(|cgroup| {
            Arc::new(Workload {
                cgroup,
                unit: f.unit,
                container: f.container,
                pod: f.pod,
                pod_uid: f.pod_uid,
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    #[test]
    fn systemd_units() {
        let w = Workload::from_cgroup("/system.slice/ssh.service");
        assert_eq!(w.unit.as_deref(), Some("ssh.service"));
        assert_eq!((w.container, w.pod_uid), (None, None));
        let w = Workload::from_cgroup(
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope",
        );
        assert_eq!(w.unit.as_deref(), Some("user@1000.service/app-foo.scope"));
        assert_eq!(Workload::from_cgroup("/").unit, None);
        assert_eq!(Workload::from_cgroup("/user.slice").unit, None);
    }

    #[test]
    fn containers_of_each_runtime_and_driver() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/system.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
        ] {
            let w = Workload::from_cgroup(&path);
            assert_eq!(w.container.as_deref(), Some(ID), "{path}");
            assert_eq!(w.unit, None, "{path}: a container's scope is not its unit");
            assert_eq!(w.short_container(), Some(&ID[..12]));
        }
        // Not a container: a scope that merely ends in hex, a short id.
        assert_eq!(
            Workload::from_cgroup(&format!("/foo-{ID}.scope")).container,
            None
        );
        assert_eq!(Workload::from_cgroup("/docker/4f1b2c3d").container, None);
    }

    #[test]
    fn kubernetes_pods_with_both_drivers() {
        let uid = "0d3e6b7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        let cgroupfs = format!("/kubepods/besteffort/pod{uid}/{ID}");
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice/crio-{ID}.scope",
            uid.replace('-', "_")
        );
        for path in [systemd, cgroupfs, guaranteed] {
            let w = Workload::from_cgroup(&path);
            assert_eq!(w.pod_uid.as_deref(), Some(uid), "{path}");
            assert_eq!(w.container.as_deref(), Some(ID), "{path}");
            assert_eq!(w.unit, None, "{path}");
        }
    }

    #[test]
    fn pod_log_directories() {
        let uid = "0d3e6b7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            pod_of_log_dir(&format!("kube-system_coredns-5d78c9869d-x2v7k_{uid}")),
            Some(("kube-system", "coredns-5d78c9869d-x2v7k", uid))
        );
        assert_eq!(pod_of_log_dir("default_web_not-a-uid"), None);
        assert_eq!(pod_of_log_dir(&format!("web_{uid}")), None);
    }

    #[test]
    fn filters_by_unit_container_and_pod() {
        let uid = "0d3e6b7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b";
        let mut pod = Workload::from_cgroup(&format!("/kubepods/pod{uid}/{ID}"));
        pod.pod = Some("shop/web-0".into());
        let unit = Workload::from_cgroup("/system.slice/ssh.service");
        let by = |unit: Option<&str>, container: Option<&str>, pod: Option<&str>| WorkloadFilter {
            unit: unit.map(Into::into),
            container: container.map(Into::into),
            pod: pod.map(Into::into),
        };
        assert!(by(Some("ssh"), None, None).matches(Some(&unit)));
        assert!(by(Some("ssh.service"), None, None).matches(Some(&unit)));
        assert!(!by(Some("ssh"), None, None).matches(Some(&pod)));
        assert!(!by(Some("ssh"), None, None).matches(None));
        assert!(by(None, Some(&ID[..12]), None).matches(Some(&pod)));
        assert!(!by(None, Some(&ID[..12]), None).matches(Some(&unit)));
        for want in ["shop/web-0", "web-0", uid] {
            assert!(by(None, None, Some(want)).matches(Some(&pod)), "{want}");
        }
        assert!(!by(None, None, Some("web")).matches(Some(&pod)));
        assert!(WorkloadFilter::default().matches(None));
    }

    #[test]
    fn flattened_fields_round_trip() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Owner {
            pid: u32,
            #[serde(flatten, with = "flat")]
            workload: Option<Arc<Workload>>,
        }
        let mut w = Workload::from_cgroup("/system.slice/ssh.service");
        w.pod = Some("a/b".into());
        for workload in [None, Some(Arc::new(w))] {
            let o = Owner { pid: 1, workload };
            let json = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Owner>(&json).unwrap(), o, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&Owner {
                pid: 1,
                workload: None
            })
            .unwrap(),
            r#"{"pid":1}"#
        );
    }
}
