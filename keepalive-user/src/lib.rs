//! keepalive: why did my TCP connection die?
//!
//! Layout: [`event`] is what users see, [`decode`] turns kernel records into events (pure),
//! [`output`] prints them; [`btf`] and [`kernel`] learn about the running kernel, [`loader`]
//! loads and attaches the programs, and [`trace`] runs the live loop. I/O stays at the edges.
pub mod advice;
pub mod btf;
pub mod decode;
pub mod diagnose;
pub mod event;
pub mod kernel;
pub mod loader;
pub mod output;
pub mod pipeline;
pub mod procs;
pub mod replay;
pub mod snapshot;
pub mod sockets;
pub mod trace;
