#![no_std]
// Exists so the host build of keepalive-user can depend on this crate (see its build.rs).
