//! TLS to PostgreSQL against a real server that accepts TCP only over TLS: the connection is
//! encrypted when the server's certificate chains to `tls_root_cert` and names the host, and
//! refused (quickly, with the reason) when it does not, or when TLS is switched off.

use plantd_pg_util::testing::{tls_cluster, ServerTls};
use plantd_pg_util::{PgError, PostgresConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A CA (PEM) and a server certificate and key it signed for 127.0.0.1 only.
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "plantd test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    (ca_pem, server.pem(), server_key.serialize_pem())
}

/// Whether the connection `config` makes is encrypted, or why none could be made.
fn connect(rt: &tokio::runtime::Runtime, config: &PostgresConfig) -> Result<bool, PgError> {
    rt.block_on(async {
        let pool = config.pool()?;
        let client = config.connect(&pool).await?;
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.get::<_, bool>(0))
    })
}

#[test]
fn connections_are_encrypted_and_the_server_certificate_is_verified() {
    let (ca_pem, cert_pem, key_pem) = certificates();
    let Some(cluster) = tls_cluster(ServerTls {
        cert_pem: &cert_pem,
        key_pem: &key_pem,
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dsn = cluster.dsn("postgres");
    let config = |dsn: String, root: Option<&std::path::Path>| PostgresConfig {
        tls_root_cert: root.map(ToOwned::to_owned),
        connect_timeout_secs: 5,
        ..PostgresConfig::with_dsn(dsn)
    };

    // Trusted CA, right name: encrypted, whether TLS is required or only preferred (the default).
    for mode in [" sslmode=require", " sslmode=prefer", ""] {
        let encrypted = connect(&rt, &config(format!("{dsn}{mode}"), Some(&ca_file)));
        assert!(
            encrypted.unwrap(),
            "sslmode{mode}: the connection is encrypted"
        );
    }

    // Each refusal says why.
    let refused = |config: PostgresConfig, why: &str| {
        let e = connect(&rt, &config).expect_err(why).to_string();
        assert!(e.contains(why), "expected {why:?} in: {e}");
    };
    // Without TLS the server refuses (its pg_hba.conf has hostssl lines only).
    refused(
        config(format!("{dsn} sslmode=disable"), None),
        "no encryption",
    );
    // A certificate from a CA we were not told to trust (the system's roots do not hold it).
    refused(
        config(format!("{dsn} sslmode=require"), None),
        "UnknownIssuer",
    );
    // A trusted CA's certificate for another name: a server impersonating this one.
    let by_name = dsn.replace("host=127.0.0.1", "host=localhost");
    refused(
        config(format!("{by_name} sslmode=require"), Some(&ca_file)),
        "not valid for name",
    );

    // A root certificate file that is missing or holds no certificate is a settings error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    for bad in [dir.path().join("missing.pem"), empty] {
        let e = config(format!("{dsn} sslmode=require"), Some(&bad))
            .pool()
            .expect_err("an unusable root certificate file");
        assert!(matches!(e, PgError::Tls(_)), "{e}");
        assert!(e.to_string().contains("tls_root_cert"), "{e}");
    }
}
