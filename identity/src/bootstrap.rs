//! First start: with no user in the database, create user `admin` holding role `system-admin`
//! (`system:admin`). The password comes from `bootstrap.admin_password_file` if configured, else
//! it is random and written once to `admin-password` (mode 0600) beside the database; an existing
//! file is reused, never rewritten. The log says where the password is, never what it is.
//!
//! [`admin_password_path`] is public so `plantd up` can find the file to write the CLI's
//! credentials from it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::config::IdentityConfig;
use crate::password::{self, Hasher};
use crate::store::audit::{self, AuditRecord};
use crate::store::roles::{self, RoleFields};
use crate::store::users::{self, NewUser};
use crate::store::{now_ms, now_secs, Store, StoreError};
use crate::tokens;

/// The bootstrap user's name.
pub const ADMIN_USERNAME: &str = "admin";
/// The bootstrap user's email.
pub const ADMIN_EMAIL: &str = "admin@localhost";
/// The bootstrap role, holding `system:admin`.
pub const ADMIN_ROLE: &str = "system-admin";
/// The name of the generated password file beside the database.
pub const PASSWORD_FILE_NAME: &str = "admin-password";

/// Why the bootstrap failed (the service does not start).
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The password file could not be read or written.
    #[error("{context} {}: {source}", path.display())]
    File {
        /// What we were doing.
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The configured password breaks the policy (the message says which rule).
    #[error("the admin password in {}: {reason}", path.display())]
    Weak {
        /// The file.
        path: PathBuf,
        /// The rule.
        reason: String,
    },
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] password::PasswordError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the admin's bootstrap password is: `bootstrap.admin_password_file` if set, else
/// `admin-password` in the database's directory.
pub fn admin_password_path(config: &IdentityConfig) -> PathBuf {
    match &config.bootstrap.admin_password_file {
        Some(path) => path.clone(),
        None => config
            .db
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
            .join(PASSWORD_FILE_NAME),
    }
}

/// What the bootstrap did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Users exist: nothing to do.
    NotNeeded,
    /// The admin was created; its password is in `password_file`.
    Created {
        /// Where the password is.
        password_file: PathBuf,
        /// True if the password was generated now (and the file written).
        generated: bool,
    },
}

/// Creates the admin if the database has no user yet.
pub fn run(
    store: &Store,
    hasher: &Hasher,
    config: &IdentityConfig,
) -> Result<Bootstrap, BootstrapError> {
    if store.read(users::count)? > 0 {
        return Ok(Bootstrap::NotNeeded);
    }
    let path = admin_password_path(config);
    let (password, generated) = match read_password(&path)? {
        Some(password) => (password, false),
        None if config.bootstrap.admin_password_file.is_some() => {
            return Err(BootstrapError::File {
                context: "cannot read the admin password from",
                path,
                source: std::io::ErrorKind::NotFound.into(),
            })
        }
        None => {
            let password = tokens::random_token(18);
            write_private(&path, &password)?;
            (password, true)
        }
    };
    password::check(&config.password, &password, &[ADMIN_USERNAME, ADMIN_EMAIL]).map_err(|e| {
        BootstrapError::Weak {
            path: path.clone(),
            reason: e.to_string(),
        }
    })?;
    let password_hash = hasher.hash(&password)?;
    store.write(move |conn| {
        let now = now_secs();
        let role = match roles::find_by_name(conn, ADMIN_ROLE) {
            Ok(role) => role,
            Err(StoreError::NotFound(_)) => roles::insert(
                conn,
                &RoleFields {
                    name: Some(ADMIN_ROLE.into()),
                    description: Some("Everything: holds system:admin".into()),
                    permissions: Some(vec![crate::permissions::SYSTEM_ADMIN.into()]),
                    scope: Some("global".into()),
                },
                now,
            )?,
            Err(e) => return Err(e),
        };
        let user = users::insert(
            conn,
            &NewUser {
                username: ADMIN_USERNAME.into(),
                email: ADMIN_EMAIL.into(),
                password_hash,
                is_active: true,
                ..NewUser::default()
            },
            now,
        )?;
        roles::assign(conn, user.id, role.id, 0, now)?;
        let time_ms = now_ms();
        audit::insert(
            conn,
            &AuditRecord {
                time: audit::time_of(time_ms),
                actor: "system".into(),
                action: "bootstrap".into(),
                target: format!("user:{}", user.id),
                outcome: "ok".into(),
                source: "startup".into(),
                time_ms,
            },
        )
    })?;
    Ok(Bootstrap::Created {
        password_file: path,
        generated,
    })
}

/// The password in `path` (its first line), or `None` if there is no such file.
fn read_password(path: &Path) -> Result<Option<String>, BootstrapError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.lines().next().unwrap_or_default().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BootstrapError::File {
            context: "cannot read the admin password from",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `password` to a new file at `path`, readable by its owner only.
fn write_private(path: &Path, password: &str) -> Result<(), BootstrapError> {
    let failed = |source| BootstrapError::File {
        context: "cannot write the admin password to",
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(format!("{password}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)
}
