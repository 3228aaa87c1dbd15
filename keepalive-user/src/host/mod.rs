//! The host around the connections: processes, network namespaces, cgroups and the
//! workloads they name, and the sockets that exist already.

pub mod cgroup;
pub mod netns;
pub mod procs;
pub mod snapshot;
