//! Incident projects against the real footage store and SQLite: holds follow sequences,
//! retention deletes, used properties stay, lists filter, reports read back with poppler.

use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};
use veil_core::ErrorKind;
use veil_incident::model::{ProjectForm, Properties};
use veil_incident::report::{self, Clockface};
use veil_incident::store::{CallForm, Incidents, ListQuery};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_796_000_000_000;

struct Site {
    _dir: tempfile::TempDir,
    store: Arc<veil_store::Store>,
    incidents: Incidents,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = veil_store::Store::open(&dir.path().join("footage"), "gate-7").unwrap();
    let incidents =
        Incidents::open(&dir.path().join("state/incidents.sqlite3"), store.clone()).unwrap();
    Site {
        _dir: dir,
        store,
        incidents,
    }
}

/// The issue's scenario: types, two categories with values, an integer, two checkboxes and a
/// decimal field.
fn define(i: &Incidents) -> Properties {
    let current = i.properties().unwrap();
    let form: Properties = serde_json::from_value(json!({
        "version": current.version,
        "types": [
            {"name": "Workplace injury - employee", "description": "Staff hurt at work"},
            {"name": "Workplace injury - contractor (security)"},
            {"name": "Workplace injury - visitor"}
        ],
        "statuses": current.statuses,
        "categories": [
            {"name": "Reason", "description": "What happened", "values": [
                {"name": "Trapped between objects"}, {"name": "Fallen from height"},
                {"name": "Struck by falling object"}, {"name": "Tripped or fallen"}, {"name": "Other"}]},
            {"name": "Location", "values": [
                {"name": "Laboratory"}, {"name": "Storage room"}, {"name": "Parking lot"}]}
        ],
        "fields": [
            {"kind": "integer", "name": "People involved"},
            {"kind": "checkbox", "name": "First aid given"},
            {"kind": "checkbox", "name": "Police called"},
            {"kind": "decimal", "name": "Damage (EUR)"}
        ],
        "retention_days": 7,
        "report_title": "Northgate site"
    }))
    .unwrap();
    i.save_properties(form).unwrap().1
}

fn form(v: Value) -> ProjectForm {
    serde_json::from_value(v).unwrap()
}

fn held(store: &veil_store::Store) -> Vec<String> {
    let mut ids: Vec<String> = store.holds().unwrap().into_iter().map(|h| h.id).collect();
    ids.sort();
    ids
}

#[test]
fn sequences_hold_footage_until_removed_deleted_or_expired() {
    let s = site();
    let p = define(&s.incidents);
    let project = s
        .incidents
        .create(
            form(json!({
                "name": "Fall at the loading bay",
                "type_id": p.types[0].id,
                "sequences": [
                    {"camera": "dock", "from": "2026-12-01T08:00:00Z", "to": "2026-12-01T08:05:00Z"},
                    {"camera": "yard", "from": "2026-12-01T08:02:00Z", "to": "2026-12-01T08:09:00Z"}
                ]
            })),
            "olga",
            T0,
        )
        .unwrap();
    assert_eq!(project.sequences.len(), 2);
    assert_eq!(held(&s.store).len(), 2, "each sequence holds its footage");
    let seq = project.sequences[0].id;
    s.incidents
        .remove_sequence(project.summary.id, seq, "olga", T0 + 1)
        .unwrap();
    assert_eq!(
        held(&s.store).len(),
        1,
        "a removed sequence releases its hold"
    );

    // A second project, made later, outlives the first.
    let later = s
        .incidents
        .create(
            form(json!({"sequences": [{"camera": "dock", "from": "2026-12-02T08:00:00Z", "to": "2026-12-02T08:01:00Z"}]})),
            "olga",
            T0 + 3 * DAY,
        )
        .unwrap();
    s.incidents
        .add_comment(
            project.summary.id,
            "Ambulance arrived 08:20.",
            "olga",
            T0 + 2,
        )
        .unwrap();
    assert!(s.incidents.expire(T0 + 7 * DAY - 1).unwrap().is_empty());
    let expired = s.incidents.expire(T0 + 7 * DAY).unwrap();
    assert_eq!(expired, vec![project.summary.id]);
    let e = s.incidents.get(project.summary.id).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(
        held(&s.store),
        vec![format!(
            "incident-{}-{}",
            later.summary.id, later.sequences[0].id
        )],
        "the expired project's holds are released, the other's stay"
    );

    // A shorter retention applies to projects made before it.
    let mut shorter = s.incidents.properties().unwrap();
    shorter.retention_days = 1;
    s.incidents.save_properties(shorter).unwrap();
    assert_eq!(
        s.incidents.expire(T0 + 4 * DAY).unwrap(),
        vec![later.summary.id]
    );
    assert!(held(&s.store).is_empty());
}

#[test]
fn holds_are_mended_after_a_crash_between_database_and_store() {
    let s = site();
    let project = s
        .incidents
        .create(
            form(json!({"sequences": [{"camera": "dock", "from": "2026-12-01T08:00:00Z", "to": "2026-12-01T09:00:00Z"}]})),
            "olga",
            T0,
        )
        .unwrap();
    let hold = format!(
        "incident-{}-{}",
        project.summary.id, project.sequences[0].id
    );
    // As if the process died after the row committed and before the hold was placed, and
    // after a project's rows went and before its holds were released.
    s.store.release(&hold).unwrap();
    s.store
        .hold(&veil_store::retention::Hold {
            id: "incident-999-1".into(),
            camera: "dock".into(),
            from_ms: 0,
            to_ms: 1,
            reason: "incident project".into(),
        })
        .unwrap();
    s.store
        .hold(&veil_store::retention::Hold {
            id: "request-r1-dock".into(),
            camera: "dock".into(),
            from_ms: 0,
            to_ms: 1,
            reason: "video request".into(),
        })
        .unwrap();
    assert_eq!(s.incidents.sync_holds().unwrap(), (1, 1));
    assert_eq!(held(&s.store), vec![hold, "request-r1-dock".to_string()]);
    assert_eq!(s.incidents.sync_holds().unwrap(), (0, 0));
}

#[test]
fn used_properties_cannot_be_deleted_and_renames_show_everywhere() {
    let s = site();
    let p = define(&s.incidents);
    let reason = &p.categories[0];
    let id = s
        .incidents
        .create(
            form(json!({
                "type_id": p.types[2].id,
                "categories": {reason.id.clone(): reason.values[3].id.clone()},
                "fields": {p.fields[0].id.clone(): 2}
            })),
            "olga",
            T0,
        )
        .unwrap()
        .summary
        .id;
    let usage = s.incidents.usage().unwrap();
    assert_eq!(usage[&p.types[2].id], 1);
    assert_eq!(usage[&reason.values[3].id], 1);
    assert_eq!(usage[&p.fields[0].id], 1);

    for (what, edit) in [
        (
            "type",
            Box::new(|q: &mut Properties| {
                q.types.remove(2);
            }) as Box<dyn Fn(&mut Properties)>,
        ),
        (
            "value",
            Box::new(|q: &mut Properties| {
                q.categories[0].values.remove(3);
            }),
        ),
        (
            "category",
            Box::new(|q: &mut Properties| {
                q.categories.remove(0);
            }),
        ),
        (
            "data field",
            Box::new(|q: &mut Properties| {
                q.fields.remove(0);
            }),
        ),
        (
            "status",
            Box::new(|q: &mut Properties| {
                q.statuses.remove(0);
            }),
        ),
    ] {
        let mut q = s.incidents.properties().unwrap();
        edit(&mut q);
        let e = s.incidents.save_properties(q).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "{what}: {e}");
        assert!(
            e.to_string()
                .contains("is used by 1 project and cannot be deleted"),
            "{what}: {e}"
        );
    }
    // Unused ones go.
    let mut q = s.incidents.properties().unwrap();
    q.types.remove(0);
    q.categories[1].values.remove(0);
    let after = s.incidents.save_properties(q).unwrap().1;
    assert_eq!(after.types.len(), 2);

    let mut q = after.clone();
    q.types[1].name = "Visitor injury".into();
    s.incidents.save_properties(q).unwrap();
    let project = s.incidents.get(id).unwrap();
    assert_eq!(project.summary.type_name.as_deref(), Some("Visitor injury"));

    // Two admins: the second save, from the list both loaded, is refused.
    let loaded = s.incidents.properties().unwrap();
    s.incidents.save_properties(loaded.clone()).unwrap();
    let e = s.incidents.save_properties(loaded).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("refresh the list"));
}

#[test]
fn the_list_filters_sorts_and_pages() {
    let s = site();
    let p = define(&s.incidents);
    let location = &p.categories[1];
    for n in 0..30i64 {
        let id = s
            .incidents
            .create(
                form(json!({
                    "name": format!("Incident {n}"),
                    "type_id": p.types[(n % 3) as usize].id,
                    "start": veil_incident::model::rfc3339(T0 + n * 3_600_000),
                    "categories": {location.id.clone(): location.values[(n % 3) as usize].id.clone()}
                })),
                if n % 2 == 0 { "olga" } else { "piet" },
                T0 + n * 1000,
            )
            .unwrap()
            .summary
            .id;
        if n % 5 == 0 {
            s.incidents
                .add_comment(
                    id,
                    &format!("Forklift 100% involved, case {n}"),
                    "olga",
                    T0 + n * 1000 + 1,
                )
                .unwrap();
        }
        if n % 4 == 0 {
            s.incidents
                .update(
                    id,
                    form(json!({"status_id": p.statuses[1].id})),
                    "olga",
                    T0 + n * 1000 + 2,
                )
                .unwrap();
        }
    }
    let list = |q: Value| {
        s.incidents
            .list(&serde_json::from_value::<ListQuery>(q).unwrap())
            .unwrap()
    };
    let all = list(json!({}));
    assert_eq!(all.total, 30);
    assert_eq!(all.projects.len(), 30);
    assert_eq!(all.projects[0].name, "Incident 29", "newest first");
    assert_eq!(list(json!({"status": p.statuses[1].id})).total, 8);
    assert_eq!(list(json!({"type": p.types[0].id})).total, 10);
    assert_eq!(
        list(json!({"category_value": location.values[1].id})).total,
        10
    );
    assert_eq!(list(json!({"created_by": "piet"})).total, 15);
    let found = list(json!({"q": "forklift 100%"}));
    assert_eq!(found.total, 6, "case-insensitive, % taken literally");
    assert_eq!(list(json!({"q": "100_"})).total, 0, "_ taken literally");
    let window = list(json!({
        "from": veil_incident::model::rfc3339(T0 + 10 * 3_600_000),
        "to": veil_incident::model::rfc3339(T0 + 20 * 3_600_000),
    }));
    assert_eq!(window.total, 10);
    let page = list(json!({"sort": "start", "order": "asc", "limit": 7, "offset": 7}));
    assert_eq!(page.total, 30);
    let names: Vec<_> = page.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Incident 7",
            "Incident 8",
            "Incident 9",
            "Incident 10",
            "Incident 11",
            "Incident 12",
            "Incident 13"
        ]
    );
    let e = s
        .incidents
        .list(&serde_json::from_value::<ListQuery>(json!({"limit": 0})).unwrap())
        .unwrap_err();
    assert!(e.to_string().starts_with("limit:"));
}

#[test]
fn comments_keep_their_history_and_only_their_author_edits_them() {
    let s = site();
    let id = s
        .incidents
        .create(form(json!({})), "olga", T0)
        .unwrap()
        .summary
        .id;
    let c = s
        .incidents
        .add_comment(id, "First aid at 08:10", "olga", T0 + 1)
        .unwrap();
    let e = s
        .incidents
        .edit_comment(id, c.id, "nothing happened", "piet", T0 + 2)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PermissionDenied);
    let edited = s
        .incidents
        .edit_comment(id, c.id, "First aid at 08:12", "olga", T0 + 3)
        .unwrap();
    assert_eq!(edited.text, "First aid at 08:12");
    assert_eq!(edited.history.len(), 1);
    assert_eq!(edited.history[0].text, "First aid at 08:10");
    let project = s.incidents.get(id).unwrap();
    let actions: Vec<_> = project.activity.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["created", "comment_added", "comment_edited"]);
    assert!(s.incidents.add_comment(id, "   ", "olga", T0).is_err());
    assert!(
        s.incidents
            .add_comment(id, "bell\u{7}", "olga", T0)
            .is_err()
    );
}

#[test]
fn the_activity_log_cannot_be_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = veil_store::Store::open(&dir.path().join("footage"), "gate-7").unwrap();
    let path = dir.path().join("incidents.sqlite3");
    let i = Incidents::open(&path, store).unwrap();
    i.create(form(json!({})), "olga", T0).unwrap();
    drop(i);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let e = conn
        .execute("UPDATE activity SET by = 'mallory'", [])
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
}

/// A PDF made on the device, read back as text and as pictures by poppler.
#[test]
fn the_report_prints_every_field_and_names_what_it_could_not_read() {
    let s = site();
    let p = define(&s.incidents);
    let reason = &p.categories[0];
    let project = s
        .incidents
        .create(
            form(json!({
                "name": "Fall at the loading bay",
                "type_id": p.types[0].id,
                "status_id": p.statuses[1].id,
                "start": "2026-12-01T08:00:00Z",
                "end": "2026-12-01T08:30:00Z",
                "categories": {reason.id.clone(): reason.values[3].id.clone()},
                "fields": {p.fields[0].id.clone(): 2, p.fields[1].id.clone(): true, p.fields[3].id.clone(): 1250.5},
                "sequences": [{"camera": "dock", "from": "2026-12-01T08:00:00Z", "to": "2026-12-01T08:05:00Z"}]
            })),
            "olga",
            T0,
        )
        .unwrap();
    let id = project.summary.id;
    s.incidents
        .add_comment(
            id,
            "Worker slipped on oil near bay 3; ambulance called at 08:04.",
            "olga",
            T0 + 1,
        )
        .unwrap();
    s.incidents
        .add_call(
            id,
            CallForm {
                caller: "Olga Berg".into(),
                callee: "Emergency services".into(),
                at: "2026-12-01T08:04:00Z".into(),
                phone: "+49 112".into(),
                notes: "Ambulance sent".into(),
            },
            "olga",
            T0 + 2,
        )
        .unwrap();
    let tz = Clockface(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    let project = s.incidents.get(id).unwrap();
    // The summary is flattened into the project: its counts must not reuse the lists' keys.
    let text = serde_json::to_string(&project).unwrap();
    for key in ["comments", "calls", "sequences", "activity"] {
        assert_eq!(
            text.matches(&format!("\"{key}\":")).count(),
            1,
            "{key} twice in {text}"
        );
    }
    let r = report::build(&p, &project, &tz, "Made by olga on gate-7");
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("report.pdf");
    std::fs::write(&pdf, report::pdf(&r)).unwrap();
    let text = pdftotext(&pdf);
    for want in [
        "Northgate site",
        "Incident report",
        "Fall at the loading bay",
        "Workplace injury - employee",
        "In progress",
        "Reason",
        "Tripped or fallen",
        "People involved",
        "Damage (EUR)",
        "1250.5",
        "First aid given",
        "Worker slipped on oil near bay 3",
        "Olga Berg called Emergency services",
        "dock",
        "2026-12-01 09:00:00 CET",
        "Activity log",
        "page 1 of 1",
    ] {
        assert!(
            text.contains(want),
            "'{want}' missing from the PDF's text:\n{text}"
        );
    }
    // Rendered as a picture, the page is not blank.
    let png = dir.path().join("page");
    let status = Command::new("pdftoppm")
        .args(["-png", "-r", "50", "-singlefile"])
        .arg(&pdf)
        .arg(&png)
        .status()
        .expect("pdftoppm (poppler-utils) runs");
    assert!(status.success());
    let picture = std::fs::read(dir.path().join("page.png")).unwrap();
    if let Some(keep) = std::env::var_os("VEIL_KEEP_REPORT") {
        std::fs::copy(&pdf, keep).unwrap();
    }
    assert!(
        picture.len() > 2000,
        "a page with text compresses to more than a blank one"
    );

    // One part unreadable: the report says so and shows the rest.
    drop(s.incidents);
    let conn = rusqlite::Connection::open(s._dir.path().join("state/incidents.sqlite3")).unwrap();
    conn.execute("UPDATE comments SET history = 'not json'", [])
        .unwrap();
    drop(conn);
    let i = Incidents::open(
        &s._dir.path().join("state/incidents.sqlite3"),
        s.store.clone(),
    )
    .unwrap();
    let project = i.get(id).unwrap();
    assert!(project.comments.is_empty());
    assert_eq!(project.unreadable.len(), 1, "{:?}", project.unreadable);
    let r = report::build(&p, &project, &tz, "Made by olga on gate-7");
    let html = report::html(&r);
    assert!(
        html.contains("This part could not be read (comments:"),
        "{html}"
    );
    std::fs::write(&pdf, report::pdf(&r)).unwrap();
    let text = pdftotext(&pdf);
    assert!(text.contains("This part could not be read"));
    assert!(
        text.contains("Olga Berg called Emergency services"),
        "the rest is there"
    );
}

fn pdftotext(pdf: &std::path::Path) -> String {
    let out = Command::new("pdftotext")
        .args(["-layout"])
        .arg(pdf)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
