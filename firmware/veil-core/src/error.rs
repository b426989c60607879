//! One error type for the whole firmware.
//!
//! An error carries a [`ErrorKind`] (what the caller should do about it) and a chain of
//! context (what was being done). The kind maps to an HTTP status for the local API and to a
//! machine-readable code plus an MQTT 5 reason code for fleet replies, so every boundary
//! answers the same failure the same way.

use std::fmt;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input is wrong; retrying it unchanged fails again.
    InvalidInput,
    /// The thing named does not exist.
    NotFound,
    /// The request clashes with the current state (duplicate id, resource in use).
    Conflict,
    /// The caller is not known (no or expired credentials).
    Unauthenticated,
    /// The caller is known but may not do this.
    PermissionDenied,
    /// A needed service or device is not reachable now; retrying later may work.
    Unavailable,
    /// A quota, capacity or disk limit is reached.
    ResourceExhausted,
    /// The operation did not finish in time.
    DeadlineExceeded,
    /// A feature is not configured on this device.
    NotConfigured,
    /// A bug or an unexpected condition on the device.
    Internal,
}

impl ErrorKind {
    /// The HTTP status the local API answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidInput => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::ResourceExhausted => 429,
            ErrorKind::Internal => 500,
            ErrorKind::NotConfigured => 501,
            ErrorKind::Unavailable => 503,
            ErrorKind::DeadlineExceeded => 504,
        }
    }

    /// The stable, machine-readable code used in JSON error bodies and MQTT replies.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::Internal => "internal",
        }
    }

    /// The MQTT 5 reason code (OASIS MQTT 5.0, section 2.4) closest to this kind, for
    /// PUBACK/reply user properties where the fleet side reads reason codes.
    pub fn mqtt_reason_code(self) -> u8 {
        match self {
            ErrorKind::InvalidInput => 0x99,      // Payload format invalid
            ErrorKind::NotFound => 0x90,          // Topic Name invalid (closest: target unknown)
            ErrorKind::Conflict => 0x91,          // Packet Identifier in use
            ErrorKind::Unauthenticated => 0x86,   // Bad User Name or Password
            ErrorKind::PermissionDenied => 0x87,  // Not authorized
            ErrorKind::Unavailable => 0x88,       // Server unavailable
            ErrorKind::ResourceExhausted => 0x97, // Quota exceeded
            ErrorKind::DeadlineExceeded => 0x80,  // Unspecified error
            ErrorKind::NotConfigured => 0x83,     // Implementation specific error
            ErrorKind::Internal => 0x80,          // Unspecified error
        }
    }

    /// Whether the same request may succeed later without change.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded | ErrorKind::ResourceExhausted
        )
    }

    /// Every kind, for tables and exhaustive tests.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::Unavailable,
        ErrorKind::ResourceExhausted,
        ErrorKind::DeadlineExceeded,
        ErrorKind::NotConfigured,
        ErrorKind::Internal,
    ];
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error with a kind, a message a technician can act on, and what was being done.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// Outermost context last; displayed outermost first.
    context: Vec<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Vec::new(),
            source: None,
        }
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Wraps a lower-level error, keeping it as the source and its text in the message.
    pub fn wrap(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        let message = format!("{}: {source}", message.into());
        Error {
            kind,
            message,
            context: Vec::new(),
            source: Some(Box::new(source)),
        }
    }

    /// Adds what was being done when the error happened.
    #[must_use]
    pub fn context(mut self, what: impl Into<String>) -> Self {
        self.context.push(what.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The innermost message, without context.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    /// One line: outermost context first, then the message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for what in self.context.iter().rev() {
            write!(f, "{what}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_outer_context_first_on_one_line() {
        let e = Error::not_found("camera 'cam9' does not exist")
            .context("starting export")
            .context("video request r-1");
        assert_eq!(
            e.to_string(),
            "video request r-1: starting export: camera 'cam9' does not exist"
        );
        assert!(!e.to_string().contains('\n'));
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn kinds_have_distinct_codes_and_error_statuses() {
        let mut codes: Vec<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
        for kind in ErrorKind::ALL {
            let status = kind.http_status();
            assert!((400..600).contains(&status), "{kind}: {status}");
            assert!(
                kind.mqtt_reason_code() >= 0x80,
                "{kind} must be an MQTT failure code"
            );
        }
        assert_eq!(ErrorKind::InvalidInput.http_status(), 400);
        assert!(ErrorKind::Unavailable.is_retryable());
        assert!(!ErrorKind::InvalidInput.is_retryable());
    }

    #[test]
    fn wrap_keeps_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::wrap(ErrorKind::NotFound, "reading /x.toml", io);
        assert_eq!(e.to_string(), "reading /x.toml: no such file");
        assert!(std::error::Error::source(&e).is_some());
    }
}
