//! Generates the gobgpd API client from the v3 `.proto` files Debian ships in
//! `golang-github-osrg-gobgp-dev` (the API is pinned to what that package holds).

use std::path::PathBuf;

/// Where Debian installs gobgp's API definitions; `GOBGP_API_DIR` overrides it.
const DEBIAN_GOBGP_API_DIR: &str = "/usr/share/gocode/src/github.com/osrg/gobgp/api";
/// Where `protobuf-compiler` installs the well-known types (`google/protobuf/any.proto`, ...).
const PROTOBUF_INCLUDE_DIR: &str = "/usr/include";

fn main() {
    println!("cargo:rerun-if-env-changed=GOBGP_API_DIR");
    let api_dir = PathBuf::from(
        std::env::var("GOBGP_API_DIR").unwrap_or_else(|_| DEBIAN_GOBGP_API_DIR.to_owned()),
    );
    let gobgp_proto = api_dir.join("gobgp.proto");
    let text = std::fs::read_to_string(&gobgp_proto).unwrap_or_else(|error| {
        panic!(
            "reading {}: {error}. The EVPN client is generated from gobgp's v3 API definitions: \
             install the Debian package golang-github-osrg-gobgp-dev (scripts/install-deps.sh does), \
             or point GOBGP_API_DIR at a directory holding gobgp.proto",
            gobgp_proto.display()
        )
    });
    // The v2 and v3 APIs differ in messages this crate uses; refuse anything but v3.
    assert!(
        text.contains("github.com/osrg/gobgp/v3/api"),
        "{} is not gobgp's v3 API (its go_package does not name gobgp/v3)",
        gobgp_proto.display()
    );
    let protos = ["gobgp.proto", "attribute.proto", "capability.proto"].map(|p| api_dir.join(p));
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&protos, &[api_dir.clone(), PathBuf::from(PROTOBUF_INCLUDE_DIR)])
        .unwrap_or_else(|error| {
            panic!(
                "generating the gobgp client failed: {error} (needs `protoc` and the well-known types in {PROTOBUF_INCLUDE_DIR}: Debian packages protobuf-compiler and libprotobuf-dev)"
            )
        });
}
