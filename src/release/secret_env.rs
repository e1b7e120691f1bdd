//! `SecretEnv`: a release's config as it leaves `release/` for container or
//! task creation. No Debug, Display, Clone or Serialize, so it cannot end up
//! in a log line or a record by accident.

pub struct SecretEnv {
    vars: Vec<(String, String)>,
}

impl SecretEnv {
    pub(crate) fn new(vars: Vec<(String, String)>) -> SecretEnv {
        SecretEnv { vars }
    }

    /// An empty environment (apps with no config, tests).
    pub fn empty() -> SecretEnv {
        SecretEnv { vars: Vec::new() }
    }

    /// Key names only: safe to show.
    pub fn keys(&self) -> Vec<&str> {
        self.vars.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// `KEY=VALUE` strings for the Docker API, to be handed straight to
    /// container creation and dropped.
    pub fn to_docker_env(&self) -> Vec<String> {
        self.vars.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Pairs, for providers that store each value separately (SSM).
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets one variable the rack adds itself (`RACK_TIMER`), replacing
    /// a config value of the same name.
    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
    }

    /// A copy for a second consumer (the release phase and the rollout).
    pub fn duplicate(&self) -> SecretEnv {
        SecretEnv {
            vars: self.vars.clone(),
        }
    }
}
