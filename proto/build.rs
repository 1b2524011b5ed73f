// Generates the confidant.v1 client and server code, plus the file descriptor set that the
// daemon's reflection service serves. protoc comes from protoc-bin-vendored so that a
// fresh machine needs no apt package.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "confidant/v1/embeddings.proto",
        "confidant/v1/admin.proto",
        "confidant/v1/kb.proto",
        "confidant/v1/intents.proto",
        "confidant/v1/bot.proto",
        "confidant/v1/assist.proto",
        "confidant/v1/qa.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("confidant_descriptor.bin"))
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
