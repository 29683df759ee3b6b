//! Compiles proto/ with protox (pure Rust), so no system `protoc` is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "certledger/common/v1/common.proto",
        "certledger/events/v1/events.proto",
        "certledger/order/v1/order.proto",
        "certledger/issuance/v1/issuance.proto",
        "certledger/deployment/v1/deployment.proto",
        "certledger/revocation/v1/revocation.proto",
        "certledger/query/v1/query.proto",
        "certledger/auth/v1/auth.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("certledger_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
