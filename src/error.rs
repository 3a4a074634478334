//! Errors of the operator, each with a short label for metrics.
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Every value of [`Error::metric_label`], so the error series exist (at 0) before the
    /// first error: a rate over them is then 0, not missing.
    pub const METRIC_LABELS: [&str; 3] = ["kube_api", "kube_client", "config"];

    /// Bounded label for the `reason` of error metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "kube_api",
            Error::Kube(_) => "kube_client",
            Error::Config(_) => "config",
        }
    }
}

/// `"path: "` before an error message about the field at `path`; nothing for the whole object
/// (empty path).
pub fn field_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_label_is_listed() {
        let errors = [
            Error::Kube(kube::Error::Api(Box::default())),
            Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::Config("bad".into()),
        ];
        for error in errors {
            assert!(
                Error::METRIC_LABELS.contains(&error.metric_label()),
                "{error}"
            );
        }
    }
}
