//! Process-wide logging: one `tracing-subscriber` formatter (human text or JSON lines) behind an `EnvFilter`.
//! Access logs are ordinary events on the `access` target, so `access=info` or `access=off` in the filter turns
//! them on or off independently of the rest.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::ParseError;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};

/// The output format of logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event, with the event's fields at the top level.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}")]
    InvalidFilter {
        filter: String,
        #[source]
        source: ParseError,
    },
    #[error("a global tracing subscriber or logger is already installed")]
    AlreadyInstalled(#[source] TryInitError),
    #[error("unknown log format {0:?}: use text or json")]
    UnknownFormat(String),
}

/// Installs the global subscriber: `format` on stdout, filtered by `filter` (`EnvFilter` syntax, e.g.
/// `info,access=debug`). Fails, rather than panicking, when the filter does not parse or a subscriber is already
/// installed; nothing is installed then.
pub fn init(format: LogFormat, filter: &str) -> Result<(), LoggingError> {
    let env_filter = EnvFilter::try_new(filter).map_err(|source| LoggingError::InvalidFilter {
        filter: filter.to_string(),
        source,
    })?;
    let builder = tracing_subscriber::fmt().with_env_filter(env_filter);
    let installed = match format {
        LogFormat::Text => builder.finish().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).finish().try_init(),
    };
    installed.map_err(LoggingError::AlreadyInstalled)
}

// === impl LogFormat ===

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = LoggingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(LoggingError::UnknownFormat(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.as_str().parse::<LogFormat>().unwrap(), format);
            assert_eq!(format.to_string(), format.as_str());
        }
        assert!(matches!("yaml".parse::<LogFormat>(), Err(LoggingError::UnknownFormat(f)) if f == "yaml"));
    }
}
