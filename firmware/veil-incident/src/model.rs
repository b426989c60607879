//! The rules of incident properties and projects, without storage or clock: each check takes
//! what it needs (the properties in effect, how often each property is used, the time) and
//! answers with the change to make or an error naming the field.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use veil_core::{Error, ErrorKind};

/// At most this many categories.
pub const MAX_CATEGORIES: usize = 5;
/// At most this many data fields of each kind.
pub const MAX_FIELDS_PER_KIND: usize = 3;
/// Retention of incident projects, in days.
pub const RETENTION_DAYS_MIN: u32 = 1;
pub const RETENTION_DAYS_MAX: u32 = 365_000;
pub const RETENTION_DAYS_DEFAULT: u32 = 7;
/// Longest name of a property, a project or a report title.
pub const MAX_NAME_CHARS: usize = 120;
/// Longest description, comment, call note or text field.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest sequence: a day of one camera.
pub const MAX_SEQUENCE_MS: i64 = 86_400_000;
/// The report's subtitle.
pub const REPORT_SUBTITLE: &str = "Incident report";

/// A named choice: a type, a status or a category value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Stable id; leave out (or empty) for a new item and the device assigns one.
    #[serde(default)]
    pub id: String,
    /// What operators see as the label.
    pub name: String,
    /// What operators see as the tooltip.
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Category {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The values an operator picks one of.
    #[serde(default)]
    pub values: Vec<Item>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    Integer,
    Decimal,
    Text,
    Checkbox,
    DateTime,
}

impl FieldKind {
    pub const ALL: [FieldKind; 5] = [
        FieldKind::Integer,
        FieldKind::Decimal,
        FieldKind::Text,
        FieldKind::Checkbox,
        FieldKind::DateTime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FieldKind::Integer => "integer",
            FieldKind::Decimal => "decimal",
            FieldKind::Text => "text",
            FieldKind::Checkbox => "checkbox",
            FieldKind::DateTime => "date_time",
        }
    }
}

/// A typed incident data field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    #[serde(default)]
    pub id: String,
    pub kind: FieldKind,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Only enabled fields are shown and may be filled in.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// What admins define: the vocabulary of every project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// Counts saves; send back the one you loaded, a save on top of another is refused.
    pub version: u64,
    pub types: Vec<Item>,
    /// The first is what a new project starts with.
    pub statuses: Vec<Item>,
    /// At most 5.
    pub categories: Vec<Category>,
    /// At most 3 of each kind.
    pub fields: Vec<Field>,
    /// Projects are deleted this many days after they were created (1–365 000).
    pub retention_days: u32,
    /// The report's title.
    pub report_title: String,
}

impl Properties {
    /// What a new device starts with: the four usual statuses and nothing else.
    pub fn initial() -> (Properties, u64) {
        let statuses = ["New", "In progress", "On hold", "Closed"]
            .iter()
            .enumerate()
            .map(|(i, name)| Item {
                id: format!("s{}", i + 1),
                name: (*name).into(),
                description: String::new(),
            })
            .collect();
        let props = Properties {
            version: 1,
            types: vec![],
            statuses,
            categories: vec![],
            fields: vec![],
            retention_days: RETENTION_DAYS_DEFAULT,
            report_title: "Incident report".into(),
        };
        (props, 5)
    }

    pub fn type_(&self, id: &str) -> Option<&Item> {
        self.types.iter().find(|t| t.id == id)
    }

    pub fn status(&self, id: &str) -> Option<&Item> {
        self.statuses.iter().find(|t| t.id == id)
    }

    pub fn category(&self, id: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.id == id)
    }

    pub fn field(&self, id: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.id == id)
    }

    /// The category a value belongs to, and the value.
    pub fn category_value(&self, value_id: &str) -> Option<(&Category, &Item)> {
        self.categories.iter().find_map(|c| {
            c.values
                .iter()
                .find(|v| v.id == value_id)
                .map(|value| (c, value))
        })
    }

    /// Every id in use by a property, with what it is ("type 'Fall'"), for messages.
    fn described_ids(&self) -> HashMap<&str, String> {
        let mut ids = HashMap::new();
        for t in &self.types {
            ids.insert(t.id.as_str(), format!("type '{}'", t.name));
        }
        for s in &self.statuses {
            ids.insert(s.id.as_str(), format!("status '{}'", s.name));
        }
        for c in &self.categories {
            ids.insert(c.id.as_str(), format!("category '{}'", c.name));
            for v in &c.values {
                ids.insert(
                    v.id.as_str(),
                    format!("value '{}' of category '{}'", v.name, c.name),
                );
            }
        }
        for f in &self.fields {
            ids.insert(f.id.as_str(), format!("data field '{}'", f.name));
        }
        ids
    }
}

/// How many projects use each property id (types, statuses, categories, their values and
/// data fields).
pub type Usage = HashMap<String, u64>;

fn invalid(field: impl std::fmt::Display, message: impl std::fmt::Display) -> Error {
    Error::invalid_input(format!("{field}: {message}"))
}

fn check_name(field: &str, name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(
            field,
            format!("is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "must be one line without control characters",
        ));
    }
    Ok(name.to_string())
}

/// A free text (description, comment, note): at most [`MAX_TEXT_CHARS`], no control
/// characters but line breaks and tabs.
pub fn check_text(field: &str, text: &str, required: bool) -> Result<String, Error> {
    let text = text.trim();
    if required && text.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            format!("is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(invalid(field, "holds control characters"));
    }
    Ok(text.replace("\r\n", "\n"))
}

/// Checks an admin's save of the properties against those in effect. Items without an id
/// get one from `next_id`. Returns the properties to store (version + 1).
pub fn edit_properties(
    current: &Properties,
    form: Properties,
    usage: &Usage,
    next_id: &mut u64,
) -> Result<Properties, Error> {
    if form.version != current.version {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the incident properties were changed by someone else since you loaded them \
                 (version {} is now {}): refresh the list and make your change again",
                form.version, current.version
            ),
        ));
    }
    let mut mint = |prefix: char| {
        let id = format!("{prefix}{next_id}");
        *next_id += 1;
        id
    };
    let mut seen = HashSet::new();
    let mut item = |field: String, it: Item, prefix: char, seen: &mut HashSet<String>| {
        let id = if it.id.is_empty() {
            mint(prefix)
        } else {
            it.id.clone()
        };
        if !seen.insert(id.clone()) {
            return Err(invalid(
                format!("{field}.id"),
                format!("'{id}' is used twice"),
            ));
        }
        Ok(Item {
            id,
            name: check_name(&format!("{field}.name"), &it.name)?,
            description: check_text(&format!("{field}.description"), &it.description, false)?,
        })
    };
    let types = form
        .types
        .into_iter()
        .enumerate()
        .map(|(i, t)| item(format!("types[{i}]"), t, 't', &mut seen))
        .collect::<Result<Vec<_>, _>>()?;
    if form.statuses.is_empty() {
        return Err(invalid(
            "statuses",
            "at least one status is needed (new projects start with the first)",
        ));
    }
    let statuses = form
        .statuses
        .into_iter()
        .enumerate()
        .map(|(i, s)| item(format!("statuses[{i}]"), s, 's', &mut seen))
        .collect::<Result<Vec<_>, _>>()?;
    if form.categories.len() > MAX_CATEGORIES {
        return Err(invalid(
            "categories",
            format!(
                "at most {MAX_CATEGORIES} categories; this has {}",
                form.categories.len()
            ),
        ));
    }
    let mut categories = Vec::new();
    for (i, c) in form.categories.into_iter().enumerate() {
        let head = item(
            format!("categories[{i}]"),
            Item {
                id: c.id,
                name: c.name,
                description: c.description,
            },
            'c',
            &mut seen,
        )?;
        let values = c
            .values
            .into_iter()
            .enumerate()
            .map(|(j, v)| item(format!("categories[{i}].values[{j}]"), v, 'v', &mut seen))
            .collect::<Result<Vec<_>, _>>()?;
        categories.push(Category {
            id: head.id,
            name: head.name,
            description: head.description,
            values,
        });
    }
    let mut fields = Vec::new();
    let mut per_kind: HashMap<FieldKind, usize> = HashMap::new();
    for (i, f) in form.fields.into_iter().enumerate() {
        let n = per_kind.entry(f.kind).or_default();
        *n += 1;
        if *n > MAX_FIELDS_PER_KIND {
            return Err(invalid(
                format!("fields[{i}].kind"),
                format!(
                    "at most {MAX_FIELDS_PER_KIND} {} fields",
                    f.kind.name().replace('_', "-")
                ),
            ));
        }
        let head = item(
            format!("fields[{i}]"),
            Item {
                id: f.id,
                name: f.name,
                description: f.description,
            },
            'f',
            &mut seen,
        )?;
        if let Some(old) = current.field(&head.id)
            && old.kind != f.kind
            && usage.get(&head.id).copied().unwrap_or(0) > 0
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "fields[{i}].kind: data field '{}' holds values in {} project(s) and cannot \
                     change from {} to {}; add a new field instead",
                    old.name,
                    usage[&head.id],
                    old.kind.name(),
                    f.kind.name()
                ),
            ));
        }
        fields.push(Field {
            id: head.id,
            kind: f.kind,
            name: head.name,
            description: head.description,
            enabled: f.enabled,
        });
    }
    if !(RETENTION_DAYS_MIN..=RETENTION_DAYS_MAX).contains(&form.retention_days) {
        return Err(invalid(
            "retention_days",
            format!(
                "{} is outside {RETENTION_DAYS_MIN}–{RETENTION_DAYS_MAX} days",
                form.retention_days
            ),
        ));
    }
    let report_title = check_name("report_title", &form.report_title)?;
    let after = Properties {
        version: current.version + 1,
        types,
        statuses,
        categories,
        fields,
        retention_days: form.retention_days,
        report_title,
    };
    // Removing what projects use would leave them pointing at nothing: refuse, and say how
    // many projects hold it.
    let kept = after.described_ids();
    let mut removed_in_use: Vec<(String, u64)> = current
        .described_ids()
        .into_iter()
        .filter(|(id, _)| !kept.contains_key(id))
        .filter_map(|(id, what)| {
            let n = usage.get(id).copied().unwrap_or(0);
            (n > 0).then_some((what, n))
        })
        .collect();
    removed_in_use.sort();
    if let Some((what, n)) = removed_in_use.first() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{what} is used by {n} project{} and cannot be deleted; rename it, or change \
                 those projects first",
                if *n == 1 { "" } else { "s" }
            ),
        ));
    }
    // A category value must stay in its category: projects hold (category, value) pairs.
    for c in &after.categories {
        for v in &c.values {
            if let Some((old_c, _)) = current.category_value(&v.id)
                && old_c.id != c.id
                && usage.get(&v.id).copied().unwrap_or(0) > 0
            {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "value '{}' is used by projects in category '{}' and cannot move to \
                         category '{}'",
                        v.name, old_c.name, c.name
                    ),
                ));
            }
        }
    }
    Ok(after)
}

/// Milliseconds since the epoch as RFC 3339 in UTC.
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| ms.to_string())
}

/// Parses an RFC 3339 time (`2026-12-07T08:00:00Z`, an offset, or fractional seconds).
pub fn parse_time(field: &str, text: &str) -> Result<i64, Error> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            invalid(
                field,
                format!("'{text}' is not an RFC 3339 time such as 2026-12-07T08:00:00Z"),
            )
        })
}

/// Checks a value given for a data field, returning it as stored (date-times normalised to
/// UTC). `null` clears the field.
pub fn check_field_value(field_key: &str, field: &Field, value: &Value) -> Result<Value, Error> {
    if !field.enabled {
        return Err(invalid(
            field_key,
            format!("data field '{}' is disabled", field.name),
        ));
    }
    let wrong = |want: &str| {
        invalid(
            field_key,
            format!(
                "data field '{}' holds {want}, not {}",
                field.name,
                kind_of(value)
            ),
        )
    };
    Ok(match (field.kind, value) {
        (_, Value::Null) => Value::Null,
        (FieldKind::Integer, Value::Number(n)) if n.is_i64() => value.clone(),
        (FieldKind::Integer, _) => return Err(wrong("a whole number")),
        (FieldKind::Decimal, Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            value.clone()
        }
        (FieldKind::Decimal, _) => return Err(wrong("a number")),
        (FieldKind::Text, Value::String(s)) => Value::String(check_text(field_key, s, false)?),
        (FieldKind::Text, _) => return Err(wrong("text")),
        (FieldKind::Checkbox, Value::Bool(_)) => value.clone(),
        (FieldKind::Checkbox, _) => return Err(wrong("true or false")),
        (FieldKind::DateTime, Value::String(s)) => {
            Value::String(rfc3339(parse_time(field_key, s)?))
        }
        (FieldKind::DateTime, _) => return Err(wrong("an RFC 3339 date-time")),
    })
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("the text '{}'", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The editable part of a project as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProjectFields {
    pub name: String,
    pub type_id: Option<String>,
    pub status_id: String,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Category id → value id.
    pub categories: BTreeMap<String, String>,
    /// Data field id → value.
    pub fields: BTreeMap<String, Value>,
}

/// A change an operator asks for; absent keys stay as they are, `null` clears.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectForm {
    /// The version you loaded; a save on top of someone else's is refused.
    #[serde(default)]
    pub version: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    /// A type id, or `null` for none.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub type_id: Option<Option<String>>,
    #[serde(default)]
    pub status_id: Option<String>,
    /// RFC 3339, or `null`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub start: Option<Option<String>>,
    /// RFC 3339, or `null`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub end: Option<Option<String>>,
    /// Category id → value id (`null` clears that category).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub categories: Option<BTreeMap<String, Option<String>>>,
    /// Data field id → value of the field's kind (`null` clears it).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fields: Option<BTreeMap<String, Value>>,
    /// Only when a project is made: the sequences it starts with.
    #[serde(default)]
    pub sequences: Vec<SequenceForm>,
}

/// A sequence to add: a camera and a range.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SequenceForm {
    pub camera: String,
    /// RFC 3339.
    pub from: String,
    /// RFC 3339; at most 24 h after `from`.
    pub to: String,
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One line of a project's activity log: who did what, what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Activity {
    pub at: String,
    pub by: String,
    /// `created`, `changed`, `comment_added`, `comment_edited`, `call_added`,
    /// `sequence_added`, `sequence_removed`, `report`, `exported`.
    pub action: String,
    pub detail: String,
}

/// Applies a form to a project's fields under the properties in effect. Returns the fields
/// after and one line per change for the activity log (empty: nothing changed).
pub fn apply_form(
    props: &Properties,
    before: &ProjectFields,
    form: ProjectForm,
) -> Result<(ProjectFields, Vec<String>), Error> {
    let mut after = before.clone();
    let mut changes = Vec::new();
    if let Some(name) = form.name {
        let name = if name.trim().is_empty() {
            String::new()
        } else {
            check_name("name", &name)?
        };
        if name != before.name {
            changes.push(format!("name: '{}' → '{}'", before.name, name));
            after.name = name;
        }
    }
    if let Some(type_id) = form.type_id {
        if let Some(id) = &type_id
            && props.type_(id).is_none()
        {
            return Err(invalid(
                "type_id",
                format!("no incident type has id '{id}' (the list may have changed: refresh)"),
            ));
        }
        if type_id != before.type_id {
            let label = |id: &Option<String>| {
                id.as_deref()
                    .and_then(|id| props.type_(id))
                    .map_or("none".to_string(), |t| t.name.clone())
            };
            changes.push(format!(
                "type: {} → {}",
                label(&before.type_id),
                label(&type_id)
            ));
            after.type_id = type_id;
        }
    }
    if let Some(status_id) = form.status_id {
        let Some(status) = props.status(&status_id) else {
            return Err(invalid(
                "status_id",
                format!("no status has id '{status_id}' (the list may have changed: refresh)"),
            ));
        };
        if status_id != before.status_id {
            let old = props
                .status(&before.status_id)
                .map_or(before.status_id.as_str(), |s| s.name.as_str());
            changes.push(format!("status: {old} → {}", status.name));
            after.status_id = status_id;
        }
    }
    for (key, form_value, slot) in [
        ("start", form.start, &mut after.start_ms),
        ("end", form.end, &mut after.end_ms),
    ] {
        if let Some(value) = form_value {
            let ms = value.map(|t| parse_time(key, &t)).transpose()?;
            if ms != *slot {
                let show = |ms: Option<i64>| ms.map_or("none".to_string(), rfc3339);
                changes.push(format!("{key}: {} → {}", show(*slot), show(ms)));
                *slot = ms;
            }
        }
    }
    if let (Some(start), Some(end)) = (after.start_ms, after.end_ms)
        && end < start
    {
        return Err(invalid("end", "is before the start"));
    }
    if let Some(categories) = form.categories {
        for (category_id, value_id) in categories {
            let key = format!("categories.{category_id}");
            let Some(category) = props.category(&category_id) else {
                return Err(invalid(
                    &key,
                    format!(
                        "no category has id '{category_id}' (the list may have changed: refresh)"
                    ),
                ));
            };
            let label = |v: Option<&String>| {
                v.and_then(|id| category.values.iter().find(|x| &x.id == id))
                    .map_or("none".to_string(), |x| x.name.clone())
            };
            match value_id {
                None => {
                    if let Some(old) = after.categories.remove(&category_id) {
                        changes.push(format!("{}: {} → none", category.name, label(Some(&old))));
                    }
                }
                Some(value_id) => {
                    if !category.values.iter().any(|v| v.id == value_id) {
                        let elsewhere = props
                            .category_value(&value_id)
                            .map(|(c, v)| {
                                format!(" ('{}' belongs to category '{}')", v.name, c.name)
                            })
                            .unwrap_or_default();
                        return Err(invalid(
                            &key,
                            format!(
                                "'{value_id}' is not a value of category '{}'{elsewhere}",
                                category.name
                            ),
                        ));
                    }
                    let old = after
                        .categories
                        .insert(category_id.clone(), value_id.clone());
                    if old.as_ref() != Some(&value_id) {
                        changes.push(format!(
                            "{}: {} → {}",
                            category.name,
                            label(old.as_ref()),
                            label(Some(&value_id))
                        ));
                    }
                }
            }
        }
    }
    if let Some(fields) = form.fields {
        for (field_id, value) in fields {
            let key = format!("fields.{field_id}");
            let Some(field) = props.field(&field_id) else {
                return Err(invalid(
                    &key,
                    format!(
                        "no data field has id '{field_id}' (the list may have changed: refresh)"
                    ),
                ));
            };
            let value = check_field_value(&key, field, &value)?;
            let old = if value.is_null() {
                after.fields.remove(&field_id)
            } else {
                after.fields.insert(field_id.clone(), value.clone())
            };
            if old.as_ref().unwrap_or(&Value::Null) != &value {
                changes.push(format!(
                    "{}: {} → {}",
                    field.name,
                    show_value(old.as_ref().unwrap_or(&Value::Null)),
                    show_value(&value)
                ));
            }
        }
    }
    Ok((after, changes))
}

/// A data field's value as a person reads it.
pub fn show_value(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The property ids a project uses, for [`Usage`].
pub fn used_ids(p: &ProjectFields) -> Vec<String> {
    let mut ids = vec![p.status_id.clone()];
    ids.extend(p.type_id.clone());
    for (c, v) in &p.categories {
        ids.push(c.clone());
        ids.push(v.clone());
    }
    ids.extend(p.fields.keys().cloned());
    ids
}

/// When a project created at `created_at_ms` expires under `retention_days`.
pub fn expires_at_ms(created_at_ms: i64, retention_days: u32) -> i64 {
    created_at_ms.saturating_add(i64::from(retention_days) * 86_400_000)
}

/// Checks a sequence's camera and range.
pub fn check_sequence(camera: &str, from_ms: i64, to_ms: i64) -> Result<(), Error> {
    veil_core::CameraId::new(camera).map_err(|e| invalid("camera", e))?;
    if to_ms <= from_ms {
        return Err(invalid("to", "must be after `from`"));
    }
    if to_ms - from_ms > MAX_SEQUENCE_MS {
        return Err(invalid(
            "to",
            "a sequence is at most 24 hours long; mark it as several sequences",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn scenario() -> (Properties, u64) {
        let (current, mut next) = Properties::initial();
        let form: Properties = serde_json::from_value(json!({
            "version": 1,
            "types": [{"name": "Workplace injury - employee"}, {"name": "Workplace injury - visitor"}],
            "statuses": current.statuses,
            "categories": [
                {"name": "Reason", "values": [{"name": "Tripped or fallen"}, {"name": "Other"}]},
                {"name": "Location", "values": [{"name": "Laboratory"}, {"name": "Parking lot"}]}
            ],
            "fields": [
                {"kind": "integer", "name": "People involved"},
                {"kind": "checkbox", "name": "Police called"},
                {"kind": "decimal", "name": "Damage (EUR)"},
                {"kind": "date_time", "name": "Reported at", "enabled": false}
            ],
            "retention_days": 30,
            "report_title": "Site 7"
        }))
        .unwrap();
        let props = edit_properties(&current, form, &Usage::new(), &mut next).unwrap();
        (props, next)
    }

    #[test]
    fn new_items_get_stable_unique_ids_and_the_version_moves_on() {
        let (p, next) = scenario();
        assert_eq!(p.version, 2);
        let mut ids: Vec<&str> = p.types.iter().map(|t| t.id.as_str()).collect();
        ids.extend(p.categories.iter().flat_map(|c| {
            std::iter::once(c.id.as_str()).chain(c.values.iter().map(|v| v.id.as_str()))
        }));
        ids.extend(p.fields.iter().map(|f| f.id.as_str()));
        let unique: HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| !id.is_empty()));
        assert!(next > 5);
    }

    #[test]
    fn a_stale_save_is_refused_with_refresh_in_the_message() {
        let (p, mut next) = scenario();
        let mut stale = p.clone();
        stale.version = 1;
        let e = edit_properties(&p, stale, &Usage::new(), &mut next).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("refresh the list"), "{e}");
    }

    #[test]
    fn limits_name_the_field() {
        let (p, mut next) = scenario();
        let mut six = p.clone();
        six.categories = (0..6)
            .map(|i| Category {
                id: String::new(),
                name: format!("C{i}"),
                description: String::new(),
                values: vec![],
            })
            .collect();
        let e = edit_properties(&p, six, &Usage::new(), &mut next).unwrap_err();
        assert!(e.to_string().starts_with("categories: at most 5"), "{e}");
        let mut four = p.clone();
        for i in 0..3 {
            four.fields.push(Field {
                id: String::new(),
                kind: FieldKind::Integer,
                name: format!("I{i}"),
                description: String::new(),
                enabled: true,
            });
        }
        let e = edit_properties(&p, four, &Usage::new(), &mut next).unwrap_err();
        assert!(e.to_string().contains("at most 3 integer fields"), "{e}");
        let mut retention = p.clone();
        retention.retention_days = 0;
        let e = edit_properties(&p, retention.clone(), &Usage::new(), &mut next).unwrap_err();
        assert!(e.to_string().starts_with("retention_days:"), "{e}");
        retention.retention_days = 365_001;
        assert!(edit_properties(&p, retention, &Usage::new(), &mut next).is_err());
    }

    #[test]
    fn a_used_property_cannot_be_deleted_but_can_be_renamed() {
        let (p, mut next) = scenario();
        let used = p.types[0].id.clone();
        let usage = Usage::from([(used.clone(), 3)]);
        let mut without = p.clone();
        without.types.remove(0);
        let e = edit_properties(&p, without, &usage, &mut next).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(
            e.to_string()
                .contains("type 'Workplace injury - employee' is used by 3 projects"),
            "{e}"
        );
        let mut renamed = p.clone();
        renamed.types[0].name = "Injury (staff)".into();
        let after = edit_properties(&p, renamed, &usage, &mut next).unwrap();
        assert_eq!(after.types[0].id, used);
        assert_eq!(after.types[0].name, "Injury (staff)");
    }

    #[test]
    fn project_values_must_fit_their_property() {
        let (p, _) = scenario();
        let before = ProjectFields {
            status_id: p.statuses[0].id.clone(),
            ..Default::default()
        };
        let reason = &p.categories[0];
        let location = &p.categories[1];
        let int = p.fields[0].id.clone();
        let check = p.fields[1].id.clone();
        let disabled = p.fields[3].id.clone();
        let form = |v: Value| serde_json::from_value::<ProjectForm>(v).unwrap();
        let err = |v: Value| apply_form(&p, &before, form(v)).unwrap_err().to_string();
        assert!(err(json!({"type_id": "nope"})).starts_with("type_id: no incident type"));
        assert!(
            err(json!({"categories": {reason.id.clone(): location.values[0].id.clone()}}))
                .contains("belongs to category 'Location'")
        );
        assert!(err(json!({"fields": {int.clone(): "three"}})).contains("holds a whole number"));
        assert!(err(json!({"fields": {int.clone(): 2.5}})).contains("holds a whole number"));
        assert!(err(json!({"fields": {check.clone(): 1}})).contains("true or false"));
        assert!(err(json!({"fields": {disabled: "2026-01-01T00:00:00Z"}})).contains("disabled"));
        assert!(
            err(json!({"start": "2026-12-07T10:00:00Z", "end": "2026-12-07T09:00:00Z"}))
                .starts_with("end:")
        );
        let (after, changes) = apply_form(
            &p,
            &before,
            form(json!({
                "type_id": p.types[1].id,
                "status_id": p.statuses[1].id,
                "categories": {reason.id.clone(): reason.values[0].id.clone()},
                "fields": {int: 2, check: true}
            })),
        )
        .unwrap();
        assert_eq!(changes.len(), 5, "{changes:?}");
        assert!(changes.contains(&"status: New → In progress".to_string()));
        assert!(changes.contains(&"Police called: none → yes".to_string()));
        let (_, none) =
            apply_form(&p, &after, form(json!({"status_id": p.statuses[1].id}))).unwrap();
        assert!(none.is_empty());
    }
}
