//! Incident projects: the properties admins define (types, statuses, categories with values,
//! typed data fields, retention, report title) and the projects operators keep (values,
//! comments, calls, sequences of footage, an activity log), with their printable report.
//!
//! Owns: the rules ([`model`], pure: no I/O, no clock; time comes in as milliseconds), the
//! SQLite storage and the footage holds of sequences ([`store`]), the report as HTML and PDF
//! ([`report`]). Never: serves HTTP, reads video, or deletes footage (a released hold hands
//! footage back to the store's retention).

pub mod model;
pub mod report;
pub mod store;

pub use model::{ProjectForm, Properties};
pub use store::{Footage, Incidents, ListQuery, Project, ProjectPage, ProjectSummary};
