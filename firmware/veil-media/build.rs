// openh264 builds its x86 assembly only when `nasm` is on PATH, and silently falls back to C
// (about 2.5x slower) otherwise. Say so loudly; with VEIL_REQUIRE_NASM=1 (scripts/test) fail.
fn main() {
    println!("cargo:rerun-if-env-changed=VEIL_REQUIRE_NASM");
    println!("cargo:rerun-if-env-changed=PATH");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if arch != "x86_64" && arch != "x86" {
        return;
    }
    let has_nasm = std::process::Command::new("nasm")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nasm {
        let msg = "nasm not found: openh264 builds without its assembly and encodes ~2.5x slower; install nasm (apt-get install nasm)";
        if std::env::var_os("VEIL_REQUIRE_NASM").is_some_and(|v| v == "1") {
            panic!("{msg}");
        }
        println!("cargo:warning={msg}");
    }
}
