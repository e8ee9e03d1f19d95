pub fn configure() {
    println!("cargo:rerun-if-changed=build/main.rs");
    println!("cargo:rerun-if-env-changed=PROFILE");

    // Note that by default `libzmq` builds without `libsodium` by instead
    // relying on `tweetnacl`. However since this `tweetnacl` [has never been
    // audited nor is ready for production](https://github.com/zeromq/libzmq/issues/3006),
    // we link against `libsodium` to enable `ZMQ_CURVE`.
    //
    // plantd (rust-zmq#400): the libsodium that `libsodium-sys-stable` built, found through its
    // `links = "sodium"` metadata. Upstream passes `None` here, which compiles CURVE out.
    let sodium = |key: &str| {
        let name = format!("DEP_SODIUM_{}", key);
        std::env::var(&name)
            .unwrap_or_else(|_| panic!("libsodium-sys-stable did not report {}", name))
    };
    let libsodium = zeromq_src::LibLocation::new(sodium("LIB"), sodium("INCLUDE"));
    // plantd: cargo replays a path dependency's build warnings on every build; libzmq's own
    // compiler warnings are upstream's business, so they are silenced (`-w`).
    for flags in &["CFLAGS", "CXXFLAGS"] {
        let mut value = std::env::var(flags).unwrap_or_default();
        value.push_str(" -w");
        std::env::set_var(flags, value);
    }
    zeromq_src::Build::new()
        .with_libsodium(Some(libsodium))
        .build();
}

fn main() {
    configure()
}
