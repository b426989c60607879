//! The JSON Schemas of `docs/mqtt-api.md`, for tests: every ```json block that declares a
//! `$schema`, compiled by a JSON Schema 2020-12 validator (formats checked, `$ref`s between
//! the document's schemas resolved by their `$id`). Tests check what the device really
//! publishes against them, so the document cannot drift from the device.

use std::collections::BTreeMap;

use serde_json::Value;

pub struct MqttSchemas {
    by_title: BTreeMap<String, jsonschema::Validator>,
}

/// The document's schemas, in order: each has a `$schema` and a `title`.
fn documented() -> Vec<Value> {
    let text = include_str!("../../../docs/mqtt-api.md");
    text.split("```json")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter_map(|block| serde_json::from_str::<Value>(block).ok())
        .filter(|v| v.get("$schema").is_some())
        .collect()
}

impl MqttSchemas {
    /// Compiles every schema of the document; panics naming the one that is not valid 2020-12,
    /// a `$ref` that does not resolve, or a title used twice.
    pub fn load() -> MqttSchemas {
        let schemas = documented();
        let resources: Vec<(String, Value)> = schemas
            .iter()
            .filter_map(|s| Some((s.get("$id")?.as_str()?.to_string(), s.clone())))
            .collect();
        let mut registry = jsonschema::Registry::new();
        for (id, schema) in &resources {
            registry = registry
                .add(id, schema)
                .unwrap_or_else(|e| panic!("docs/mqtt-api.md: schema {id}: {e}"));
        }
        let registry = registry
            .prepare()
            .unwrap_or_else(|e| panic!("docs/mqtt-api.md: {e}"));
        let mut by_title = BTreeMap::new();
        for schema in &schemas {
            let title = schema["title"]
                .as_str()
                .unwrap_or_else(|| panic!("docs/mqtt-api.md: a schema without a title: {schema}"))
                .to_string();
            jsonschema::draft202012::meta::validate(schema).unwrap_or_else(|e| {
                panic!("docs/mqtt-api.md: '{title}' is no 2020-12 schema: {e}")
            });
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .with_registry(&registry)
                .build(schema)
                .unwrap_or_else(|e| panic!("docs/mqtt-api.md: '{title}': {e}"));
            assert!(
                by_title.insert(title.clone(), validator).is_none(),
                "docs/mqtt-api.md: two schemas are titled '{title}'"
            );
        }
        MqttSchemas { by_title }
    }

    /// Every way `message` breaks the schema titled `title`.
    pub fn check(&self, title: &str, message: &Value) -> Result<(), String> {
        let v = self
            .by_title
            .get(title)
            .unwrap_or_else(|| panic!("docs/mqtt-api.md has no schema titled '{title}'"));
        let errors: Vec<String> = v
            .iter_errors(message)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "does not match '{title}' of docs/mqtt-api.md: {}\n{message}",
                errors.join("; ")
            ))
        }
    }

    /// Panics with every error when `message` breaks the schema titled `title`.
    pub fn assert(&self, title: &str, message: &Value) {
        if let Err(e) = self.check(title, message) {
            panic!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::MqttSchemas;

    #[test]
    fn the_documented_schemas_compile_and_tell_good_from_bad() {
        let s = MqttSchemas::load();
        let usage = json!({
            "session_id": "s1", "consumer": "tc", "camera": "gate", "filter": "silhouette",
            "priority": "shared", "started_ms": 1, "ended_ms": 2, "seconds_viewed": 1,
            "bytes_sent": 10, "outcome": "ended", "reason": "stopped"
        });
        let event = json!({"type": "live.usage", "time": "2026-12-07T04:00:00Z", "record": usage});
        s.check("veil v1 event", &event).unwrap();
        // The usage record is reached through its $id: a broken one is caught there.
        let mut bad = event.clone();
        bad["record"]["bytes_sent"] = json!(-1);
        assert!(s.check("veil v1 event", &bad).is_err());
        let e = s
            .check(
                "veil v1 event",
                &json!({"type": "live.usage", "time": "yesterday"}),
            )
            .unwrap_err();
        assert!(e.contains("/time"), "{e}");
        assert!(
            s.check(
                "veil v1 event",
                &json!({"type": "made.up", "time": "2026-12-07T04:00:00Z"})
            )
            .is_err()
        );
    }
}
