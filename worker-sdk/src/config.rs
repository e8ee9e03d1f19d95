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
//!
//! For the same reason a key that no field of the configuration reads — a misspelled
//! `PLANTD_STATE_DBB`, a `databse:` line in `state.yaml` — is an error naming the key and where it
//! was set ([`ConfigError::UnknownKeys`]). `PLANTD_<SERVICE>_CONFIG` names the file and is not a
//! key.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Yaml};
use figment::Figment;
use figment::Source;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
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
    /// Keys (environment variables or file entries) that no setting reads: most likely
    /// misspelled, and ignoring them would hide that.
    #[error("unknown configuration {}: {}", if .0.len() == 1 { "key" } else { "keys" }, list(.0))]
    UnknownKeys(Vec<UnknownKey>),
}

/// A configuration key no setting reads, and where it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownKey {
    /// The key as a dotted path, `dbb` or `backup.intervl_secs`.
    pub key: String,
    /// Where it came from: `environment variable PLANTD_STATE_DBB` or `file ./state.yaml`.
    pub source: String,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (from {})", self.key, self.source)
    }
}

fn list(keys: &[UnknownKey]) -> String {
    let items: Vec<String> = keys.iter().map(ToString::to_string).collect();
    items.join(", ")
}

/// A value deserialized together with the paths of every key it ignored.
struct Checked<T> {
    value: T,
    ignored: Vec<String>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut ignored = Vec::new();
        let value =
            serde_ignored::deserialize(deserializer, |path| ignored.push(path.to_string()))?;
        Ok(Checked { value, ignored })
    }
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
    let checked: Checked<T> = figment
        .extract()
        .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
    let prefixes: Vec<String> = std::iter::once(service)
        .chain(former)
        .map(env_prefix)
        .collect();
    let unknown: Vec<UnknownKey> = checked
        .ignored
        .iter()
        .filter_map(|key| unknown_key(&figment, key, &prefixes))
        .collect();
    if unknown.is_empty() {
        Ok(checked.value)
    } else {
        Err(ConfigError::UnknownKeys(unknown))
    }
}

/// Where the ignored `key` was set, if a person set it (a file or the environment); keys from
/// the code's own layers (defaults, flags) are not a user's typo.
fn unknown_key(figment: &Figment, key: &str, prefixes: &[String]) -> Option<UnknownKey> {
    let metadata = figment.find_metadata(key)?;
    let source = match &metadata.source {
        Some(Source::File(path)) => format!("file {}", path.display()),
        _ if metadata.name.contains("environment") => {
            let suffix = key.replace('.', "__").to_uppercase();
            let name = prefixes
                .iter()
                .map(|prefix| format!("{prefix}{suffix}"))
                .find(|name| std::env::var_os(name).is_some())
                .unwrap_or_else(|| format!("{}{suffix}", prefixes[0]));
            format!("environment variable {name}")
        }
        _ => return None,
    };
    Some(UnknownKey {
        key: key.to_owned(),
        source,
    })
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

/// The brokers a worker's `broker_endpoint` setting names: one endpoint, or several separated by
/// commas (`tcp://broker-0:9797,tcp://broker-1:9797`), for a worker that serves every broker of
/// a scaled-out system (DESIGN.md §8); the SDK's clients take the same form and fail over among
/// them. Empty items are skipped.
pub fn broker_endpoints(setting: &str) -> Vec<String> {
    setting
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
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
    fn unknown_keys_in_the_environment_or_a_file_are_errors_by_name() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PLANTD_UNKTEST_CONFIG", "unktest.yaml");
            jail.create_file("unktest.yaml", "port: 1\nnested:\n  levle: x\n")?;
            jail.set_env("PLANTD_UNKTEST_ENDPIONT", "tcp://x:1");
            jail.set_env("PLANTD_UNKTEST_PORT", "2");
            let e = load::<Sample>("unktest", None, Flags { port: None }).unwrap_err();
            let ConfigError::UnknownKeys(keys) = &e else {
                panic!("{e}")
            };
            let mut keys = keys.clone();
            keys.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(keys.len(), 2, "{e}");
            assert_eq!(keys[0].key, "endpiont");
            assert_eq!(
                keys[0].source,
                "environment variable PLANTD_UNKTEST_ENDPIONT"
            );
            assert_eq!(keys[1].key, "nested.levle");
            assert!(keys[1].source.contains("unktest.yaml"), "{e}");
            let text = e.to_string();
            assert!(
                text.starts_with("unknown configuration keys: ")
                    && text.contains("PLANTD_UNKTEST_ENDPIONT"),
                "{text}"
            );

            // Fixed, the same setup loads; PLANTD_<SERVICE>_CONFIG is not a key.
            jail.create_file("unktest.yaml", "port: 1\nnested:\n  level: x\n")?;
            std::env::remove_var("PLANTD_UNKTEST_ENDPIONT");
            let c: Sample = load("unktest", None, Flags { port: None }).unwrap();
            assert_eq!((c.port, c.nested.level.as_str()), (2, "x"));
            Ok(())
        });
    }

    #[test]
    fn an_unknown_variable_of_a_former_name_is_named_as_set() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PLANTD_OLD_UNK_PROT", "1");
            let e =
                load_with_former_name::<Sample>("newunk", "old-unk", None, Flags { port: None })
                    .unwrap_err();
            assert!(
                e.to_string()
                    .contains("prot (from environment variable PLANTD_OLD_UNK_PROT)"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_broker_endpoint_setting_may_list_several_brokers() {
        assert_eq!(broker_endpoints("tcp://a:1"), ["tcp://a:1"]);
        assert_eq!(
            broker_endpoints(" tcp://a:1, tcp://b:1,,"),
            ["tcp://a:1", "tcp://b:1"]
        );
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
