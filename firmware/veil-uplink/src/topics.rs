//! The topic tree: `<prefix>/v1/<device>/...`, one device per subtree so a broker ACL can give
//! each device its own branch.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    root: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        Topics {
            root: format!("{prefix}/{}/{device_id}", crate::API_VERSION),
        }
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Retained: online or offline (the last will), firmware, board, uptime.
    pub fn state(&self) -> String {
        format!("{}/state", self.root)
    }

    /// Retained: the cameras an investigator can find and request footage from.
    pub fn registry(&self) -> String {
        format!("{}/registry", self.root)
    }

    pub fn telemetry(&self) -> String {
        format!("{}/telemetry", self.root)
    }

    /// Events (job and request steps, alerts): QoS 1, never dropped by the device.
    pub fn events(&self) -> String {
        format!("{}/events", self.root)
    }

    /// Commands arrive on `cmd/<name>`.
    pub fn command(&self, name: &str) -> String {
        format!("{}/cmd/{name}", self.root)
    }

    pub fn commands_filter(&self) -> String {
        format!("{}/cmd/+", self.root)
    }

    /// Where a reply goes when the command named no MQTT 5 response topic.
    pub fn reply(&self, request_id: &str) -> String {
        format!("{}/reply/{request_id}", self.root)
    }

    /// Whether `topic` lies in this device's reply branch (`<root>/reply/...`, no wildcards).
    pub fn is_reply_topic(&self, topic: &str) -> bool {
        topic
            .strip_prefix(self.root.as_str())
            .and_then(|t| t.strip_prefix("/reply/"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['+', '#']))
    }

    /// The command name of a topic in this device's `cmd/` branch.
    pub fn command_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/cmd/")
            .filter(|n| !n.is_empty() && !n.contains('/'))
    }

    /// Every device's state, for the fleet side.
    pub fn all_states(prefix: &str) -> String {
        format!("{prefix}/{}/+/state", crate::API_VERSION)
    }

    /// The device id of a state topic.
    pub fn device_of_state<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
        topic
            .strip_prefix(prefix)?
            .strip_prefix(&format!("/{}/", crate::API_VERSION))?
            .strip_suffix("/state")
            .filter(|d| !d.contains('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_per_device_and_commands_are_recognised() {
        let t = Topics::new("veil", "gate-7");
        assert_eq!(t.state(), "veil/v1/gate-7/state");
        assert_eq!(t.commands_filter(), "veil/v1/gate-7/cmd/+");
        assert_eq!(
            t.command_name("veil/v1/gate-7/cmd/snapshot"),
            Some("snapshot")
        );
        assert_eq!(t.command_name("veil/v1/gate-8/cmd/snapshot"), None);
        assert_eq!(t.command_name("veil/v1/gate-7/cmd/"), None);
        assert_eq!(t.command_name("veil/v1/gate-7/cmd/a/b"), None);
        assert!(t.is_reply_topic("veil/v1/gate-7/reply/console-1/r-9"));
        assert!(!t.is_reply_topic("veil/v1/gate-7/reply/"));
        assert!(!t.is_reply_topic("fleet/replies/1"));
        assert!(!t.is_reply_topic("veil/v1/gate-7/reply/#"));
        assert_eq!(Topics::all_states("veil"), "veil/v1/+/state");
        assert_eq!(
            Topics::device_of_state("veil", "veil/v1/gate-7/state"),
            Some("gate-7")
        );
        assert_eq!(
            Topics::device_of_state("veil", "veil/v1/gate-7/registry"),
            None
        );
    }
}
