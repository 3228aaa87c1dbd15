/// The BPF build needs `bpf-linker`; rebuild when it changes (aya-template's approach).
/// `bpf_target_arch` says which architecture's `pt_regs` the kprobes read (aya's cfg).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    aya_build::emit_bpf_target_arch_cfg().expect("bpf_target_arch");
}
