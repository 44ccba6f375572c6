//! Compiles the .proto files with protox (pure Rust, no protoc) and generates prost messages plus tonic client and
//! server code from the resulting descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/istio/v1/auth/ca.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
