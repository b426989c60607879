//! Crash safety: a child process keeps projects (creates them with a sequence, comments,
//! deletes every third) and is killed with SIGKILL at random moments, over and over, on the
//! same database and footage store. After each kill the database must open and pass SQLite's
//! integrity check, every change the child saw return must be there (and no deleted project
//! back), and mending the holds must leave exactly one hold per sequence.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use veil_incident::Incidents;

const T0: i64 = 1_796_000_000_000;

fn open(dir: &std::path::Path) -> (Incidents, std::sync::Arc<veil_store::Store>) {
    let (store, _) = veil_store::Store::open(&dir.join("footage"), "gate-7").unwrap();
    let incidents = Incidents::open(&dir.join("incidents.sqlite3"), store.clone()).unwrap();
    (incidents, store)
}

/// Not a test on its own: the child the test below kills.
#[test]
fn child_keeper() {
    let Ok(dir) = std::env::var("VEIL_INCIDENT_CHILD") else {
        return;
    };
    let (incidents, _) = open(dir.as_ref());
    for i in 0i64.. {
        let form = serde_json::from_value(json!({
            "name": format!("crash {i}"),
            "sequences": [{"camera": "dock", "from": "2026-12-01T08:00:00Z", "to": "2026-12-01T08:01:00Z"}]
        }))
        .unwrap();
        let id = incidents.create(form, "olga", T0 + i).unwrap().summary.id;
        println!("created {id}");
        incidents
            .add_comment(id, "still here", "olga", T0 + i)
            .unwrap();
        println!("commented {id}");
        if i % 3 == 2 {
            // Killed after this line, the deletion may or may not have committed.
            println!("deleting {id}");
            incidents.delete(id, "olga", T0 + i).unwrap();
            println!("deleted {id}");
        }
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_committed_change() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut random = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let (mut created, mut commented, mut deleting, mut deleted) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..25 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_keeper",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("VEIL_INCIDENT_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a random moment after the child has made its first project, however slow
        // a loaded machine makes its start.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        std::thread::sleep(Duration::from_millis(random(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in
            std::iter::once(first.trim_end().to_string()).chain(out.lines().map_while(Result::ok))
        {
            let Some((what, id)) = line.split_once(' ') else {
                continue;
            };
            let Ok(id) = id.parse::<i64>() else { continue };
            match what {
                "created" => created.push(id),
                "commented" => commented.push(id),
                "deleting" => deleting.push(id),
                "deleted" => deleted.push(id),
                _ => {}
            }
        }
        let conn = rusqlite::Connection::open(dir.path().join("incidents.sqlite3")).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "run {run}");
        drop(conn);
        let (incidents, store) = open(dir.path());
        for id in &created {
            let found = incidents.get(*id);
            if deleted.contains(id) {
                assert!(found.is_err(), "run {run}: deleted project {id} is back");
            } else if deleting.contains(id) {
                // Either outcome is whole: gone, or there with its sequence.
                if let Ok(p) = found {
                    assert_eq!(p.sequences.len(), 1, "run {run}: project {id}");
                }
            } else {
                let p = found.unwrap_or_else(|e| panic!("run {run}: project {id} lost: {e}"));
                assert_eq!(p.sequences.len(), 1, "run {run}: project {id}");
                if commented.contains(id) {
                    assert_eq!(p.comments.len(), 1, "run {run}: comment of {id} lost");
                }
            }
        }
        incidents.sync_holds().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("incidents.sqlite3")).unwrap();
        let mut ids: Vec<String> = conn
            .prepare("SELECT project_id, id FROM sequences")
            .unwrap()
            .query_map([], |r| {
                Ok(format!(
                    "incident-{}-{}",
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        ids.sort();
        let mut holds: Vec<String> = store.holds().unwrap().into_iter().map(|h| h.id).collect();
        holds.sort();
        assert!(
            holds == ids,
            "run {run}: {} holds for {} sequences",
            holds.len(),
            ids.len()
        );
    }
    assert!(
        created.len() > 25,
        "the child made too few projects to prove anything: {created:?}"
    );
}
