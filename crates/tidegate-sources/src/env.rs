//! Reading source configuration from environment-style lookups: RIG's value formats
//! (comma lists, Confex booleans) and the error every invalid value becomes.

/// An environment variable with a value the sources cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub(crate) fn new(name: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            name,
            reason: reason.into(),
        }
    }
}

/// A comma-separated list (RIG's `:list`): items trimmed, empty items dropped.
/// `None` when the variable is unset.
pub(crate) fn list(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<Vec<String>> {
    get(name).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

/// A non-empty trimmed value, or `None`.
pub(crate) fn string(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// RIG's `:boolean` (Confex): `true`/`1`/`yes` or `false`/`0`/`no`, any case; unset or
/// empty is `default`.
pub(crate) fn boolean(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(v) = string(get, name) else {
        return Ok(default);
    };
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(
            name,
            format!("`{v}` is not a boolean (true/false, 1/0, yes/no)"),
        )),
    }
}

/// A positive integer, or `default` when unset.
pub(crate) fn positive(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: u64,
) -> Result<u64, ConfigError> {
    match string(get, name) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::new(
                name,
                format!("`{v}` is not a positive integer"),
            )),
        },
    }
}

#[cfg(test)]
pub(crate) fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}
