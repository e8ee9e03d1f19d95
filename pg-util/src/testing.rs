//! A private PostgreSQL cluster for tests: `initdb` into a tempdir, `pg_ctl start` on a free
//! loopback port with its own unix-socket directory, one cluster per test binary, a fresh database
//! per test; and [`tls_cluster`], one of its own that accepts TCP connections only over TLS.
//!
//! PostgreSQL refuses to run as root, so when we are root the cluster belongs to (and runs as) the
//! `postgres` user (`runuser`). Readiness is `pg_isready`, polled. A watchdog process stops the
//! cluster and removes its directory when the test binary exits, however it exits.
//!
//! Where the binaries are missing the tests skip with a message — unless `PLANTD_REQUIRE_POSTGRES`
//! is set (CI), then they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The environment variable that makes a missing PostgreSQL a failure instead of a skip.
pub const REQUIRE_VAR: &str = "PLANTD_REQUIRE_POSTGRES";

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    port: u16,
    socket_dir: PathBuf,
    run_as_postgres: bool,
}

static CLUSTER: OnceLock<Option<Cluster>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster of this test binary, started on first use; `None` (after printing why) when
/// PostgreSQL is not installed and [`REQUIRE_VAR`] is unset. Panics when it cannot start, or is
/// missing while required.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER
        .get_or_init(|| installed_bin().map(|bin| Cluster::start(bin, None)))
        .as_ref()
}

/// A server certificate and its private key, PEM.
#[derive(Clone, Copy, Debug)]
pub struct ServerTls<'a> {
    /// The certificate (chain), PEM.
    pub cert_pem: &'a str,
    /// Its private key, PEM.
    pub key_pem: &'a str,
}

/// A new cluster of its own presenting `tls` and refusing TCP connections without TLS (its
/// `pg_hba.conf` has `hostssl` lines only), or `None` (skip) as [`cluster`].
pub fn tls_cluster(tls: ServerTls<'_>) -> Option<Cluster> {
    installed_bin().map(|bin| Cluster::start(bin, Some(tls)))
}

/// Where the binaries are; `None` after printing why, or a panic under [`REQUIRE_VAR`].
fn installed_bin() -> Option<PathBuf> {
    match find_bin() {
        Some(bin) => Some(bin),
        None if std::env::var_os(REQUIRE_VAR).is_some() => {
            panic!("{REQUIRE_VAR} is set but initdb/pg_ctl were not found")
        }
        None => {
            eprintln!(
                "SKIPPED: PostgreSQL binaries (initdb, pg_ctl) not found; install postgresql \
                 or set {REQUIRE_VAR}=1 to make this a failure"
            );
            None
        }
    }
}

/// A DSN of a fresh, empty database in this binary's cluster, or `None` (skip) as [`cluster`].
pub fn fresh_database() -> Option<String> {
    cluster().map(Cluster::create_database)
}

/// Where `initdb` and `pg_ctl` live: Debian's versioned directory (newest), else `PATH`.
fn find_bin() -> Option<PathBuf> {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    debian.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(bin) = debian.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    fn start(bin: PathBuf, tls: Option<ServerTls<'_>>) -> Cluster {
        let run_as_postgres = is_root();
        let base = std::env::temp_dir().join(format!(
            "plantd-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let data = base.join("data");
        let socket_dir = base.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("create the cluster directory");
        if run_as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&base)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the cluster directory to postgres");
        }
        // The watchdog: when this process is gone (however it ended), stop the cluster and
        // remove its files. It polls the parent, which has no readiness signal to wait on.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {as_pg} {pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {base}",
            pid = std::process::id(),
            as_pg = if run_as_postgres { "runuser -u postgres --" } else { "" },
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            base = base.display(),
        );
        let _ = Command::new("sh")
            .args(["-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();

        let cluster = |program: &str| {
            let mut c = if run_as_postgres {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(bin.join(program));
                c
            } else {
                Command::new(bin.join(program))
            };
            c.stdin(Stdio::null());
            c
        };
        let out = cluster("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(tls) = tls {
            write_server_tls(&data, tls, run_as_postgres);
        }
        let ssl = if tls.is_some() { " -c ssl=on" } else { "" };
        // Another test binary may take the port between free_port and the bind: retry.
        for attempt in 0.. {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
                 -c fsync=off -c full_page_writes=off -c shared_buffers=32MB{ssl}",
                socket_dir.display()
            );
            let out = cluster("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(base.join("log"))
                .args(["-w", "-t", "60", "start"])
                .output()
                .expect("run pg_ctl");
            let me = Cluster {
                bin: bin.clone(),
                port,
                socket_dir: socket_dir.clone(),
                run_as_postgres,
            };
            if out.status.success() && me.wait_ready(Duration::from_secs(60)) {
                return me;
            }
            let log = std::fs::read_to_string(base.join("log")).unwrap_or_default();
            assert!(
                attempt < 3,
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        unreachable!()
    }

    fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The loopback port the cluster listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the cluster's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// True when the cluster runs as the `postgres` user (we are root).
    pub fn runs_as_postgres(&self) -> bool {
        self.run_as_postgres
    }

    /// DSN of the database `name` (superuser `postgres`, no password: trust on loopback).
    pub fn dsn(&self, name: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={name}",
            self.port
        )
    }

    /// Drops the database of `dsn` (one [`dsn`](Self::dsn) made), closing its connections: what a
    /// service sees when its database goes away under it.
    pub fn drop_database(&self, dsn: &str) {
        let name = dsn
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix("dbname="))
            .expect("a DSN of this cluster");
        let out = Command::new(self.bin.join("dropdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "--force", name])
            .stdin(Stdio::null())
            .output()
            .expect("run dropdb");
        assert!(
            out.status.success(),
            "dropdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates a fresh database and returns its DSN.
    pub fn create_database(&self) -> String {
        let name = format!(
            "plantd_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", &name])
            .stdin(Stdio::null())
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.dsn(&name)
    }
}

/// Puts `tls` where the server reads it by default (`server.crt`, `server.key`, the key 0600 as
/// PostgreSQL demands) and allows TCP connections only over TLS.
fn write_server_tls(data: &Path, tls: ServerTls<'_>, run_as_postgres: bool) {
    use std::os::unix::fs::PermissionsExt;
    let files = [
        ("server.crt", tls.cert_pem),
        ("server.key", tls.key_pem),
        (
            "pg_hba.conf",
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        ),
    ];
    for (name, text) in files {
        let path = data.join(name);
        std::fs::write(&path, text).expect("write the cluster's TLS files");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod the cluster's TLS files");
        if run_as_postgres {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&path)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown {name} to postgres");
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
