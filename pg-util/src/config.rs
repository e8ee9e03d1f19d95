//! [`PostgresConfig`]: how a service reaches its PostgreSQL database.
//!
//! The DSN is either a URL (`postgres://user@host:5432/db`) or libpq key/value pairs
//! (`host=db.example user=plantd dbname=state`). A password may sit in the DSN, but a
//! `password_file` (first line, trailing newline dropped; the file must not be readable by group or
//! others) keeps it out of config files and the environment. The password is a secret: the DSN is
//! serialized (`--print-config`) and logged only in its [`redacted`](PostgresConfig::redacted_dsn)
//! form.
//!
//! TLS follows the DSN's `sslmode`: `disable` never uses it, `require` always does, and `prefer`
//! (the default) does when the server offers it. Whenever TLS is used the server's certificate and
//! host name are verified ([`crate::tls`]) against `tls_root_cert` or the system's roots.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize, Serializer};
use tokio_postgres::config::SslMode;

/// Why PostgreSQL could not be reached or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `store: postgres` without a DSN.
    #[error("postgres.dsn is not set (store: postgres needs it)")]
    MissingDsn,
    /// The DSN does not parse (the message never contains the password).
    #[error("postgres.dsn is not a valid connection string ({0})")]
    InvalidDsn(String),
    /// The password file is unreadable or too open.
    #[error("postgres.password_file {path}: {reason}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The pool could not be built.
    #[error("cannot build the PostgreSQL connection pool: {0}")]
    Pool(String),
    /// No connection could be taken from the pool (server down, refused, timed out).
    #[error("cannot connect to PostgreSQL at {dsn}: {reason}")]
    Connect {
        /// The redacted DSN.
        dsn: String,
        /// Cause.
        reason: String,
    },
    /// The TLS settings are unusable (an unreadable or empty `tls_root_cert`).
    #[error("postgres.tls_root_cert {0}")]
    Tls(String),
    /// A statement failed.
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// The `postgres:` block of a service's settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    /// Connection string (URL or key/value). Its password, if any, is never logged.
    pub dsn: String,
    /// File holding the password (overrides one in the DSN). Must not be group/other readable.
    pub password_file: Option<PathBuf>,
    /// Most connections the service keeps open.
    pub pool_size: usize,
    /// Seconds to wait for a connection (connect and pool wait) before the request fails.
    pub connect_timeout_secs: u64,
    /// PEM file of the CA certificates a TLS server must chain to (default: the system's roots).
    pub tls_root_cert: Option<PathBuf>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            dsn: String::new(),
            password_file: None,
            pool_size: 16,
            connect_timeout_secs: 10,
            tls_root_cert: None,
        }
    }
}

/// Serialized with the password masked, so `--print-config` can be pasted anywhere.
impl Serialize for PostgresConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            dsn: String,
            password_file: &'a Option<PathBuf>,
            pool_size: usize,
            connect_timeout_secs: u64,
            tls_root_cert: &'a Option<PathBuf>,
        }
        Shown {
            dsn: self.redacted_dsn(),
            password_file: &self.password_file,
            pool_size: self.pool_size,
            connect_timeout_secs: self.connect_timeout_secs,
            tls_root_cert: &self.tls_root_cert,
        }
        .serialize(s)
    }
}

impl PostgresConfig {
    /// A config for `dsn` with the other settings at their defaults.
    pub fn with_dsn(dsn: impl Into<String>) -> Self {
        PostgresConfig {
            dsn: dsn.into(),
            ..Default::default()
        }
    }

    /// The DSN with any password replaced by `***`.
    pub fn redacted_dsn(&self) -> String {
        redact(&self.dsn)
    }

    /// The parsed connection settings, the password file applied.
    pub fn pg_config(&self) -> Result<tokio_postgres::Config, PgError> {
        if self.dsn.trim().is_empty() {
            return Err(PgError::MissingDsn);
        }
        // tokio-postgres's parse errors do not echo the input, so they are safe to show.
        let mut config = tokio_postgres::Config::from_str(self.dsn.trim())
            .map_err(|e| PgError::InvalidDsn(e.to_string()))?;
        if let Some(path) = &self.password_file {
            config.password(read_password_file(path)?);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(self.connect_timeout_secs.max(1)));
        }
        if config.get_application_name().is_none() {
            config.application_name("plantd");
        }
        Ok(config)
    }

    /// A connection pool (connections are opened on first use).
    pub fn pool(&self) -> Result<Pool, PgError> {
        pool_from(self.pg_config()?, self)
    }

    /// A pooled connection, or [`PgError::Connect`] naming the (redacted) server.
    pub async fn connect(&self, pool: &Pool) -> Result<deadpool_postgres::Object, PgError> {
        pool.get().await.map_err(|e| PgError::Connect {
            dsn: self.redacted_dsn(),
            reason: with_causes(&e),
        })
    }
}

/// `e` and each of its causes, `: `-separated: the pool's own message is only "db error" or
/// "error performing TLS handshake"; the server's reason and the certificate problem are causes.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let shown = c.to_string();
        if !text.ends_with(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        cause = c.source();
    }
    text
}

/// A pool of connections made with `pg` (a [`PostgresConfig::pg_config`] a caller adjusted),
/// sized and timed as `settings` says, over verified TLS unless `pg`'s `sslmode` is `disable`.
pub fn pool_from(pg: tokio_postgres::Config, settings: &PostgresConfig) -> Result<Pool, PgError> {
    {
        let this = settings;
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if pg.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(pg, tokio_postgres::NoTls, manager_config())
        } else {
            let tls = crate::tls::connector(this.tls_root_cert.as_deref())?;
            Manager::from_config(pg, tls, manager_config())
        };
        let wait = Duration::from_secs(this.connect_timeout_secs.max(1));
        Pool::builder(manager)
            .max_size(this.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(wait))
            .create_timeout(Some(wait))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))
    }
}

fn read_password_file(path: &Path) -> Result<String, PgError> {
    let fail = |reason: String| PgError::PasswordFile {
        path: path.to_owned(),
        reason,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "is readable by others (mode {:o}); chmod 600 it",
                mode & 0o777
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err(fail("is empty".into()));
    }
    Ok(password)
}

/// `dsn` with the password of a URL's user info, a `password=` query parameter or a
/// `password=` key/value pair replaced by `***`.
pub fn redact(dsn: &str) -> String {
    let dsn = dsn.trim();
    if let Some((scheme, rest)) = dsn.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let query: Vec<String> = query
                    .split('&')
                    .map(|pair| match pair.split_once('=') {
                        Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                        _ => pair.to_owned(),
                    })
                    .collect();
                format!("{path}?{}", query.join("&"))
            }
            None => tail.to_owned(),
        };
        return format!("{scheme}://{authority}{tail}");
    }
    // key=value pairs; a quoted value may hold spaces.
    let mut out = String::with_capacity(dsn.len());
    let mut rest = dsn;
    while !rest.is_empty() {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            break;
        };
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let value_len = value_length(after);
        let consumed = rest.len() - after.len() + value_len;
        if key.eq_ignore_ascii_case("password") {
            out.push_str(&rest[..eq + 1]);
            out.push_str("***");
        } else {
            out.push_str(&rest[..consumed]);
        }
        rest = &rest[consumed..];
    }
    out
}

/// Length of one key/value value at the start of `s`: quoted (with `\` escapes) or up to space.
fn value_length(s: &str) -> usize {
    if let Some(inner) = s.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '\'' if !escaped => return i + 2,
                _ => escaped = false,
            }
        }
        s.len()
    } else {
        s.find(char::is_whitespace).unwrap_or(s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_every_dsn_form() {
        assert_eq!(
            redact("postgres://plantd:s3cret@db:5432/state"),
            "postgres://plantd:***@db:5432/state"
        );
        assert_eq!(
            redact("postgresql://db/state?user=x&password=s3cret&sslmode=disable"),
            "postgresql://db/state?user=x&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=db user=plantd password='s3 cr\\'et' dbname=state"),
            "host=db user=plantd password=*** dbname=state"
        );
        assert_eq!(redact("host=db password=s3cret"), "host=db password=***");
        assert_eq!(redact("postgres://db/state"), "postgres://db/state");
    }

    #[test]
    fn print_config_never_shows_the_password() {
        let config = PostgresConfig::with_dsn("postgres://u:hunter2@db/x");
        let shown = serde_json::to_string(&config).unwrap();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@db"), "{shown}");
    }

    #[test]
    fn a_missing_dsn_and_an_open_password_file_are_refused() {
        assert!(matches!(
            PostgresConfig::default().pg_config(),
            Err(PgError::MissingDsn)
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let config = PostgresConfig {
                password_file: Some(file.clone()),
                ..PostgresConfig::with_dsn("host=localhost user=x")
            };
            let err = config.pg_config().unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            let pg = config.pg_config().unwrap();
            assert_eq!(pg.get_password(), Some(&b"s3cret"[..]));
        }
    }
}
