//! keepalive: why did my TCP connection die?
//!
//! The pure parts (events, decoding, diagnosis, advice, replay) live in `keepalive-events`
//! and are re-exported here. This crate is the edges, one folder per concern:
//! - [`kernel`]: what the running kernel offers ([`kernel::btf`] for struct layouts and
//!   enums), which programs each mode attaches ([`kernel::hooks`]), loading them
//!   ([`kernel::loader`]) and reading their records ([`kernel::records`]);
//! - [`host`]: processes ([`host::procs`]), network namespaces ([`host::netns`]), cgroups
//!   and the workloads they name ([`host::cgroup`]), and sockets that already exist
//!   ([`host::snapshot`]);
//! - [`output`]: human lines and JSON lines ([`output::json_line`]), Prometheus metrics
//!   ([`output::metrics`]) and the verdict history ([`output::history`]);
//! - the commands: [`trace`] (its live loop; [`pipeline`] decides what it prints), [`doctor`],
//!   [`sockets`], [`enforce`] and [`path`] (whose search is [`path_plan`], pure).
//!
//! The binary's argument parsing is in `src/cli/`.
pub use keepalive_events::{advice, decode, diagnose, event, replay, verdict, workload};

pub mod doctor;
pub mod enforce;
pub mod host;
pub mod kernel;
pub mod output;
pub mod path;
pub mod path_plan;
pub mod pipeline;
pub mod sockets;
pub mod trace;
