//! `[http]`: the local page and API.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::issue::ConfigIssue;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port of the local web page and API.
    pub listen: SocketAddr,
    /// HTTPS on `listen` (a self-signed certificate made at first boot, or an installed one).
    /// Plain HTTP is allowed only on a loopback address.
    pub tls: bool,
    /// A plain HTTP listener that only redirects to the HTTPS page (e.g. `0.0.0.0:80`).
    pub redirect_listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    /// Loopback by default: the device image opens it to the network (`0.0.0.0:443`) where
    /// it is installed.
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: true,
            redirect_listen: None,
        }
    }
}

impl HttpConfig {
    /// What types alone cannot check of `[http]`.
    pub(crate) fn check(&self, issues: &mut Vec<ConfigIssue>) {
        if self.listen.port() == 0 {
            issues.push(ConfigIssue::at(
                "http.listen",
                "port must be 1 to 65535, found 0",
            ));
        }
        if !self.tls && !self.listen.ip().is_loopback() {
            issues.push(ConfigIssue::at(
                "http.tls",
                format!(
                    "plain HTTP would send passwords and camera pictures in clear on {}: \
                     keep tls = true, or listen on a loopback address",
                    self.listen
                ),
            ));
        }
        if let Some(r) = self.redirect_listen {
            if !self.tls {
                issues.push(ConfigIssue::at(
                    "http.redirect_listen",
                    "redirects to HTTPS need http.tls = true",
                ));
            } else if r == self.listen || r.port() == 0 {
                issues.push(ConfigIssue::at(
                    "http.redirect_listen",
                    format!("must be another address:port than http.listen, found {r}"),
                ));
            }
        }
    }
}
