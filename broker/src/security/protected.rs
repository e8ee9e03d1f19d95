//! Protected mode (as in Mosquitto 2 and Redis): a broker without CURVE binds only loopback
//! (or local-only transports) unless `security.insecure: true` says plaintext on the network is
//! intended.

/// Whether binding `endpoint` keeps traffic on this machine: `tcp://` on `127.x.x.x`,
/// `localhost`, `[::1]` or the `lo` interface, and `ipc://` / `inproc://`. Wildcards (`*`,
/// `0.0.0.0`, `[::]`), any other address, interface or host name, and other transports are not.
pub fn is_local(endpoint: &str) -> bool {
    if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") {
        return true;
    }
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return false;
    };
    // `tcp://source;destination` is a connect form; a bind never has it, but be strict.
    if rest.contains(';') {
        return false;
    }
    let Some((host, _port)) = rest.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" || host == "lo" {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The endpoints among `endpoints` that leave this machine.
pub fn exposed<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    endpoints.into_iter().filter(|e| !is_local(e)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_local_transports_are_local() {
        for local in [
            "tcp://127.0.0.1:9797",
            "tcp://127.1.2.3:1",
            "tcp://localhost:9797",
            "tcp://[::1]:9797",
            "tcp://lo:9797",
            "ipc:///tmp/plantd",
            "inproc://x",
        ] {
            assert!(is_local(local), "{local}");
        }
        for exposed in [
            "tcp://*:9797",
            "tcp://0.0.0.0:9797",
            "tcp://[::]:9797",
            "tcp://10.0.0.5:9797",
            "tcp://eth0:9797",
            "tcp://example.com:9797",
            "ws://127.0.0.1:9797",
            "tcp://127.0.0.1",
        ] {
            assert!(!is_local(exposed), "{exposed}");
        }
    }
}
