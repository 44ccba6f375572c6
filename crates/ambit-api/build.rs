//! Compiles the .proto files with protox (pure Rust, no protoc) and generates prost messages plus tonic client and
//! server code from the resulting descriptor set.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/istio/v1/auth/ca.proto",
        "proto/istio/workload/workload.proto",
        "proto/istio/workload/zds/zds.proto",
        "proto/istio/security/authorization.proto",
        "proto/envoy/service/discovery/v3/ads.proto",
        "proto/ambit/config/v1/config.proto",
        "proto/ambit/echo/v1/echo.proto",
    ];
    // Imported files are compiled with the files that import them; all of them trigger a rebuild.
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps encode in key order, so the same resource always has the same bytes.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
