//! Holds: footage kept whatever retention says (video requests, incidents, legal holds).

use rusqlite::params;
use veil_core::Error;

use crate::retention::Hold;

use crate::index::*;

impl Store {
    /// Places (or replaces) a hold: footage it covers is never evicted.
    pub fn hold(&self, hold: &Hold) -> Result<(), Error> {
        if hold.from_ms >= hold.to_ms {
            return Err(Error::invalid_input(format!(
                "hold {}: empty or reversed time range",
                hold.id
            )));
        }
        self.db()
            .execute(
                "INSERT OR REPLACE INTO holds (id, camera, from_ms, to_ms, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hold.id, hold.camera, hold.from_ms, hold.to_ms, hold.reason],
            )
            .map_err(db_err("place hold"))?;
        Ok(())
    }

    pub fn release(&self, hold_id: &str) -> Result<bool, Error> {
        Ok(self
            .db()
            .execute("DELETE FROM holds WHERE id = ?1", [hold_id])
            .map_err(db_err("release hold"))?
            > 0)
    }

    pub fn holds(&self) -> Result<Vec<Hold>, Error> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT id, camera, from_ms, to_ms, reason FROM holds ORDER BY id")
            .map_err(db_err("list holds"))?;
        st.query_map([], |r| {
            Ok(Hold {
                id: r.get(0)?,
                camera: r.get(1)?,
                from_ms: r.get(2)?,
                to_ms: r.get(3)?,
                reason: r.get(4)?,
            })
        })
        .map_err(db_err("list holds"))?
        .collect::<Result<_, _>>()
        .map_err(db_err("list holds"))
    }
}
