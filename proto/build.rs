//! Compiles `proto/chat/v1/*.proto` without a system `protoc`: `protox` parses
//! them into a `FileDescriptorSet`, `tonic-prost-build` turns that into prost
//! messages and tonic stubs, and the encoded set is written beside them for
//! gRPC reflection.

use std::{env, fs, path::PathBuf};

/// The proto files to compile, relative to the `proto/` include directory.
const PROTOS: &[&str] = &["chat/v1/chat.proto", "chat/v1/raft.proto"];

/// File name in `OUT_DIR` of the encoded descriptor set; `lib.rs` includes it.
const DESCRIPTOR_FILE: &str = "chat_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Cargo scans a directory given here recursively, so adding a proto file
    // is picked up too.
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut compiler = protox::Compiler::new([&include])?;
    // Source info carries the proto comments: prost turns them into rustdoc,
    // and reflection clients (grpcurl describe) show them.
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;

    // `file_descriptor_set_path` is ignored on the `compile_fds` path (only the
    // protoc path writes it), so the encoded set is written here instead.
    fs::write(
        out_dir.join(DESCRIPTOR_FILE),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        // Stubs stay transport-agnostic: callers build their own `Channel`
        // (the client crate does failover), so no `connect` helper and no
        // dependency on tonic's `channel` feature here.
        .build_transport(false)
        // Our codec, not `tonic_prost::ProstCodec`, in every client and
        // server: it reports a message that does not decode as
        // INVALID_ARGUMENT instead of INTERNAL. `crate::` because the
        // generated code is included into this crate (`lib.rs`).
        .codec_path("crate::codec::Codec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
