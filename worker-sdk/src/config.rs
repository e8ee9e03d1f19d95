//! Layered configuration for every plantd process, built on `figment`.
//!
//! Precedence, highest first: command-line overrides, environment (`PLANTD_<SERVICE>_<KEY>`, nested
//! keys joined with `__`), a YAML config file, then the type's `Default`. No file is required. The
//! file is `--config FILE`, else `PLANTD_<SERVICE>_CONFIG`, else the first `<service>.yaml` found in
//! `.`, `~/.config/plantd/` and `/etc/plantd/`.
//!
//! A service that was renamed keeps reading its former name ([`load_with_former_name`]): the old
//! variables and file still work, below the new ones, and each use is reported so the caller can
//! warn. Silently ignoring a variable someone set is the failure this exists to prevent.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A config file named explicitly does not exist.
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    /// A value has the wrong type, a file is not valid YAML, and so on.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] Box<figment::Error>),
}

/// The environment prefix of a service: `broker` → `PLANTD_BROKER_`.
pub fn env_prefix(service: &str) -> String {
    format!("PLANTD_{}_", service.to_uppercase().replace('-', "_"))
}

/// Finds the config file for `service`: `explicit`, else `PLANTD_<SERVICE>_CONFIG`, else the first
/// `<service>.yaml` in the search path. An explicit or env-named file must exist.
pub fn find_file(service: &str, explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os(format!("{}CONFIG", env_prefix(service))).map(PathBuf::from));
    if let Some(path) = named {
        return if path.is_file() {
            Ok(Some(path))
        } else {
            Err(ConfigError::MissingFile(path))
        };
    }
    let name = format!("{service}.yaml");
    let mut dirs = vec![PathBuf::from(".")];
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".config/plantd"));
    }
    dirs.push(PathBuf::from("/etc/plantd"));
    Ok(dirs
        .into_iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file()))
}

/// Loads `T` for `service` with the full precedence chain. `overrides` is usually a struct of
/// `Option` fields from clap with `#[serde(skip_serializing_if = "Option::is_none")]`.
pub fn load<T>(
    service: &str,
    explicit_file: Option<&Path>,
    overrides: impl Serialize,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_layers(service, None, explicit_file, overrides)
}

/// [`load`] for a service once called `former`: `PLANTD_<FORMER>_*` variables are read beneath
/// `PLANTD_<SERVICE>_*` ones (the new name wins where both are set), and without a file of the
/// new name, `PLANTD_<FORMER>_CONFIG` or `<former>.yaml` is used. Returns, besides the
/// configuration, one message per use of the former name, for the caller to log as a warning.
pub fn load_with_former_name<T>(
    service: &str,
    former: &str,
    explicit_file: Option<&Path>,
    overrides: impl Serialize,
) -> Result<(T, Vec<String>), ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let config = load_layers(service, Some(former), explicit_file, overrides)?;
    let mut notes = former_variables(service, former);
    if explicit_file.is_none() && find_file(service, None)?.is_none() {
        if let Some(file) = find_file(former, None)? {
            notes.push(format!(
                "reading {} under the former name {former}; rename it for {service}",
                file.display()
            ));
        }
    }
    Ok((config, notes))
}

fn load_layers<T>(
    service: &str,
    former: Option<&str>,
    explicit_file: Option<&Path>,
    overrides: impl Serialize,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    let mut file = find_file(service, explicit_file)?;
    if let (None, Some(former)) = (&file, former) {
        file = find_file(former, None)?;
    }
    if let Some(file) = file {
        figment = figment.merge(Yaml::file(file));
    }
    let env = |name: &str| {
        Env::prefixed(&env_prefix(name))
            .split("__")
            .ignore(&["config"])
    };
    if let Some(former) = former {
        figment = figment.merge(env(former));
    }
    figment = figment
        .merge(env(service))
        .merge(Serialized::defaults(overrides));
    figment
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))
}

/// One message per `PLANTD_<FORMER>_*` variable set: read in place of its new name, or ignored
/// because the new name is set too.
fn former_variables(service: &str, former: &str) -> Vec<String> {
    let (old_prefix, new_prefix) = (env_prefix(former), env_prefix(service));
    let mut notes: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| {
            let name = name.into_string().ok()?;
            let key = name.strip_prefix(&old_prefix)?;
            let new = format!("{new_prefix}{key}");
            Some(if std::env::var_os(&new).is_some() {
                format!("{name} is ignored: {new} is set (the new name of the variable)")
            } else {
                format!("{name} is read as {new}, its new name; the old name is deprecated")
            })
        })
        .collect();
    notes.sort();
    notes
}

/// Prints the effective configuration as pretty JSON on stdout (`--print-config`).
pub fn print<T: Serialize>(config: &T) {
    match serde_json::to_string_pretty(config) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("cannot show configuration: {e}"),
    }
}

#[cfg(test)]
// figment's Jail closures return its own large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Sample {
        endpoint: String,
        port: u16,
        nested: Nested,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Nested {
        level: String,
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "cfgtest.yaml",
                "endpoint: file\nport: 1\nnested:\n  level: file\n",
            )?;
            let c: Sample = load("cfgtest", None, Flags { port: None }).unwrap();
            assert_eq!(c.endpoint, "file");
            assert_eq!(c.port, 1);
            jail.set_env("PLANTD_CFGTEST_PORT", "2");
            jail.set_env("PLANTD_CFGTEST_NESTED__LEVEL", "env");
            let c: Sample = load("cfgtest", None, Flags { port: None }).unwrap();
            assert_eq!(
                (c.port, c.nested.level.as_str(), c.endpoint.as_str()),
                (2, "env", "file")
            );
            let c: Sample = load("cfgtest", None, Flags { port: Some(3) }).unwrap();
            assert_eq!(c.port, 3);
            Ok(())
        });
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct WithProtocol {
        protocol: crate::protocol::Dialect,
    }

    #[test]
    fn protocol_loads_from_file_and_env_quoted_or_not() {
        use crate::protocol::Dialect;
        figment::Jail::expect_with(|jail| {
            let c: WithProtocol = load("prototest", None, Flags { port: None }).unwrap();
            assert_eq!(c.protocol, Dialect::V02, "default");
            // Unquoted, YAML reads 0.1 as a float; quoted, as a string.
            jail.create_file("prototest.yaml", "protocol: 0.1\n")?;
            let c: WithProtocol = load("prototest", None, Flags { port: None }).unwrap();
            assert_eq!(c.protocol, Dialect::V01);
            jail.create_file("prototest.yaml", "protocol: \"go\"\n")?;
            let c: WithProtocol = load("prototest", None, Flags { port: None }).unwrap();
            assert_eq!(c.protocol, Dialect::Go);
            for (env, want) in [
                ("0.1", Dialect::V01),
                ("0.2", Dialect::V02),
                ("go", Dialect::Go),
            ] {
                jail.set_env("PLANTD_PROTOTEST_PROTOCOL", env);
                let c: WithProtocol = load("prototest", None, Flags { port: None }).unwrap();
                assert_eq!(c.protocol, want, "PLANTD_PROTOTEST_PROTOCOL={env}");
            }
            jail.set_env("PLANTD_PROTOTEST_PROTOCOL", "0.3");
            let e = load::<WithProtocol>("prototest", None, Flags { port: None }).unwrap_err();
            assert!(e.to_string().contains("expected 0.1, 0.2 or go"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn missing_explicit_file_is_an_error_and_no_file_is_fine() {
        figment::Jail::expect_with(|_jail| {
            let c: Sample = load("nofile", None, Flags { port: None }).unwrap();
            assert_eq!(c, Sample::default());
            let e = load::<Sample>(
                "nofile",
                Some(Path::new("/nonexistent.yaml")),
                Flags { port: None },
            );
            assert!(matches!(e, Err(ConfigError::MissingFile(_))));
            Ok(())
        });
    }

    #[test]
    fn a_former_name_is_read_beneath_the_new_one_and_reported() {
        figment::Jail::expect_with(|jail| {
            let load = || {
                load_with_former_name::<Sample>("newname", "old-name", None, Flags { port: None })
                    .unwrap()
            };
            let (c, notes) = load();
            assert_eq!((c, notes.len()), (Sample::default(), 0));

            jail.create_file("old-name.yaml", "endpoint: old-file\n")?;
            let (c, notes) = load();
            assert_eq!(c.endpoint, "old-file", "the former file is read");
            assert!(notes[0].contains("old-name.yaml"), "{notes:?}");
            jail.create_file("newname.yaml", "endpoint: new-file\n")?;
            let (c, notes) = load();
            assert_eq!((c.endpoint.as_str(), notes.len()), ("new-file", 0));

            jail.set_env("PLANTD_OLD_NAME_PORT", "1");
            let (c, notes) = load();
            assert_eq!(c.port, 1, "a variable of the former name is read");
            assert_eq!(
                notes,
                [
                    "PLANTD_OLD_NAME_PORT is read as PLANTD_NEWNAME_PORT, its new name; the old \
                  name is deprecated"
                ]
            );
            jail.set_env("PLANTD_NEWNAME_PORT", "2");
            let (c, notes) = load();
            assert_eq!(c.port, 2, "the new name wins");
            assert!(notes[0].contains("is ignored"), "{notes:?}");
            Ok(())
        });
    }
}
