//! Which services `plantd up` runs: all of them, `--only state,echo`, or `--except logger,metric`.
//!
//! The broker always runs: every other service connects to it, and `up` has no way to point them
//! at a broker elsewhere. Naming it in `--except` is an error that says so; `--only` adds it.

use std::collections::BTreeSet;

use thiserror::Error;

/// Every service `plantd up` can run, by the name `--only` and `--except` take.
pub const SERVICES: [&str; 7] = [
    "broker", "echo", "state", "identity", "logger", "proxy", "metric",
];

/// The service that runs whatever the selection says.
const ALWAYS: &str = "broker";

/// `plantd up`'s selection flags.
#[derive(clap::Args, Debug, Default)]
pub struct SelectArgs {
    /// Run only these services (comma-separated: broker, echo, state, identity, logger, proxy, metric);
    /// the broker always runs.
    #[arg(long, value_delimiter = ',', conflicts_with = "except")]
    pub only: Vec<String>,
    /// Run every service but these (comma-separated); the broker cannot be left out.
    #[arg(long, value_delimiter = ',')]
    pub except: Vec<String>,
}

/// Why a selection is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SelectError {
    /// A name that is not one of [`SERVICES`].
    #[error("no service {0:?} (plantd up runs {list})", list = SERVICES.join(", "))]
    Unknown(String),
    /// `--except broker`.
    #[error(
        "the broker always runs under plantd up: every other service connects to it (run the \
         services on their own with the plantd-<service> binaries to use a broker elsewhere)"
    )]
    BrokerRequired,
}

/// The services to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    run: BTreeSet<&'static str>,
}

impl Default for Selection {
    fn default() -> Self {
        Selection {
            run: SERVICES.into_iter().collect(),
        }
    }
}

impl SelectArgs {
    /// The selection these flags make.
    pub fn selection(&self) -> Result<Selection, SelectError> {
        let only = names(&self.only)?;
        let except = names(&self.except)?;
        if except.contains(ALWAYS) {
            return Err(SelectError::BrokerRequired);
        }
        let mut run: BTreeSet<&'static str> = match only.is_empty() {
            true => SERVICES.into_iter().collect(),
            false => only,
        };
        run.retain(|name| !except.contains(name));
        run.insert(ALWAYS);
        Ok(Selection { run })
    }
}

impl Selection {
    /// Whether `service` runs.
    pub fn runs(&self, service: &str) -> bool {
        self.run.contains(service)
    }
}

/// The known names among `given` (trimmed, empty ones skipped), or the first unknown one.
fn names(given: &[String]) -> Result<BTreeSet<&'static str>, SelectError> {
    given
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .map(|name| {
            SERVICES
                .into_iter()
                .find(|known| *known == name)
                .ok_or_else(|| SelectError::Unknown(name.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(only: &[&str], except: &[&str]) -> SelectArgs {
        SelectArgs {
            only: only.iter().map(|s| s.to_string()).collect(),
            except: except.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_runs_the_named_services_and_the_broker() {
        let s = args(&["state", "echo"], &[]).selection().unwrap();
        for name in SERVICES {
            assert_eq!(
                s.runs(name),
                ["broker", "state", "echo"].contains(&name),
                "{name}"
            );
        }
    }

    #[test]
    fn except_runs_everything_else_and_never_drops_the_broker() {
        let s = args(&[], &["logger", "metric"]).selection().unwrap();
        assert!(s.runs("broker") && s.runs("state") && s.runs("identity") && s.runs("echo"));
        assert!(!s.runs("logger") && !s.runs("metric"));
        assert_eq!(args(&[], &[]).selection().unwrap(), Selection::default());
        assert_eq!(
            args(&[], &["broker"]).selection(),
            Err(SelectError::BrokerRequired)
        );
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it() {
        let e = args(&["stat"], &[]).selection().unwrap_err();
        assert_eq!(e, SelectError::Unknown("stat".into()));
        assert!(e.to_string().contains("\"stat\""), "{e}");
    }
}
