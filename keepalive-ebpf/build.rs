/// The BPF build needs `bpf-linker`; rebuild when it changes (aya-template's approach).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
