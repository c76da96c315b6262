use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

/// Builds close-wait-ebpf with the toolchain named by CLOSE_WAIT_BPF_TOOLCHAIN
/// (default `debian-bpf`, linked by `cargo xtask setup`); set it to `nightly`
/// for the standard nightly + rust-src route.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CLOSE_WAIT_BPF_TOOLCHAIN");
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "close-wait-ebpf")
        .ok_or_else(|| anyhow!("close-wait-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    let toolchain_name =
        std::env::var("CLOSE_WAIT_BPF_TOOLCHAIN").unwrap_or_else(|_| "debian-bpf".to_string());
    let toolchain = if toolchain_name == "nightly" {
        Toolchain::Nightly
    } else {
        Toolchain::Custom(Box::leak(toolchain_name.into_boxed_str()))
    };
    let package = aya_build::Package {
        name: name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], toolchain)
}
