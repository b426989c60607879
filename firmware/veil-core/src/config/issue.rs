//! A problem with the configuration, named by its key.

use std::fmt;

/// One problem in a configuration, tied to the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path (`cameras[0].source.fps`); `None` for a whole-file problem.
    pub key: Option<String>,
    /// The environment variable that set this key, when one did.
    pub env_var: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        f.write_str(&self.message)?;
        if let Some(var) = &self.env_var {
            write!(f, " (set by environment variable {var})")?;
        }
        Ok(())
    }
}

impl ConfigIssue {
    pub(crate) fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigIssue {
            key: Some(key.into()),
            env_var: None,
            message: message.into(),
        }
    }
}
