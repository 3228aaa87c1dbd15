//! keepalive's events and what they mean, apart from how they are collected (like
//! retis-events): recordings can be read, replayed, diagnosed and fuzzed without a kernel.
//!
//! [`event`] is what users see; [`decode`] turns kernel records into events; [`diagnose`]
//! follows each connection and judges how it ended ([`verdict`]), in words from [`advice`];
//! [`replay`] reads recordings back; [`table`] holds the hash tables they share.
pub mod advice;
pub mod decode;
pub mod diagnose;
pub mod event;
pub mod idle_limit;
pub mod replay;
pub mod table;
pub mod verdict;
pub mod workload;
