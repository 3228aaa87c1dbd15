//! The settings the user side writes before the programs load (read with `config!`).

use keepalive_common::KernelConfig;

#[unsafe(no_mangle)]
pub static CONFIG: KernelConfig = KernelConfig::zeroed();
