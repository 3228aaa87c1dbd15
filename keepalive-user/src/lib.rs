//! keepalive: why did my TCP connection die?
//!
//! The pure parts (events, decoding, diagnosis, replay) live in `keepalive-events` and are
//! re-exported here. This crate is the edges: [`btf`] and [`kernel`] learn about the running
//! kernel, [`loader`] loads and attaches the programs, [`trace`] runs the live loop,
//! [`doctor`] reports what the kernel offers, [`netns`] names namespaces, [`snapshot`], [`procs`] and [`sockets`] look at
//! sockets that already exist, [`pipeline`] and [`output`] decide what to print and print it,
//! [`history`] keeps verdicts for questions asked afterwards.
pub use keepalive_events::{advice, decode, diagnose, event, replay, verdict};

pub mod btf;
pub mod doctor;
pub mod enforce;
pub mod history;
pub mod hooks;
pub mod json_line;
pub mod kernel;
pub mod loader;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod path;
pub mod path_plan;
pub mod pipeline;
pub mod procs;
pub mod records;
pub mod snapshot;
pub mod sockets;
pub mod trace;
pub mod workload;
